"""Domain types shared by every layer: signals, trades, order legs and normalised events."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum


class Side(StrEnum):
    """Direction of a trade signal."""

    LONG = "LONG"
    SHORT = "SHORT"

    @property
    def entry_order_side(self) -> str:
        return "BUY" if self is Side.LONG else "SELL"

    @property
    def exit_order_side(self) -> str:
        return "SELL" if self is Side.LONG else "BUY"


class Leg(StrEnum):
    """The orders of one trade: an entry, a stop-loss and up to ten take-profit targets."""

    ENTRY = "ENTRY"
    STOP_LOSS = "SL"
    TAKE_PROFIT = "TP"  # the first (or only) target
    TP2 = "TP2"
    TP3 = "TP3"
    TP4 = "TP4"
    TP5 = "TP5"
    TP6 = "TP6"
    TP7 = "TP7"
    TP8 = "TP8"
    TP9 = "TP9"
    TP10 = "TP10"

    @property
    def is_take_profit(self) -> bool:
        return self.value.startswith("TP")

    @property
    def is_exit(self) -> bool:
        return self is not Leg.ENTRY


TP_LEGS: tuple[Leg, ...] = tuple(leg for leg in Leg if leg.is_take_profit)
EXIT_LEGS: tuple[Leg, ...] = (Leg.STOP_LOSS, *TP_LEGS)
MAX_TARGETS = len(TP_LEGS)


def take_profit_leg(index: int) -> Leg:
    """The leg of the ``index``-th target (0-based)."""
    return TP_LEGS[index]


class TradeStatus(StrEnum):
    PENDING = "PENDING"  # orders being placed
    OPEN = "OPEN"  # entry placed (LIMIT resting or MARKET sent), protection placed
    ACTIVE = "ACTIVE"  # entry filled: a position is on
    CLOSED = "CLOSED"  # position closed (see CloseReason)
    CANCELED = "CANCELED"  # entry cancelled before any fill
    FAILED = "FAILED"  # the exchange refused the entry


class CloseReason(StrEnum):
    STOP_LOSS = "STOP_LOSS"
    TAKE_PROFIT = "TAKE_PROFIT"
    LIQUIDATION = "LIQUIDATION"
    EXTERNAL = "EXTERNAL"


class EventKind(StrEnum):
    """Normalised events the worker acts on (from raw exchange events)."""

    ENTRY_FILLED = "ENTRY_FILLED"
    ENTRY_PARTIALLY_FILLED = "ENTRY_PARTIALLY_FILLED"
    ENTRY_CANCELED = "ENTRY_CANCELED"
    SL_TRIGGERED = "SL_TRIGGERED"
    TP_TRIGGERED = "TP_TRIGGERED"
    SL_CANCELED = "SL_CANCELED"
    TP_CANCELED = "TP_CANCELED"
    ORDER_REJECTED = "ORDER_REJECTED"
    LIQUIDATED = "LIQUIDATED"
    ACCOUNT_UPDATED = "ACCOUNT_UPDATED"
    IGNORED = "IGNORED"


@dataclass(frozen=True)
class Target:
    """A take-profit price and the share of the position it closes."""

    price: Decimal
    share: Decimal


@dataclass(frozen=True)
class Signal:
    """A validated trade signal (the body of ``POST /api/execute-trade``)."""

    signal_id: str
    symbol: str
    side: Side
    stop_loss: Decimal
    targets: tuple[Target, ...]  # nearest first; shares sum to 1
    leverage: int
    size_usdt: Decimal  # position notional per account, in USDT
    entry_price: Decimal | None = None  # None: MARKET entry
    user_ids: tuple[int, ...] | None = None  # None: every subscribed user

    @property
    def take_profit(self) -> Decimal:
        """The first target (the one stored on the trade row)."""
        return self.targets[0].price


@dataclass(frozen=True)
class DomainEvent:
    """What a raw exchange event means for a trade."""

    kind: EventKind
    event_id: str
    account_id: int
    symbol: str | None
    client_id: str | None = None
    order_id: int | None = None
    price: Decimal | None = None
    quantity: Decimal | None = None
    realized_pnl: Decimal | None = None
    commission: Decimal | None = None
    reason: str | None = None
    event_time_ms: int = 0
    raw_type: str = ""
    extra: dict[str, str] = field(default_factory=dict)


_CLIENT_ID_PREFIX = "tw"


def client_order_id(signal_id: str, account_id: int, leg: Leg) -> str:
    """Deterministic client id of one order leg: the same (signal, account, leg) gives the same id,
    so a retried placement can never open a second position. Fits the exchange's 36-char rule."""
    digest = hashlib.sha256(f"{signal_id}|{account_id}".encode()).hexdigest()[:24]
    return f"{_CLIENT_ID_PREFIX}-{digest}-{leg.value.lower()}"


def leg_of_client_id(client_id: str) -> Leg | None:
    """The leg encoded in one of our client ids, or None for foreign orders."""
    if not client_id.startswith(f"{_CLIENT_ID_PREFIX}-"):
        return None
    suffix = client_id.rsplit("-", 1)[-1].upper()
    try:
        return Leg(suffix)
    except ValueError:
        return None
