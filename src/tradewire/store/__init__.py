"""Persistence: SQLAlchemy tables, repositories and Alembic migrations (SQLite or PostgreSQL).

* ``db``: ``create_engine_and_sessions(url)``, ``await upgrade(url)`` (migrate to head).
* ``tables``: the schema; ``types``: money/enum/id column types; ``crypto``: ``SecretBox``.
* Repositories, each a module of async functions taking an ``AsyncSession`` whose transaction
  the caller owns: ``users``, ``signals``, ``trades``, ``events``, ``outbox``.
"""
