"""The simulator's Algo Service: trigger rules, lifecycle, event order, reduce-only, expiry."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimError
from tradewire.simulator.model import Account
from tradewire.simulator.params import AlgoRequest, OrderRequest, parse_algo

BTC = "BTCUSDT"


@pytest.fixture
def engine() -> Engine:
    return Engine(ManualClock())


@pytest.fixture
def account(engine: Engine) -> Account:
    account = engine.create_account()
    engine.start_listen_key(account.api_key)
    return account


def long_position(engine: Engine, account: Account, qty: str = "0.010") -> None:
    engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "MARKET", D(qty)))
    engine.drain_events()


def algo(engine: Engine, account: Account, kind: str, side: str, trigger: str, *,
         qty: str | None = "0.010", reduce_only: bool = True, close_position: bool = False,
         client_id: str | None = None, price: str | None = None) -> int:
    request = AlgoRequest(
        BTC, side, kind, D(trigger), quantity=None if close_position else D(qty or "0"),
        price=D(price) if price else None, reduce_only=reduce_only and not close_position,
        close_position=close_position, client_algo_id=client_id, working_type="MARK_PRICE")
    return engine.place_algo_order(account.api_key, request).algo_id


def names(deliveries: list[Any]) -> list[str]:
    out = []
    for delivery in deliveries:
        payload = delivery.payload
        inner = payload.get("o")
        out.append(f"{payload['e']} {inner['X']}" if isinstance(inner, dict) else payload["e"])
    return out


@pytest.mark.parametrize(
    ("kind", "side", "trigger", "quiet_mark", "firing_mark"),
    [
        ("STOP_MARKET", "BUY", "61000", "60999.9", "61000"),
        ("STOP_MARKET", "SELL", "59000", "59000.1", "59000"),
        ("TAKE_PROFIT_MARKET", "BUY", "59000", "59000.1", "59000"),
        ("TAKE_PROFIT_MARKET", "SELL", "61000", "60999.9", "61000"),
    ],
)
def test_trigger_rules(engine: Engine, kind: str, side: str, trigger: str, quiet_mark: str,
                       firing_mark: str) -> None:
    """STOP BUY fires at mark >= trigger, STOP SELL at <=; TAKE_PROFIT the other way round."""
    account = engine.create_account()
    engine.place_order(account.api_key, OrderRequest(
        BTC, "SELL" if side == "BUY" else "BUY", "MARKET", D("0.010")))
    algo_id = algo(engine, account, kind, side, trigger)
    engine.set_mark_price(BTC, D(quiet_mark))
    assert engine.get_algo_order(account.api_key, algo_id).status == "NEW"
    engine.set_mark_price(BTC, D(firing_mark))
    assert engine.get_algo_order(account.api_key, algo_id).status == "FINISHED"
    assert account.position(BTC).amount == 0


@pytest.mark.parametrize(
    ("kind", "side", "trigger"),
    [("STOP_MARKET", "SELL", "60000"), ("STOP_MARKET", "BUY", "59000"),
     ("TAKE_PROFIT_MARKET", "SELL", "59000"), ("TAKE_PROFIT_MARKET", "BUY", "60000")],
)
def test_order_that_would_trigger_immediately_is_rejected(
    engine: Engine, account: Account, kind: str, side: str, trigger: str
) -> None:
    """A trigger the mark (60000) already meets answers -2021."""
    with pytest.raises(SimError) as excinfo:
        algo(engine, account, kind, side, trigger)
    assert (excinfo.value.code, excinfo.value.msg) == (-2021, "Order would immediately trigger.")


def test_market_placement_event_order(engine: Engine, account: Account) -> None:
    """MARKET: ORDER_TRADE_UPDATE NEW, ACCOUNT_UPDATE, TRADE_LITE, ORDER_TRADE_UPDATE TRADE."""
    engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "MARKET", D("0.010")))
    deliveries = engine.drain_events()
    assert names(deliveries) == ["ORDER_TRADE_UPDATE NEW", "ACCOUNT_UPDATE", "TRADE_LITE",
                                 "ORDER_TRADE_UPDATE FILLED"]
    assert deliveries[3].payload["o"]["x"] == "TRADE"
    assert deliveries[1].payload["a"]["m"] == "ORDER"


def test_triggered_stop_lifecycle_and_fields(engine: Engine, account: Account) -> None:
    """A triggered STOP_MARKET: TRIGGERING, TRIGGERED (ai), the MARKET order with
    c=clientAlgoId and ot=STOP_MARKET filling with rp and commission, then FINISHED."""
    long_position(engine, account)
    algo(engine, account, "STOP_MARKET", "SELL", "58000", client_id="u42-sl-0001")
    assert names(engine.drain_events()) == ["ALGO_UPDATE NEW"]
    engine.set_mark_price(BTC, D("57990.1"))
    deliveries = engine.drain_events()
    assert names(deliveries) == [
        "ALGO_UPDATE TRIGGERING", "ALGO_UPDATE TRIGGERED", "ORDER_TRADE_UPDATE NEW",
        "ACCOUNT_UPDATE", "TRADE_LITE", "ORDER_TRADE_UPDATE FILLED", "ALGO_UPDATE FINISHED"]
    triggered, new, trade, finished = (deliveries[i].payload["o"] for i in (1, 2, 5, 6))
    assert triggered["ai"] == str(new["i"]) and triggered["act"] == "MARKET"
    assert (new["c"], new["o"], new["ot"], new["sp"], new["R"]) == (
        "u42-sl-0001", "MARKET", "STOP_MARKET", "58000.00", True)
    assert (trade["x"], trade["l"], trade["L"], trade["rp"]) == (
        "TRADE", "0.010", "57990.10", "-20.09900000")
    assert (trade["N"], trade["n"]) == ("USDT", "0.23196040")
    assert (finished["ap"], finished["aq"], finished["ai"]) == ("57990.10", "0.010", str(new["i"]))
    assert account.position(BTC).amount == 0


def test_reduce_only_algo_with_nothing_to_reduce_is_rejected(
    engine: Engine, account: Account
) -> None:
    """Triggering a reduce-only order with no position ends it REJECTED, "Reduce Only reject"."""
    algo_id = algo(engine, account, "STOP_MARKET", "SELL", "58000")
    engine.drain_events()
    engine.set_mark_price(BTC, D("57000"))
    deliveries = engine.drain_events()
    assert names(deliveries) == ["ALGO_UPDATE TRIGGERING", "ALGO_UPDATE REJECTED"]
    assert deliveries[1].payload["o"]["rm"] == "Reduce Only reject"
    assert engine.get_algo_order(account.api_key, algo_id).status == "REJECTED"


def test_close_position_orders_expire_when_flat(engine: Engine, account: Account) -> None:
    """After the stop closes the position, a closePosition take-profit EXPIRES while a
    quantity+reduceOnly one stays open until cancelled."""
    long_position(engine, account)
    algo(engine, account, "STOP_MARKET", "SELL", "58000", close_position=True)
    tp_close = algo(engine, account, "TAKE_PROFIT_MARKET", "SELL", "65000", close_position=True)
    tp_reduce = algo(engine, account, "TAKE_PROFIT_MARKET", "SELL", "66000")
    engine.drain_events()
    engine.set_mark_price(BTC, D("57000"))
    deliveries = engine.drain_events()
    assert names(deliveries)[-2:] == ["ALGO_UPDATE FINISHED", "ALGO_UPDATE EXPIRED"]
    assert deliveries[-1].payload["o"]["aid"] == tp_close
    assert [a.algo_id for a in engine.open_algo_orders(account.api_key)] == [tp_reduce]


def test_close_position_sizes_at_trigger_time(engine: Engine, account: Account) -> None:
    """closePosition sends q=0 at placement and closes the whole position when it fires."""
    algo_id = algo(engine, account, "STOP_MARKET", "SELL", "58000", close_position=True)
    (new,) = engine.drain_events()
    assert (new.payload["o"]["q"], new.payload["o"]["cp"], new.payload["o"]["R"]) == (
        "0", True, True)
    long_position(engine, account, "0.030")
    engine.set_mark_price(BTC, D("57000"))
    assert engine.get_algo_order(account.api_key, algo_id).executed_qty == D("0.030")
    assert account.position(BTC).amount == 0


def test_reduce_only_algo_is_capped_at_the_position(engine: Engine, account: Account) -> None:
    """A reduce-only stop larger than the position sends only the position's size."""
    long_position(engine, account, "0.010")
    algo_id = algo(engine, account, "STOP_MARKET", "SELL", "58000", qty="0.050")
    engine.set_mark_price(BTC, D("57000"))
    assert engine.get_algo_order(account.api_key, algo_id).executed_qty == D("0.010")
    assert account.position(BTC).amount == 0


