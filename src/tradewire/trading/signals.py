"""The signal accepted by ``POST /api/execute-trade``: parsing and the checks that need no exchange.

Prices are decimals from strings or numbers; ``entry`` is ``"market"`` or a limit price. There
are no defaults for side or stop-loss: a signal without them is rejected, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tradewire.domain import MAX_TARGETS, Side, Signal, Target
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


class TargetIn(BaseModel):
    """One target: ``{"price": "62000", "share": "0.5"}`` or just a price."""

    model_config = ConfigDict(extra="forbid")

    price: str | float
    share: str | float | None = None

    @field_validator("price")
    @classmethod
    def _price(cls, value: str | float) -> str:
        return str(_decimal(value, "take_profits.price"))

    @field_validator("share")
    @classmethod
    def _share(cls, value: str | float | None) -> str | None:
        if value is None:
            return None
        share = _decimal(value, "take_profits.share")
        if share > 1:
            raise ValueError("take_profits.share is a fraction of the position (0..1]")
        return str(share)

    @model_validator(mode="before")
    @classmethod
    def _bare_price(cls, value: Any) -> Any:
        return {"price": value} if isinstance(value, str | int | float) else value

    @property
    def price_decimal(self) -> Decimal:
        return Decimal(str(self.price))

    @property
    def share_decimal(self) -> Decimal | None:
        return None if self.share is None else Decimal(str(self.share))


class SignalIn(BaseModel):
    """Body of ``POST /api/execute-trade``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    signal_id: Annotated[str, Field(min_length=1, max_length=128)]
    symbol: str
    side: str
    entry: str | float = "market"
    stop_loss: str | float
    take_profit: str | float | None = None  # one target, or:
    take_profits: list[TargetIn] | None = None  # several, nearest first (shares optional)
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
    def _positive(cls, value: str | float | None, info: Any) -> str | None:
        return None if value is None else str(_decimal(value, info.field_name))

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
        targets = self.targets()  # raises ValueError naming take_profit(s)
        if self.entry != "market":
            try:
                check_prices(Side(self.side), Decimal(self.entry), Decimal(self.stop_loss),
                             targets, reference="entry")
            except InvalidInput as exc:
                raise ValueError(str(exc)) from exc
        return self

    def targets(self) -> tuple[Target, ...]:
        """The take-profit targets with their shares (even split where none is given)."""
        if (self.take_profit is None) == (self.take_profits is None):
            raise ValueError("give exactly one of take_profit or take_profits")
        if self.take_profit is not None:
            return (Target(Decimal(self.take_profit), Decimal(1)),)
        assert self.take_profits is not None
        return split_shares([(t.price_decimal, t.share_decimal) for t in self.take_profits])

    def to_signal(self) -> Signal:
        return Signal(
            signal_id=self.signal_id,
            symbol=self.symbol,
            side=Side(self.side),
            stop_loss=Decimal(self.stop_loss),
            targets=self.targets(),
            leverage=self.leverage,
            size_usdt=Decimal(self.size_usdt),
            entry_price=None if self.entry == "market" else Decimal(self.entry),
            user_ids=tuple(self.users) if self.users else None,
        )


def check_prices(
    side: Side, price: Decimal, stop_loss: Decimal, targets: Sequence[Target], *, reference: str
) -> None:
    """Stop below and targets above the price for a LONG (mirrored for a SHORT), and no two
    prices more than 10x apart. Raises ``InvalidInput`` naming the offending field."""
    up = 1 if side is Side.LONG else -1
    if (price - stop_loss) * up <= 0:
        raise InvalidInput(
            f"stop_loss is on the wrong side of the {reference} price {price} for a {side.value}",
            field="stop_loss",
        )
    for target in targets:
        if (target.price - price) * up <= 0:
            raise InvalidInput(
                f"take_profit {target.price} is on the wrong side of the {reference} price "
                f"{price} for a {side.value}",
                field="take_profit",
            )
    prices = [price, stop_loss, *(t.price for t in targets)]
    if max(prices) > MAX_PRICE_RATIO * min(prices):
        raise InvalidInput("prices more than 10x apart: refusing an absurd signal", field="entry")


def split_shares(targets: Sequence[tuple[Decimal, Decimal | None]]) -> tuple[Target, ...]:
    """Targets with shares summing to 1: given shares are kept, the rest split evenly among the
    targets without one. ``ValueError`` on more than ten targets or shares above 1."""
    if not targets:
        raise ValueError("take_profits must name at least one target")
    if len(targets) > MAX_TARGETS:
        raise ValueError(f"take_profits: at most {MAX_TARGETS} targets")
    given = sum((share for _, share in targets if share is not None), Decimal(0))
    missing = [i for i, (_, share) in enumerate(targets) if share is None]
    if given > 1 or (not missing and given != 1):
        raise ValueError("take_profits shares must add up to 1 (100%)")
    rest = (Decimal(1) - given) / len(missing) if missing else Decimal(0)
    return tuple(Target(price, rest if share is None else share) for price, share in targets)
