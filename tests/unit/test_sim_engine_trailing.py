"""The simulator's TRAILING_STOP_MARKET and STOP/TAKE_PROFIT limit algo orders."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimError, views
from tradewire.simulator.model import Account, AlgoOrder
from tradewire.simulator.params import AlgoRequest, OrderRequest, parse_algo

BTC = "BTCUSDT"


@pytest.fixture
def engine() -> Engine:
    return Engine(ManualClock())


@pytest.fixture
def account(engine: Engine) -> Account:
    return engine.create_account(D("10000"))


def position(engine: Engine, account: Account, side: str, qty: str = "0.010") -> None:
    engine.place_order(account.api_key, OrderRequest(BTC, side, "MARKET", D(qty)))
    engine.drain_events()


def trailing(engine: Engine, account: Account, side: str, rate: str,
             activate: str | None = None) -> AlgoOrder:
    return engine.place_algo_order(account.api_key, AlgoRequest(
        BTC, side, "TRAILING_STOP_MARKET", None, quantity=D("0.010"), reduce_only=True,
        callback_rate=D(rate), activate_price=D(activate) if activate else None,
        client_algo_id=f"trail-{side.lower()}"))


def walk(engine: Engine, *prices: str) -> None:
    for price in prices:
        engine.set_mark_price(BTC, D(price))


def test_sell_trailing_follows_the_high_and_fires_on_the_callback(
    engine: Engine, account: Account
) -> None:
    """Without activatePrice a SELL trails from placement: after a high of 62000, 1 % back
    (61380) fires it, not 61400."""
    position(engine, account, "BUY")
    algo = trailing(engine, account, "SELL", "1")
    walk(engine, "61000", "62000", "61400")
    assert (algo.status, algo.activated, algo.extreme) == ("NEW", True, D("62000"))
    walk(engine, "61380")
    assert algo.status == "FINISHED"
    assert account.position(BTC).amount == 0


def test_buy_trailing_waits_for_its_activation_price(engine: Engine, account: Account) -> None:
    """A BUY with activatePrice 59000 and 2 %: inactive above it; then tracks the low (57000)
    and fires at 58140, not at 58100 above the first low."""
    position(engine, account, "SELL")
    algo = trailing(engine, account, "BUY", "2", activate="59000")
    walk(engine, "59500", "60500")
    assert (algo.activated, algo.status) == (False, "NEW")
    walk(engine, "58000", "59000", "57000", "58100")
    assert (algo.activated, algo.extreme, algo.status) == (True, D("57000"), "NEW")
    walk(engine, "58140")
    assert algo.status == "FINISHED"
    assert account.position(BTC).amount == 0


def test_trailing_events_carry_activation_and_rate(engine: Engine, account: Account) -> None:
    """ALGO_UPDATE has ia; the triggered MARKET order has ot=TRAILING_STOP_MARKET, AP and cr;
    the algo order body has activatePrice and callbackRate."""
    position(engine, account, "BUY")
    algo = trailing(engine, account, "SELL", "0.5", activate="60500")
    (new,) = [d.payload["o"] for d in engine.drain_events()]
    assert (new["o"], new["ia"], new["tp"]) == ("TRAILING_STOP_MARKET", False, "0")
    body = views.algo_body(algo, engine.spec(BTC))
    assert (body["activatePrice"], body["callbackRate"]) == ("60500.00", "0.5")
    walk(engine, "61000", "60695")
    payloads: list[dict[str, Any]] = [d.payload for d in engine.drain_events()]
    child = next(p["o"] for p in payloads if p["e"] == "ORDER_TRADE_UPDATE")
    assert (child["o"], child["ot"], child["AP"], child["cr"], child["c"]) == (
        "MARKET", "TRAILING_STOP_MARKET", "60500.00", "0.5", "trail-sell")
    finished = [p["o"] for p in payloads if p["e"] == "ALGO_UPDATE"][-1]
    assert (finished["X"], finished["ia"]) == ("FINISHED", True)


@pytest.mark.parametrize(("side", "activate"),
                         [("SELL", "60000"), ("SELL", "59000"), ("BUY", "60000"),
                          ("BUY", "61000")])
def test_activation_price_already_passed_is_2021(engine: Engine, account: Account, side: str,
                                                 activate: str) -> None:
    """SELL needs activatePrice above the mark (60000), BUY below it; else -2021."""
    with pytest.raises(SimError) as excinfo:
        trailing(engine, account, side, "1", activate=activate)
    assert (excinfo.value.code, excinfo.value.msg) == (-2021, "Order would immediately trigger.")


@pytest.mark.parametrize(
    ("extra", "code"),
    [({}, -1102), ({"callbackRate": "0.05"}, -1130), ({"callbackRate": "10.1"}, -1130),
     ({"callbackRate": "1", "triggerPrice": "58000"}, -2021)],
)
def test_trailing_parameter_rules(extra: dict[str, str], code: int) -> None:
    """callbackRate is mandatory and 0.1-10; a triggerPrice is refused with -2021."""
    params = {"algoType": "CONDITIONAL", "symbol": BTC, "side": "SELL",
              "type": "TRAILING_STOP_MARKET", "quantity": "0.010", **extra}
    with pytest.raises(SimError) as excinfo:
        parse_algo(params)
    assert excinfo.value.code == code


def test_trailing_parses_activation_and_rate() -> None:
    """A valid trailing request carries activatePrice and callbackRate and no trigger price."""
    request = parse_algo({"algoType": "CONDITIONAL", "symbol": BTC, "side": "BUY",
                          "type": "TRAILING_STOP_MARKET", "quantity": "0.010",
                          "callbackRate": "10", "activatePrice": "59000",
                          "positionSide": "SHORT"})
    assert (request.trigger_price, request.activate_price, request.callback_rate) == (
        None, D("59000"), D("10"))
    assert request.position_side == "SHORT"


def test_close_position_only_for_market_stops() -> None:
    """closePosition goes with STOP_MARKET/TAKE_PROFIT_MARKET only (-1106 otherwise)."""
    with pytest.raises(SimError) as excinfo:
        parse_algo({"algoType": "CONDITIONAL", "symbol": BTC, "side": "SELL", "type": "STOP",
                    "triggerPrice": "58000", "price": "57900", "closePosition": "true"})
    assert excinfo.value.code == -1106


def test_take_profit_limit_triggers_into_a_limit(engine: Engine, account: Account) -> None:
    """TAKE_PROFIT SELL fires at mark >= trigger and places a LIMIT at its price, which
    fills at once when the mark is already through it."""
    position(engine, account, "BUY")
    algo = engine.place_algo_order(account.api_key, AlgoRequest(
        BTC, "SELL", "TAKE_PROFIT", D("62000"), quantity=D("0.010"), price=D("62100"),
        reduce_only=True))
    walk(engine, "62000")
    assert algo.status == "TRIGGERED"
    (child,) = engine.open_orders(account.api_key)
    assert (child.type, child.orig_type, child.price, child.stop_price) == (
        "LIMIT", "TAKE_PROFIT", D("62100"), D("62000"))
    walk(engine, "62150")
    assert algo.status == "FINISHED"
    assert account.position(BTC).realized == D("21")