def test_opening_stop_without_margin_is_rejected_at_trigger(engine: Engine) -> None:
    """No margin check at placement; at trigger an unaffordable order is REJECTED."""
    poor = engine.create_account(D("10"))
    algo_id = algo(engine, poor, "STOP_MARKET", "BUY", "61000", qty="1.000", reduce_only=False)
    engine.set_mark_price(BTC, D("61000"))
    rejected = engine.get_algo_order(poor.api_key, algo_id)
    assert (rejected.status, rejected.reject_reason) == ("REJECTED", "Margin is insufficient.")


def test_stop_limit_triggers_into_a_resting_limit(engine: Engine, account: Account) -> None:
    """STOP triggers into a LIMIT order (TRIGGERED); it FINISHES when that order fills."""
    long_position(engine, account)
    algo_id = algo(engine, account, "STOP", "SELL", "58000", price="58200")
    engine.set_mark_price(BTC, D("57900"))
    assert engine.get_algo_order(account.api_key, algo_id).status == "TRIGGERED"
    (child,) = engine.open_orders(account.api_key)
    assert (child.type, child.orig_type, child.price) == ("LIMIT", "STOP", D("58200"))
    engine.set_mark_price(BTC, D("58100"))
    assert engine.get_algo_order(account.api_key, algo_id).status == "TRIGGERED"
    engine.set_mark_price(BTC, D("58200"))
    assert engine.get_algo_order(account.api_key, algo_id).status == "FINISHED"


