"""Column types that behave the same on SQLite and PostgreSQL.

* ``Money``: ``NUMERIC(36, 18)`` on PostgreSQL; on SQLite a ``VARCHAR`` holding the exact decimal
  text, because SQLite's NUMERIC affinity would round to a 15-digit float. Values come back as
  ``Decimal`` without trailing zeros on both. Do not compare or add money in SQL on SQLite (text).
* ``EnumText``: a ``StrEnum`` stored as its value in a ``VARCHAR``, read back as the enum.
* ``ID``: ``BIGINT`` identity keys on PostgreSQL, ``INTEGER`` (the rowid alias) on SQLite.
* Timestamps are epoch milliseconds in ``BIGINT`` columns, like ``Clock.now_ms()`` and the
  exchange's event times.
"""

from __future__ import annotations

import time
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import BigInteger, Integer, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

MONEY_PRECISION = 36
MONEY_SCALE = 18
_MONEY_TEXT_LENGTH = 40  # sign + 18 integer digits + point + 18 decimals, with room

E = TypeVar("E", bound=StrEnum)

ID = BigInteger().with_variant(Integer(), "sqlite")


def wall_clock_ms() -> int:
    """Wall-clock epoch milliseconds (the default of every timestamp column)."""
    return time.time_ns() // 1_000_000


def now_ms(now: int | None = None) -> int:
    """``now`` when given (the caller's clock), else the wall clock."""
    return wall_clock_ms() if now is None else now


def tidy_decimal(value: Decimal) -> Decimal:
    """The same number without trailing zeros and without an exponent for integers."""
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return normal.quantize(Decimal(1))
    return normal


class Money(TypeDecorator[Decimal]):
    """Exact decimal amount (see the module docstring)."""

    impl = Numeric(MONEY_PRECISION, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(_MONEY_TEXT_LENGTH))
        return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        if not isinstance(value, Decimal):  # floats would carry binary rounding into the books
            raise TypeError(f"money must be a Decimal, not {type(value).__name__}")
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return tidy_decimal(Decimal(str(value)) if not isinstance(value, Decimal) else value)


class EnumText(TypeDecorator[E]):
    """A ``StrEnum`` stored as its value (``Leg.STOP_LOSS`` is stored as ``"SL"``)."""

    impl = String(20)
    cache_ok = True

    def __init__(self, enum_type: type[E]) -> None:
        super().__init__()
        self.enum_type = enum_type

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_type(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_type(value)
