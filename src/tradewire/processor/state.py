"""The trade state machine: a pure function from (trade, leg, event) to a decision.

::

    PENDING ──entry placed──▶ OPEN ──ENTRY_FILLED──▶ ACTIVE ──SL_TRIGGERED──▶ CLOSED(STOP_LOSS)
       │                        │                       ├──last TP filled─▶ CLOSED(TAKE_PROFIT)
       └──entry rejected──▶ FAILED                      └──LIQUIDATED───▶ CLOSED(LIQUIDATION)
                                └──ENTRY_CANCELED──▶ CANCELED

A take-profit that fills while other targets are still open closes part of the position: the
trade stays ACTIVE and its realised PnL grows. The stop-loss filling closes what is left and
cancels every open target; the last target filling cancels the stop-loss.

Events that do not apply in the current state (duplicates, late or reordered events) decide
nothing: applying the same event twice can never change a trade twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from tradewire.domain import EXIT_LEGS, CloseReason, DomainEvent, EventKind, Leg, TradeStatus


class Notice(StrEnum):
    """What the user is told."""

    ENTRY_FILLED = "ENTRY_FILLED"
    ENTRY_CANCELED = "ENTRY_CANCELED"
    STOP_LOSS_HIT = "STOP_LOSS_HIT"
    TAKE_PROFIT_HIT = "TAKE_PROFIT_HIT"
    LIQUIDATED = "LIQUIDATED"
    PROTECTION_LOST = "PROTECTION_LOST"
    ORDER_REJECTED = "ORDER_REJECTED"


@dataclass(frozen=True)
class TradeView:
    """The fields of a trade the state machine reads."""

    status: TradeStatus
    quantity: Decimal | None = None
    open_exits: frozenset[Leg] = frozenset()  # exit legs still working at the exchange


@dataclass(frozen=True)
class Decision:
    """What an event changes. Empty (``changed`` False) when it changes nothing."""

    trade_updates: dict[str, Any] = field(default_factory=dict)
    order_status: str | None = None
    cancel_legs: tuple[Leg, ...] = ()
    notice: Notice | None = None

    @property
    def changed(self) -> bool:
        return bool(self.trade_updates or self.order_status or self.notice)


NOTHING = Decision()

_LIVE = (TradeStatus.PENDING, TradeStatus.OPEN, TradeStatus.ACTIVE)
_BOTH_EXITS = EXIT_LEGS


def decide(trade: TradeView, leg: Leg, event: DomainEvent) -> Decision:
    """The effect of ``event`` (about order ``leg`` of this trade) on the trade."""
    handler = _HANDLERS.get(event.kind)
    return handler(trade, leg, event) if handler else NOTHING


def _entry_filled(trade: TradeView, leg: Leg, event: DomainEvent) -> Decision:
    if leg is not Leg.ENTRY or trade.status not in _LIVE:
        return NOTHING
    first_fill = trade.status is not TradeStatus.ACTIVE
    updates: dict[str, Any] = {"status": TradeStatus.ACTIVE}
    if event.price is not None:
        updates["entry_price"] = event.price
    if event.quantity is not None:
        updates["quantity"] = event.quantity
    _add_costs(updates, event)
    done = event.kind is EventKind.ENTRY_FILLED
    notice = Notice.ENTRY_FILLED if first_fill else None
    return Decision(updates, "FILLED" if done else "PARTIALLY_FILLED", (), notice)


def _entry_canceled(trade: TradeView, leg: Leg, event: DomainEvent) -> Decision:
    if leg is not Leg.ENTRY or trade.status not in (TradeStatus.PENDING, TradeStatus.OPEN):
        return NOTHING
    updates = {"status": TradeStatus.CANCELED, "error": event.reason}
    return Decision(updates, "CANCELED", _BOTH_EXITS, Notice.ENTRY_CANCELED)


def _exit_filled(trade: TradeView, leg: Leg, event: DomainEvent) -> Decision:
    if not leg.is_exit or trade.status not in _LIVE:
        return NOTHING
    others = trade.open_exits - {leg}
    if leg.is_take_profit and any(other.is_take_profit for other in others):
        updates: dict[str, Any] = {}  # a partial take-profit: the position stays on
        _add_costs(updates, event)
        return Decision(updates, "FILLED", (), Notice.TAKE_PROFIT_HIT)
    reason = CloseReason.TAKE_PROFIT if leg.is_take_profit else CloseReason.STOP_LOSS
    updates = {
        "status": TradeStatus.CLOSED,
        "close_reason": reason,
        "exit_price": event.price,
        "closed_at_ms": event.event_time_ms,
    }
    _add_costs(updates, event)
    notice = Notice.TAKE_PROFIT_HIT if leg.is_take_profit else Notice.STOP_LOSS_HIT
    return Decision(updates, "FILLED", tuple(sorted(others)), notice)


def _exit_canceled(trade: TradeView, leg: Leg, event: DomainEvent) -> Decision:
    if not leg.is_exit:
        return NOTHING
    if trade.status is TradeStatus.ACTIVE:  # cancelled while the position is on: unprotected
        return Decision({}, "CANCELED", (), Notice.PROTECTION_LOST)
    return Decision({}, "CANCELED")


def _rejected(trade: TradeView, leg: Leg, event: DomainEvent) -> Decision:
    if leg is Leg.ENTRY and trade.status in (TradeStatus.PENDING, TradeStatus.OPEN):
        updates = {"status": TradeStatus.FAILED, "error": event.reason}
        return Decision(updates, "REJECTED", _BOTH_EXITS, Notice.ORDER_REJECTED)
    if leg.is_exit and trade.status in _LIVE:
        return Decision({"error": event.reason}, "REJECTED", (), Notice.ORDER_REJECTED)
    return NOTHING


def _liquidated(trade: TradeView, leg: Leg, event: DomainEvent) -> Decision:
    if trade.status not in _LIVE:
        return NOTHING
    updates: dict[str, Any] = {
        "status": TradeStatus.CLOSED,
        "close_reason": CloseReason.LIQUIDATION,
        "exit_price": event.price,
        "closed_at_ms": event.event_time_ms,
    }
    _add_costs(updates, event)
    return Decision(updates, None, _BOTH_EXITS, Notice.LIQUIDATED)


def _add_costs(updates: dict[str, Any], event: DomainEvent) -> None:
    if event.realized_pnl is not None:
        updates["realized_pnl_delta"] = event.realized_pnl
    if event.commission is not None:
        updates["commission_delta"] = event.commission


_HANDLERS = {
    EventKind.ENTRY_FILLED: _entry_filled,
    EventKind.ENTRY_PARTIALLY_FILLED: _entry_filled,
    EventKind.ENTRY_CANCELED: _entry_canceled,
    EventKind.SL_TRIGGERED: _exit_filled,
    EventKind.TP_TRIGGERED: _exit_filled,
    EventKind.SL_CANCELED: _exit_canceled,
    EventKind.TP_CANCELED: _exit_canceled,
    EventKind.ORDER_REJECTED: _rejected,
    EventKind.LIQUIDATED: _liquidated,
}
