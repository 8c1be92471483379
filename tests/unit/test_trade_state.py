"""The trade state machine: transitions, sibling cancels, and duplicates changing nothing."""

from decimal import Decimal

import pytest

from tradewire.domain import CloseReason, DomainEvent, EventKind, Leg, TradeStatus
from tradewire.processor.state import NOTHING, Notice, TradeView, decide

BOTH = frozenset({Leg.STOP_LOSS, Leg.TAKE_PROFIT})


def event(kind: EventKind, **kw: object) -> DomainEvent:
    return DomainEvent(kind=kind, event_id="e", account_id=1, symbol="BTCUSDT", **kw)  # type: ignore[arg-type]


def test_entry_fill_activates_an_open_trade() -> None:
    """An entry fill moves an OPEN trade to ACTIVE with the fill price and quantity."""
    d = decide(
        TradeView(TradeStatus.OPEN),
        Leg.ENTRY,
        event(EventKind.ENTRY_FILLED, price=Decimal("60000"), quantity=Decimal("0.01")),
    )
    assert d.trade_updates["status"] is TradeStatus.ACTIVE
    assert d.trade_updates["entry_price"] == Decimal("60000")
    assert d.notice is Notice.ENTRY_FILLED and d.order_status == "FILLED" and d.cancel_legs == ()


def test_stop_loss_fill_closes_the_trade_and_cancels_the_take_profit() -> None:
    """SL filled → CLOSED(STOP_LOSS), the TP is cancelled and the user told."""
    d = decide(
        TradeView(TradeStatus.ACTIVE, open_exits=BOTH),
        Leg.STOP_LOSS,
        event(EventKind.SL_TRIGGERED, price=Decimal("58000"), realized_pnl=Decimal("-20")),
    )
    assert d.trade_updates["status"] is TradeStatus.CLOSED
    assert d.trade_updates["close_reason"] is CloseReason.STOP_LOSS
    assert d.trade_updates["realized_pnl_delta"] == Decimal("-20")
    assert d.cancel_legs == (Leg.TAKE_PROFIT,)
    assert d.notice is Notice.STOP_LOSS_HIT


def test_take_profit_fill_cancels_the_stop_loss() -> None:
    """TP filled → CLOSED(TAKE_PROFIT), the SL is cancelled."""
    d = decide(TradeView(TradeStatus.ACTIVE, open_exits=BOTH), Leg.TAKE_PROFIT,
               event(EventKind.TP_TRIGGERED))
    assert d.trade_updates["close_reason"] is CloseReason.TAKE_PROFIT
    assert d.cancel_legs == (Leg.STOP_LOSS,)


def test_a_target_filling_before_the_last_closes_part_of_the_position() -> None:
    """TP1 of three fills: the trade stays ACTIVE, its PnL grows, the user is told, nothing
    is cancelled."""
    view = TradeView(TradeStatus.ACTIVE, open_exits=frozenset({Leg.STOP_LOSS, Leg.TAKE_PROFIT,
                                                               Leg.TP2, Leg.TP3}))
    d = decide(view, Leg.TAKE_PROFIT, event(EventKind.TP_TRIGGERED, realized_pnl=Decimal(5)))
    assert "status" not in d.trade_updates and d.trade_updates["realized_pnl_delta"] == 5
    assert d.order_status == "FILLED" and d.cancel_legs == () and d.notice is Notice.TAKE_PROFIT_HIT


def test_the_last_target_closes_the_trade_and_the_stop_loss_cancels_every_target() -> None:
    """The last open target closes the trade and cancels the stop; a stop fill cancels all
    targets still open."""
    last = decide(TradeView(TradeStatus.ACTIVE, open_exits=frozenset({Leg.STOP_LOSS, Leg.TP3})),
                  Leg.TP3, event(EventKind.TP_TRIGGERED))
    assert last.trade_updates["status"] is TradeStatus.CLOSED
    assert last.cancel_legs == (Leg.STOP_LOSS,)
    stop = decide(TradeView(TradeStatus.ACTIVE,
                            open_exits=frozenset({Leg.STOP_LOSS, Leg.TP2, Leg.TP3})),
                  Leg.STOP_LOSS, event(EventKind.SL_TRIGGERED))
    assert set(stop.cancel_legs) == {Leg.TP2, Leg.TP3}


@pytest.mark.parametrize("kind", [EventKind.SL_TRIGGERED, EventKind.TP_TRIGGERED])
def test_exit_events_on_a_closed_trade_change_nothing(kind: EventKind) -> None:
    """A late or duplicate exit event after the trade closed decides nothing."""
    leg = Leg.STOP_LOSS if kind is EventKind.SL_TRIGGERED else Leg.TAKE_PROFIT
    assert decide(TradeView(TradeStatus.CLOSED), leg, event(kind)) is NOTHING


def test_sibling_cancel_after_close_is_recorded_silently() -> None:
    """The TP cancelled by us after the SL hit updates the order but tells nobody."""
    d = decide(TradeView(TradeStatus.CLOSED), Leg.TAKE_PROFIT, event(EventKind.TP_CANCELED))
    assert d.order_status == "CANCELED" and d.notice is None and not d.trade_updates


def test_stop_cancelled_while_position_is_on_warns_the_user() -> None:
    """An SL cancelled outside tradewire while the position is open is a warning."""
    d = decide(TradeView(TradeStatus.ACTIVE), Leg.STOP_LOSS, event(EventKind.SL_CANCELED))
    assert d.notice is Notice.PROTECTION_LOST


def test_entry_cancel_cancels_both_exits() -> None:
    """A resting entry cancelled before any fill ends the trade and removes SL and TP."""
    d = decide(TradeView(TradeStatus.OPEN), Leg.ENTRY, event(EventKind.ENTRY_CANCELED))
    assert d.trade_updates["status"] is TradeStatus.CANCELED
    assert {Leg.STOP_LOSS, Leg.TAKE_PROFIT} <= set(d.cancel_legs)


def test_second_entry_fill_updates_quantity_without_a_second_notice() -> None:
    """After a partial fill, the final fill updates the quantity and notifies nobody again."""
    d = decide(
        TradeView(TradeStatus.ACTIVE),
        Leg.ENTRY,
        event(EventKind.ENTRY_FILLED, quantity=Decimal("0.02")),
    )
    assert d.trade_updates["quantity"] == Decimal("0.02") and d.notice is None


def test_rejected_protection_warns_but_keeps_the_trade() -> None:
    """A rejected SL/TP at trigger keeps the trade live and tells the user."""
    d = decide(
        TradeView(TradeStatus.ACTIVE),
        Leg.STOP_LOSS,
        event(EventKind.ORDER_REJECTED, reason="Reduce Only reject"),
    )
    assert "status" not in d.trade_updates and d.notice is Notice.ORDER_REJECTED


def test_liquidation_closes_and_cancels_both_exits() -> None:
    """A liquidation closes the trade and removes both protective orders."""
    d = decide(TradeView(TradeStatus.ACTIVE), Leg.ENTRY, event(EventKind.LIQUIDATED))
    assert d.trade_updates["close_reason"] is CloseReason.LIQUIDATION
    assert {Leg.STOP_LOSS, Leg.TAKE_PROFIT} <= set(d.cancel_legs)