def test_cancel_algo_order(engine: Engine, account: Account) -> None:
    """Cancel by clientAlgoId pushes ALGO_UPDATE CANCELED only; again, or unknown, is -2011."""
    algo(engine, account, "STOP_MARKET", "SELL", "58000", client_id="sl-1")
    engine.drain_events()
    engine.cancel_algo_order(account.api_key, client_algo_id="sl-1")
    assert names(engine.drain_events()) == ["ALGO_UPDATE CANCELED"]
    for algo_id, client_id in ((None, "sl-1"), (1, None)):
        with pytest.raises(SimError) as excinfo:
            engine.cancel_algo_order(account.api_key, algo_id, client_id)
        assert (excinfo.value.code, excinfo.value.msg) == (-2011, "Unknown order sent.")
    with pytest.raises(SimError) as query:
        engine.get_algo_order(account.api_key, algo_id=1)
    assert query.value.code == -2013


def test_cancel_all_algo_orders_of_a_symbol(engine: Engine, account: Account) -> None:
    """DELETE algoOpenOrders cancels every open algo order of the symbol."""
    algo(engine, account, "STOP_MARKET", "SELL", "58000")
    algo(engine, account, "TAKE_PROFIT_MARKET", "SELL", "65000")
    assert len(engine.cancel_all_algo_orders(account.api_key, BTC)) == 2
    assert engine.open_algo_orders(account.api_key, BTC) == []


def test_duplicate_client_algo_id(engine: Engine, account: Account) -> None:
    """A repeated clientAlgoId answers -4116."""
    algo(engine, account, "STOP_MARKET", "SELL", "58000", client_id="sl-1")
    with pytest.raises(SimError) as excinfo:
        algo(engine, account, "STOP_MARKET", "SELL", "57000", client_id="sl-1")
    assert excinfo.value.code == -4116


@pytest.mark.parametrize(
    ("extra", "code"),
    [({"closePosition": "true", "quantity": "0.01"}, -4137),
     ({"closePosition": "true", "reduceOnly": "true"}, -1106),
     ({"type": "LIMIT"}, -1116),
     ({"type": "TRAILING_STOP_MARKET", "callbackRate": "1"}, -2021),
     ({"algoType": "VP"}, -1130),
     ({"triggerPrice": ""}, -1102)],
)
def test_algo_parameter_rules(extra: dict[str, str], code: int) -> None:
    """closePosition excludes quantity (-4137) and reduceOnly (-1106); only CONDITIONAL
    types; triggerPrice is mandatory, except for trailing stops, which refuse it (-2021)."""
    params = {"algoType": "CONDITIONAL", "symbol": BTC, "side": "SELL", "type": "STOP_MARKET",
              "triggerPrice": "58000", "quantity": "0.01"}
    params.update(extra)
    if extra.get("closePosition") and "quantity" not in extra:
        del params["quantity"]
    with pytest.raises(SimError) as excinfo:
        parse_algo(params)
    assert excinfo.value.code == code
