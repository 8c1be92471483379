"""The signal accepted by ``POST /api/execute-trade``: parsing and the checks that need no exchange.

Prices are decimals from strings or numbers; ``entry`` is ``"market"`` or a limit price. There
are no defaults for side or stop-loss: a signal without them is rejected, never guessed.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tradewire.domain import Side, Signal
from tradewire.errors import InvalidInput

_SYMBOL = re.compile(r"^[A-Z0-9]{2,20}USDT$")
_SIDES = {"LONG": Side.LONG, "BUY": Side.LONG, "SHORT": Side.SHORT, "SELL": Side.SHORT}
MAX_PRICE_RATIO = Decimal(10)


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if not number.is_finite() or number <= 0:
        raise ValueError(f"{name} must be a positive number")
    return number


class SignalIn(BaseModel):
    """Body of ``POST /api/execute-trade``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    signal_id: Annotated[str, Field(min_length=1, max_length=128)]
    symbol: str
    side: str
    entry: str | float = "market"
    stop_loss: str | float
    take_profit: str | float
    leverage: Annotated[int, Field(ge=1, le=125)] = 10
    size_usdt: str | float
    users: list[int] | None = None

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        symbol = value.upper().replace("/", "").replace("-", "")
        if not _SYMBOL.match(symbol):
            raise ValueError("symbol must be a USD-M perpetual like BTCUSDT")
        return symbol

    @field_validator("side")
    @classmethod
    def _side(cls, value: str) -> str:
        if value.upper() not in _SIDES:
            raise ValueError("side must be LONG or SHORT (BUY/SELL accepted)")
        return _SIDES[value.upper()].value

    @field_validator("stop_loss", "take_profit", "size_usdt")
    @classmethod
    def _positive(cls, value: str | float, info: Any) -> str:
        return str(_decimal(value, info.field_name))

    @field_validator("entry")
    @classmethod
    def _entry(cls, value: str | float) -> str:
        if isinstance(value, str) and value.lower() == "market":
            return "market"
        return str(_decimal(value, "entry"))

    @field_validator("users")
    @classmethod
    def _users(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not value:
            raise ValueError("users, when given, must name at least one user")
        return value

    @model_validator(mode="after")
    def _prices_on_the_right_side(self) -> SignalIn:
        if self.entry != "market":
            try:
                check_prices(Side(self.side), Decimal(self.entry), Decimal(self.stop_loss),
                             Decimal(self.take_profit), reference="entry")
            except InvalidInput as exc:
                raise ValueError(str(exc)) from exc
        return self

    def to_signal(self) -> Signal:
        return Signal(
            signal_id=self.signal_id,
            symbol=self.symbol,
            side=Side(self.side),
            stop_loss=Decimal(self.stop_loss),
            take_profit=Decimal(self.take_profit),
            leverage=self.leverage,
            size_usdt=Decimal(self.size_usdt),
            entry_price=None if self.entry == "market" else Decimal(self.entry),
            user_ids=tuple(self.users) if self.users else None,
        )


def check_prices(
    side: Side, price: Decimal, stop_loss: Decimal, take_profit: Decimal, *, reference: str
) -> None:
    """Stop below and target above the price for a LONG (mirrored for a SHORT), and no two
    prices more than 10x apart. Raises ``InvalidInput`` naming the offending field."""
    low, high = (stop_loss, take_profit) if side is Side.LONG else (take_profit, stop_loss)
    if not low < price < high:
        field = "stop_loss" if (stop_loss >= price) == (side is Side.LONG) else "take_profit"
        raise InvalidInput(
            f"{field} is on the wrong side of the {reference} price {price} for a {side.value}",
            field=field,
        )
    if max(low, price, high) > MAX_PRICE_RATIO * min(low, price, high):
        raise InvalidInput("prices more than 10x apart: refusing an absurd signal", field="entry")
