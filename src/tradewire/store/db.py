"""Engines, sessions and migrations. Nothing here connects until it is called.

``create_engine_and_sessions(url)`` makes the engine and a session factory for a composition
root; ``await upgrade(url)`` migrates the database to the newest revision (run it once at
start-up, before serving). Both accept ``sqlite+aiosqlite:///path`` and
``postgresql+asyncpg://...`` URLs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5_000
_MIGRATION_LOCK = 0x7477_6D69_6772  # "twmigr": advisory lock key of upgrades
# PostgreSQL session settings of our connections. random_page_cost 1.1 (SSD storage; the
# server's default 4 assumes spinning disks): with 4 the planner ran the worker's batch
# statements over 150 ids as hash joins over a sequential scan of orders/trades (10 ms for
# the trades-with-orders read, 9 ms for the order update on 23,000 rows), with 1.1 as index
# lookups (2.4 ms, 2-4 ms); measured with EXPLAIN ANALYZE, 2026-11-26.
PG_SERVER_SETTINGS = {"random_page_cost": "1.1"}


def create_engine_and_sessions(
    url: str, **engine_options: Any
) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """An engine for ``url`` and its session factory (sessions keep loaded attributes after
    commit). The caller disposes of the engine."""
    engine = _create_engine(url, **engine_options)
    return engine, async_sessionmaker(engine, expire_on_commit=False)


async def upgrade(url: str, revision: str = "head") -> None:
    """Run the Alembic migrations on ``url`` up to ``revision``. Safe when several processes
    start at once: a PostgreSQL advisory lock (SQLite: the write lock) serialises them."""
    engine = _create_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_upgrade, revision)
    finally:
        await engine.dispose()


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration pointing at the packaged migrations (no ``alembic.ini`` needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _run_upgrade(connection: Connection, revision: str) -> None:
    _lock_for_migration(connection)
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _lock_for_migration(connection: Connection) -> None:
    """Serialise concurrent upgrades (several pods starting at once): the second waits for the
    first to commit, then finds the schema at head. The lock ends with the transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock before reading


def _create_engine(url: str, **options: Any) -> AsyncEngine:
    if not is_sqlite(url):
        options.setdefault("pool_pre_ping", True)
        if make_url(url).get_driver_name() == "asyncpg":
            connect_args = options.setdefault("connect_args", {})
            connect_args["server_settings"] = {
                **PG_SERVER_SETTINGS, **connect_args.get("server_settings", {})}
        return create_async_engine(url, **options)
    _ensure_sqlite_folder(url)
    engine = create_async_engine(url, **options)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _ensure_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """The busy timeout makes writers wait instead of failing at once; SQLite leaves foreign
    keys off unless asked; WAL lets readers run beside the writer.

    WAL is a property of the file, so a connection that loses the race to switch a brand-new
    file (another connection's first transaction holds the lock; SQLite refuses to wait there
    to avoid a deadlock) can go on: the winner's commit makes the file WAL for everyone."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
    finally:
        cursor.close()
