"""Reconciliation's payload builders against the golden exchange messages: what REST tells
about an order's final state becomes events with the SAME event ids as the events the exchange
sent for it, that normalise to the same meaning, and that are marked synthetic."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from tradewire.bus.base import Envelope
from tradewire.domain import DomainEvent, EventKind, Leg, client_order_id
from tradewire.exchange.event_ids import event_id
from tradewire.exchange.wire import parse_event
from tradewire.exchange.wire_rest import AlgoOrderResponse, OrderResponse
from tradewire.processor.normalize import normalize
from tradewire.streams.reconcile import (
    Fill,
    algo_payload,
    is_synthetic,
    order_payloads,
    synthetic_envelope,
)
from tradewire.streams.session import AccountRef

WIRE = Path(__file__).parents[1] / "fixtures" / "wire"
ACCOUNT = AccountRef(account_id=3, user_id=9)


def golden_events(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((WIRE / f"{name}.json").read_text())["events"]
    return events


def golden_body(name: str, endpoint: str, index: int = 0) -> dict[str, Any]:
    responses = json.loads((WIRE / f"{name}.json").read_text())["responses"]
    bodies = [r["body"] for r in responses if r["endpoint"] == endpoint]
    body: dict[str, Any] = copy.deepcopy(bodies[index])
    return body


def ids(payloads: list[dict[str, Any]]) -> list[str]:
    return [event_id(ACCOUNT.account_id, p) for p in payloads]


def meaning(payload: dict[str, Any]) -> DomainEvent:
    envelope = Envelope(event_id=event_id(ACCOUNT.account_id, payload),
                        account_id=ACCOUNT.account_id, user_id=ACCOUNT.user_id,
                        symbol="BTCUSDT", received_ms=1, event=payload)
    return normalize(envelope)


def same_meaning(synthetic: dict[str, Any], real: dict[str, Any]) -> None:
    """Everything the worker reads, except the event time (REST gives the fill's time, the
    exchange's ``E`` is when it pushed the event)."""
    a, b = meaning(synthetic), meaning(real)
    for name in ("kind", "event_id", "client_id", "order_id", "price", "quantity",
                 "realized_pnl", "commission", "reason", "raw_type"):
        assert getattr(a, name) == getattr(b, name), name


def fill_of(event: dict[str, Any]) -> Fill:
    """The userTrades row the exchange would return for the fill an event announces."""
    o = event["o"]
    return Fill(id=o["t"], order_id=o["i"], price=Decimal(o["L"]), qty=Decimal(o["l"]),
                commission=Decimal(o.get("n", "0")), commission_asset=o.get("N", ""),
                realized_pnl=Decimal(o["rp"]), maker=o["m"], time=o["T"])


def stop_loss_child_order() -> OrderResponse:
    """``GET /fapi/v1/order`` of the engine order of reference §4.9 (a), once filled."""
    return OrderResponse.from_json({
        "clientOrderId": "u42-sl-0001", "orderId": 712345678901, "symbol": "BTCUSDT",
        "status": "FILLED", "type": "MARKET", "origType": "STOP_MARKET", "side": "SELL",
        "positionSide": "BOTH", "timeInForce": "GTC", "price": "0", "avgPrice": "57990.10",
        "origQty": "0.010", "executedQty": "0.010", "cumQuote": "579.90100",
        "stopPrice": "58000.00", "reduceOnly": True, "closePosition": False,
        "workingType": "MARK_PRICE", "updateTime": 1767003600002,
    })


def test_a_triggered_stop_loss_fill_gets_the_id_of_the_exchanges_trade_event() -> None:
    events = golden_events("ws_stop_loss_triggered")
    real_fill = events[4]
    [payload] = order_payloads(stop_loss_child_order(), [fill_of(real_fill)])

    assert ids([payload]) == ids([real_fill])
    same_meaning(payload, real_fill)
    assert payload["E"] == payload["T"] == real_fill["o"]["T"]
    assert payload["synthetic"] is True and is_synthetic(payload)


def test_a_finished_algo_order_gets_the_id_of_the_exchanges_algo_update() -> None:
    events = golden_events("ws_stop_loss_triggered")
    body = golden_body("rest_algo_order", "GET /fapi/v1/algoOrder")
    algo = AlgoOrderResponse.from_json(body)
    payload = algo_payload(algo, executed_qty=Decimal("0.010"))

    assert algo.algoStatus == "FINISHED"
    assert ids([payload]) == ids([events[5]])
    assert payload["o"]["aq"] == "0.010" and payload["o"]["ai"] == "712345678901"
    same_meaning(payload, events[5])


def test_an_entry_filled_in_two_trades_gives_both_trade_events_with_their_ids() -> None:
    """Cumulative quantities (part of the id) are rebuilt per fill from the order."""
    events = golden_events("ws_market_entry_fill")
    real = [e for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    order = OrderResponse.from_json(golden_body("rest_order", "POST /fapi/v1/order"))
    payloads = order_payloads(order, [fill_of(e) for e in reversed(real)])

    assert ids(payloads) == ids(real)
    assert [p["o"]["X"] for p in payloads] == ["PARTIALLY_FILLED", "FILLED"]
    assert [p["o"]["z"] for p in payloads] == ["0.012", "0.020"]
    for synthetic, exchange in zip(payloads, real, strict=True):
        same_meaning(synthetic, exchange)


def test_only_the_fills_still_in_the_history_window_are_rebuilt_and_keep_their_ids() -> None:
    """When the older fill is no longer returned, the newer one still gets its own id."""
    events = golden_events("ws_market_entry_fill")
    real = [e for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    order = OrderResponse.from_json(golden_body("rest_order", "POST /fapi/v1/order"))

    assert ids(order_payloads(order, [fill_of(real[1])])) == ids(real[1:])


def test_a_cancelled_limit_order_gets_the_id_of_the_exchanges_cancel_event() -> None:
    [real] = golden_events("ws_limit_canceled")
    order = OrderResponse.from_json(golden_body("rest_order", "DELETE /fapi/v1/order"))
    [payload] = order_payloads(order, [])

    assert ids([payload]) == ids([real])
    assert (payload["o"]["x"], payload["o"]["X"], payload["o"]["t"]) == ("CANCELED", "CANCELED", 0)
    same_meaning(payload, real)


def test_a_cancelled_algo_order_normalises_like_the_real_one() -> None:
    [real] = golden_events("ws_algo_canceled")
    body = golden_body("rest_algo_order", "POST /fapi/v1/algoOrder", index=1)
    body["algoStatus"] = "CANCELED"
    payload = algo_payload(AlgoOrderResponse.from_json(body))

    assert ids([payload]) == ids([real])
    assert meaning(payload).kind is EventKind.TP_CANCELED
    same_meaning(payload, real)


def test_a_partly_filled_order_that_expired_gives_its_fill_then_its_expiry() -> None:
    """A reduce-only order capped by the position: TRADE/PARTIALLY_FILLED, then EXPIRED."""
    body = golden_body("rest_order", "POST /fapi/v1/order")
    body.update(status="EXPIRED", executedQty="0.012", avgPrice="60000.00",
                updateTime=1767000100003)
    order = OrderResponse.from_json(body)
    fill = Fill(id=6123450001, order_id=order.orderId, price=Decimal("60000.00"),
                qty=Decimal("0.012"), commission=Decimal("0.288"), commission_asset="USDT",
                realized_pnl=Decimal(0), maker=False, time=1767000100002)
    trade, expiry = order_payloads(order, [fill])

    assert ids([trade, expiry]) == [
        f"3:otu:BTCUSDT:{order.orderId}:TRADE:PARTIALLY_FILLED:6123450001:0.012",
        f"3:otu:BTCUSDT:{order.orderId}:EXPIRED:EXPIRED:0:0.012",
    ]
    assert meaning(trade).kind is EventKind.ENTRY_PARTIALLY_FILLED
    assert meaning(expiry).kind is EventKind.ENTRY_CANCELED


def test_a_new_order_without_fills_yields_nothing() -> None:
    order = OrderResponse.from_json(golden_body("rest_order", "GET /fapi/v1/order"))
    assert order.status == "NEW"
    assert order_payloads(order, []) == []


def test_fills_of_other_orders_are_ignored() -> None:
    order = stop_loss_child_order()
    other = Fill(id=1, order_id=order.orderId + 1, price=Decimal(1), qty=Decimal("0.010"),
                 commission=Decimal(0), commission_asset="", realized_pnl=Decimal(0),
                 maker=False, time=1)
    assert order_payloads(order, [other]) == []


def test_a_triggered_orders_events_carry_the_algo_client_id_so_the_worker_finds_its_leg() -> None:
    sl = client_order_id("sig-7", 3, Leg.STOP_LOSS)
    events = golden_events("ws_stop_loss_triggered")
    [payload] = order_payloads(stop_loss_child_order(), [fill_of(events[4])], client_id=sl)

    assert payload["o"]["c"] == sl
    assert meaning(payload).kind is EventKind.SL_TRIGGERED


def test_synthetic_payloads_parse_as_exchange_events_and_travel_marked_on_the_bus() -> None:
    events = golden_events("ws_stop_loss_triggered")
    payload = order_payloads(stop_loss_child_order(), [fill_of(events[4])])[0]
    parse_event(payload)  # the extra top-level key is ignored by the wire schema

    envelope = synthetic_envelope(ACCOUNT, payload, received_ms=5)
    decoded = Envelope.decode(envelope.encode())

    assert decoded.synthetic is True and decoded.event["synthetic"] is True
    assert (decoded.account_id, decoded.user_id, decoded.symbol) == (3, 9, "BTCUSDT")
    assert decoded.event_id == event_id(3, events[4])
