"""Helpers shared by the repositories: dialect-specific inserts, JSON columns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from tradewire.errors import ConfigError


def dialect_name(session: AsyncSession) -> str:
    """``"sqlite"`` or ``"postgresql"``: the database behind the session."""
    return session.get_bind().dialect.name


_ORJSON_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
                   | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)


def to_json(payload: Mapping[str, Any] | str) -> str:
    """JSON text for a payload column (Decimals and other non-JSON values as strings), compact
    with sorted keys. orjson (a notification payload: 0.9 us instead of json's 8.7; the worker
    writes one per trade event); non-ASCII characters are stored as UTF-8, not ``\\u`` escapes.
    What orjson refuses (integers beyond 64 bits, ...) goes through ``json``."""
    if isinstance(payload, str):
        return payload
    try:
        return orjson.dumps(payload, default=str, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(payload, default=str, separators=(",", ":"), sort_keys=True)


def insert_ignoring_conflicts(
    session: AsyncSession, model: type[DeclarativeBase], **values: Any
) -> postgresql.Insert | sqlite.Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for ``model``: a duplicate key inserts nothing and,
    unlike a caught ``IntegrityError``, leaves the surrounding transaction usable. Add
    ``.returning(...)`` to learn whether the row was inserted."""
    name = dialect_name(session)
    if name == "postgresql":
        return postgresql.insert(model).values(**values).on_conflict_do_nothing()
    if name == "sqlite":
        return sqlite.insert(model).values(**values).on_conflict_do_nothing()
    raise ConfigError(f"unsupported database dialect {name!r} (use SQLite or PostgreSQL)")
