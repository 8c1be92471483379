"""Structured logs: one JSON object per line with ``userId``, ``tradeId``, ``symbol``, ``error``.

Context is bound with ``bind(userId=..., symbol=...)`` (a context manager over contextvars),
so every log line inside a handler carries the keys without passing them around.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

_EMPTY: dict[str, Any] = {}
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("tw_log", default=_EMPTY)

KEY_FIELDS = ("userId", "tradeId", "symbol", "error")


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields to every log line written inside the block (None values are skipped)."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, Any]:
    return dict(_context.get())


_make_record = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Attach the bound fields when the record is made, not when it is formatted (handlers may
    format later, elsewhere)."""
    record = _make_record(*args, **kwargs)
    record.tw_context = _context.get()
    return record


logging.setLogRecordFactory(_record_with_context)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "tw_context", None) or {})
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info and record.exc_info[1] is not None:
            out.setdefault("error", f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
        return json.dumps(out, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = {**(getattr(record, "tw_context", None) or {}),
               **(getattr(record, "fields", None) or {})}
        tail = " ".join(f"{k}={v}" for k, v in ctx.items())
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            tail += f" error={type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return f"{line}  {tail}".rstrip()


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """Install the formatter on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore", "websockets", "aiosqlite", "asyncio",
                  "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log with extra structured fields (``log(logger, logging.INFO, "placed", orderId=1)``)."""
    logger.log(level, msg, extra={"fields": fields})
