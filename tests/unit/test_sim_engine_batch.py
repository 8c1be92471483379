"""The simulator's batchOrders: up to 5 orders, answers in request order, errors in place."""

from __future__ import annotations

import json
from decimal import Decimal as D
from typing import Any

import pytest

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimError, handlers
from tradewire.simulator.model import Account
from tradewire.simulator.params import OrderRequest

BTC = "BTCUSDT"
LIMIT = {"symbol": BTC, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
         "quantity": "0.010", "price": "59000"}
MARKET = {"symbol": BTC, "side": "BUY", "type": "MARKET", "quantity": "0.010"}


@pytest.fixture
def engine() -> Engine:
    return Engine(ManualClock())


@pytest.fixture
def account(engine: Engine) -> Account:
    return engine.create_account(D("10000"))


def batch(engine: Engine, account: Account, *items: dict[str, Any]) -> list[dict[str, Any]]:
    return handlers.batch_orders(engine, account.api_key, {"batchOrders": json.dumps(items)})


def test_batch_answers_each_item_in_request_order(engine: Engine, account: Account) -> None:
    """Orders and refusals come back in request order; a failed item is its {code, msg}."""
    reduce_only = {"symbol": BTC, "side": "SELL", "type": "MARKET", "quantity": "0.010",
                   "reduceOnly": "true"}
    answers = batch(engine, account, {**LIMIT, "newClientOrderId": "b-1"}, reduce_only,
                    {**MARKET, "newClientOrderId": "b-3"})
    assert [a.get("clientOrderId") for a in answers] == ["b-1", None, "b-3"]
    assert answers[1] == {"code": -2022, "msg": "ReduceOnly Order is rejected."}
    assert answers[0]["status"] == "NEW"
    assert account.position(BTC).amount == D("0.010")


def test_bad_items_fail_alone(engine: Engine, account: Account) -> None:
    """A malformed item (missing quantity, or a conditional type) fails in place."""
    no_qty = {k: v for k, v in MARKET.items() if k != "quantity"}
    stop = {**MARKET, "type": "STOP_MARKET", "stopPrice": "58000"}
    answers = batch(engine, account, no_qty, stop, MARKET)
    assert [a.get("code") for a in answers] == [-1102, -4120, None]
    assert answers[2]["status"] == "NEW"


def test_batch_of_six_or_none_is_4082(engine: Engine, account: Account) -> None:
    """More than 5 orders, or an empty list, answers -4082 and places nothing."""
    for items in ([MARKET] * 6, []):
        with pytest.raises(SimError) as excinfo:
            batch(engine, account, *items)
        assert (excinfo.value.code, excinfo.value.msg) == (
            -4082, "Invalid number of batch place orders.")
    assert engine.all_orders(account.api_key, BTC) == []


@pytest.mark.parametrize("raw", ["not json", '{"symbol": "BTCUSDT"}', "[1, 2]"])
def test_batch_must_be_a_json_list_of_objects(engine: Engine, account: Account,
                                              raw: str) -> None:
    """batchOrders that is not a JSON list of objects answers -1130."""
    with pytest.raises(SimError) as excinfo:
        handlers.batch_orders(engine, account.api_key, {"batchOrders": raw})
    assert excinfo.value.code == -1130


def test_engine_batch_keeps_passed_errors(engine: Engine, account: Account) -> None:
    """Engine.place_batch places requests in turn and keeps parse errors where they were."""
    parse_error = SimError(400, -1102, "missing")
    results = engine.place_batch(account.api_key, [
        OrderRequest(BTC, "BUY", "MARKET", D("0.010")), parse_error,
        OrderRequest(BTC, "SELL", "MARKET", D("0.010"), client_order_id="x-2")])
    assert results[1] is parse_error
    assert account.position(BTC).amount == 0


def test_batch_items_accept_json_numbers_and_booleans(engine: Engine, account: Account) -> None:
    """Item values may be JSON numbers/booleans; they are read as the exchange's strings."""
    answers = batch(engine, account, {"symbol": BTC, "side": "BUY", "type": "MARKET",
                                      "quantity": 0.01, "reduceOnly": False})
    assert answers[0]["origQty"] == "0.010"
