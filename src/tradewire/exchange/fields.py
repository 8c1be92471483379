"""Strict readers for exchange JSON: every failure is a ``PermanentError`` naming the field.

Amounts arrive as strings and become ``Decimal``; a JSON float is refused (it would already have
lost precision). Optional amounts accept ``""`` and ``null`` as "absent", as the REST API sends
them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from tradewire.errors import PermanentError

JsonObject = Mapping[str, Any]

_MISSING = object()
_INT = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")


class NotPlain(Exception):
    """Raised by the ``plain_*`` readers: the value is not of the usual shape; read the object
    with ``Fields`` instead (which accepts the same values and names the field on an error)."""


_PLAIN_DECIMALS: dict[str, Decimal] = {}  # decimal strings already checked (Decimal: immutable)
_PLAIN_DECIMALS_MAX = 4096
_ZERO = Decimal(0)


def plain_decimal(value: object, absent_is_zero: bool = False) -> Decimal:
    """``Fields.decimal`` (``decimal_or_zero`` with ``absent_is_zero``) of a value already taken
    from the object, for the hot path: a recent string is a dict lookup, not a regex match and
    a conversion. Anything else raises ``NotPlain``."""
    if type(value) is str:
        found = _PLAIN_DECIMALS.get(value)
        if found is not None:
            return found
        if not _DECIMAL.fullmatch(value):
            if absent_is_zero and value == "":
                return _ZERO
            raise NotPlain
        if len(_PLAIN_DECIMALS) >= _PLAIN_DECIMALS_MAX:
            _PLAIN_DECIMALS.clear()
        found = _PLAIN_DECIMALS[value] = Decimal(value)
        return found
    if type(value) is int:
        return Decimal(value)
    if absent_is_zero and value is None:
        return _ZERO
    raise NotPlain


def plain_int(value: object, absent_is_zero: bool = False) -> int:
    """``Fields.integer`` (``opt_integer`` with ``absent_is_zero``) of a value, for the hot path;
    ``NotPlain`` for anything but an int (or, absent, None)."""
    if type(value) is int:
        return value
    if absent_is_zero and value is None:
        return 0
    raise NotPlain


def plain_flag(value: object) -> bool:
    """``Fields.opt_flag``: a bool, or False when absent; ``NotPlain`` otherwise."""
    if value is None:
        return False
    if type(value) is bool:
        return value
    raise NotPlain


def plain_text(value: object, default: str | None = None) -> str:
    """``Fields.text`` (``opt_text`` with a ``default``); ``NotPlain`` otherwise."""
    if type(value) is str:
        return value
    if value is None and default is not None:
        return default
    raise NotPlain


class Fields:
    """Typed access to one JSON object; ``where`` names it in errors (``ORDER_TRADE_UPDATE.o``)."""

    __slots__ = ("data", "where")

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise PermanentError(f"{where}: expected a JSON object, got {type(data).__name__}")
        self.data: JsonObject = data
        self.where = where

    def _get(self, key: str) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            raise PermanentError(f"{self.where}: missing key {key!r}")
        return value

    def _bad(self, key: str, expected: str, value: object) -> PermanentError:
        return PermanentError(f"{self.where}.{key}: expected {expected}, got {value!r}")

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string", value)
        return value

    def opt_text(self, key: str, default: str = "") -> str:
        return default if self.data.get(key) is None else self.text(key)

    def integer(self, key: str) -> int:
        return self._to_int(key, self._get(key))

    def opt_integer(self, key: str, default: int = 0) -> int:
        value = self.data.get(key)
        return default if value is None or value == "" else self._to_int(key, value)

    def _to_int(self, key: str, value: object) -> int:
        if isinstance(value, bool):
            raise self._bad(key, "an integer", value)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT.fullmatch(value):
            return int(value)
        raise self._bad(key, "an integer", value)

    def decimal(self, key: str) -> Decimal:
        return self._to_dec(key, self._get(key))

    def opt_decimal(self, key: str) -> Decimal | None:
        value = self.data.get(key)
        return None if value is None or value == "" else self._to_dec(key, value)

    def decimal_or_zero(self, key: str) -> Decimal:
        found = self.opt_decimal(key)
        return Decimal(0) if found is None else found

    def _to_dec(self, key: str, value: object) -> Decimal:
        if isinstance(value, bool):
            raise self._bad(key, "a decimal string", value)
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, str) and _DECIMAL.fullmatch(value):
            return Decimal(value)
        raise self._bad(key, "a decimal string", value)

    def flag(self, key: str) -> bool:
        value = self._get(key)
        return self._to_bool(key, value)

    def opt_flag(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        return default if value is None else self._to_bool(key, value)

    def _to_bool(self, key: str, value: object) -> bool:
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise self._bad(key, "a boolean", value)

    def obj(self, key: str) -> Fields:
        return Fields(self._get(key), f"{self.where}.{key}")

    def objects(self, key: str, *, required: bool = True) -> list[Fields]:
        value = self._get(key) if required else self.data.get(key, [])
        if value is None and not required:
            return []
        if not isinstance(value, list):
            raise self._bad(key, "a list", value)
        return [Fields(item, f"{self.where}.{key}[{n}]") for n, item in enumerate(value)]


def fields_of_list(data: object, where: str) -> list[Fields]:
    """A top-level JSON array of objects (REST list endpoints)."""
    if not isinstance(data, list):
        raise PermanentError(f"{where}: expected a JSON array, got {type(data).__name__}")
    return [Fields(item, f"{where}[{n}]") for n, item in enumerate(data)]
