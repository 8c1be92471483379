"""Normalisation of golden exchange messages into domain events."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tradewire.bus.base import Envelope
from tradewire.domain import EventKind, Leg, client_order_id
from tradewire.errors import PermanentError
from tradewire.processor.normalize import normalize

WIRE = Path(__file__).parents[1] / "fixtures" / "wire"
SL_ID = client_order_id("sig-7", 3, Leg.STOP_LOSS)
TP_ID = client_order_id("sig-7", 3, Leg.TAKE_PROFIT)
ENTRY_ID = client_order_id("sig-7", 3, Leg.ENTRY)


def golden(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((WIRE / f"{name}.json").read_text())["events"]
    return events


def ours(payload: dict[str, Any], client_id: str) -> dict[str, Any]:
    """The golden payload with its client id replaced by one of ours."""
    out = copy.deepcopy(payload)
    if "caid" in out.get("o", {}):
        out["o"]["caid"] = client_id
    elif "c" in out.get("o", {}):
        out["o"]["c"] = client_id
    return out


def envelope(payload: dict[str, Any]) -> Envelope:
    return Envelope(event_id="e1", account_id=3, user_id=9, symbol="BTCUSDT", received_ms=1,
                    event=payload)


def kinds(name: str, client_id: str) -> list[EventKind]:
    return [normalize(envelope(ours(p, client_id))).kind for p in golden(name)]


def test_stop_loss_sequence_yields_one_sl_triggered_with_fill_figures() -> None:
    """Of the stop-loss trigger sequence only the engine order's FILL means SL_TRIGGERED."""
    events = [normalize(envelope(ours(p, SL_ID))) for p in golden("ws_stop_loss_triggered")]
    triggered = [e for e in events if e.kind is EventKind.SL_TRIGGERED]
    assert len(triggered) == 1
    [fill] = triggered
    assert fill.price == Decimal("57990.10") and fill.quantity == Decimal("0.010")
    assert fill.realized_pnl == Decimal("-18.40000000")
    assert fill.commission == Decimal("0.28995050")
    others = {e.kind for e in events if e is not fill}
    assert others <= {EventKind.IGNORED, EventKind.ACCOUNT_UPDATED}


def test_take_profit_fill_is_tp_triggered() -> None:
    """A filled take-profit engine order is TP_TRIGGERED."""
    assert EventKind.TP_TRIGGERED in kinds("ws_take_profit_close_position", TP_ID)


def test_entry_fill_sequence_reports_partial_then_full_fill() -> None:
    """A market entry filled in two parts gives a partial fill, then a fill."""
    found = [k for k in kinds("ws_market_entry_fill", ENTRY_ID)
             if k not in (EventKind.IGNORED, EventKind.ACCOUNT_UPDATED)]
    assert found == [EventKind.ENTRY_PARTIALLY_FILLED, EventKind.ENTRY_FILLED]


def test_cancelled_protective_algo_order_is_sl_canceled() -> None:
    """An ALGO_UPDATE CANCELED of our stop-loss is SL_CANCELED."""
    assert EventKind.SL_CANCELED in kinds("ws_algo_canceled", SL_ID)
    assert EventKind.TP_CANCELED in kinds("ws_algo_canceled", TP_ID)


def test_foreign_orders_are_ignored() -> None:
    """Orders placed outside tradewire (golden ids as sent) change nothing."""
    for name in ("ws_stop_loss_triggered", "ws_limit_canceled", "ws_algo_new"):
        for payload in golden(name):
            assert normalize(envelope(payload)).kind in (
                EventKind.IGNORED, EventKind.ACCOUNT_UPDATED)


def test_unknown_event_types_are_ignored_not_failed() -> None:
    """Event types we do not model (MARGIN_CALL, ...) are not errors."""
    for payload in golden("ws_unmodelled_events"):
        assert normalize(envelope(payload)).kind is EventKind.IGNORED


@pytest.mark.parametrize(
    "payload",
    [
        {"e": "MALFORMED", "reason": "not JSON", "raw": "{oops"},
        {"e": "ORDER_TRADE_UPDATE", "E": 1},
        {"no": "type"},
    ],
)
def test_unreadable_events_are_permanent_errors(payload: dict[str, Any]) -> None:
    """What cannot be parsed raises PermanentError (it ends in the DLQ)."""
    with pytest.raises(PermanentError):
        normalize(envelope(payload))
