"""The intake contract: what every source sends, and what the parser decides.

Sources only normalise into ``RawMessage`` and POST it to ``/api/intake/messages``;
``tradewire.intake.parser.parse`` turns its text into a ``ParsedSignal``; the intake service
applies the safety checks (dedupe, edits, staleness, prices against the mark, caps, rate limit)
and executes accepted NEW signals through the same ``Executor`` as ``/api/execute-trade``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Source(StrEnum):
    CDP = "cdp"
    DISCORD_BOT = "discord_bot"
    TRADINGVIEW = "tradingview"
    TELEGRAM = "telegram"
    API = "api"


class RawMessage(BaseModel):
    """One message as a source saw it (body of ``POST /api/intake/messages``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    source: Source
    channel: Annotated[str, Field(min_length=1, max_length=200)]
    message_id: Annotated[str, Field(min_length=1, max_length=200)]
    reply_to: str | None = None
    author: str | None = None
    sent_at_ms: Annotated[int, Field(gt=0)]  # when the author posted it (Discord snowflake time)
    text: Annotated[str, Field(max_length=20_000)]
    edit: Annotated[int, Field(ge=0)] = 0  # 0 = original, 1.. = edits seen so far
    deleted: bool = False


class Decision(StrEnum):
    EXECUTE = "execute"
    CONFIRM = "confirm"
    REJECT = "reject"


class Kind(StrEnum):
    NEW = "new"  # a new trade signal
    UPDATE = "update"  # move stop, close part/all, cancel: about an existing signal
    STATUS = "status"  # "target 2 hit", "closed at stoploss": never opens a trade
    UNKNOWN = "unknown"  # not a signal we can read


class EntryType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"  # one or more explicit prices
    ZONE = "zone"  # a range: the profile's zone rule picks the price


class Trust(StrEnum):
    """Per-channel trust (who may trade without a human's confirmation)."""

    CONFIRM_ALL = "confirm_all"  # every clean signal needs confirmation
    AUTO = "auto"  # clean signals execute


@dataclass(frozen=True)
class TakeProfit:
    price: Decimal
    share: Decimal | None = None  # fraction of the position (0..1]; None = split evenly


@dataclass(frozen=True)
class Update:
    """A follow-up to an earlier signal."""

    action: Literal["move_stop", "close", "cancel", "breakeven"]
    price: Decimal | None = None  # move_stop target
    fraction: Decimal | None = None  # close: share of the position (None = all)


@dataclass(frozen=True)
class ParsedSignal:
    """The parser's verdict on one text. ``reason`` always says why, in plain words."""

    decision: Decision
    kind: Kind
    reason: str
    symbol: str | None = None
    side: Literal["LONG", "SHORT"] | None = None
    entries: tuple[Decimal, ...] = ()
    entry_type: EntryType | None = None
    stop_loss: Decimal | None = None
    stop_loss_pct: Decimal | None = None  # "SL 3%": resolved against the entry later
    take_profits: tuple[TakeProfit, ...] = ()
    leverage: int | None = None
    margin_mode: Literal["ISOLATED", "CROSSED"] | None = None
    size_pct: Decimal | None = None  # "Amount: 5%" (first of a range), capped by profile
    update: Update | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, Any]:
        """The one-line JSON of ``tradewire signals parse`` (decimals as strings)."""
        data = asdict(self)
        return _jsonable(data)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ChannelProfile:
    """How one channel writes, and how much it is trusted."""

    name: str = "default"
    trust: Trust = Trust.CONFIRM_ALL
    two_prices_mean: Literal["entries", "zone"] = "entries"  # "100-200" without the word zone
    zone_price: Literal["worst", "middle", "best"] = "worst"  # conservative by default
    require_stop_loss: bool = True
    max_leverage: int = 20
    max_size_pct: Decimal = Decimal(20)
    max_signals_per_minute: int = 7
    max_lag_s: float = 60.0  # older messages are stale


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text == "-0" else text
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value
