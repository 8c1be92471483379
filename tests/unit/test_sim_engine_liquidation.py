"""The simulator's liquidation: below maintenance margin at a mark move, positions close."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, handlers
from tradewire.simulator.model import Account
from tradewire.simulator.params import AlgoRequest, OrderRequest

BTC, ETH = "BTCUSDT", "ETHUSDT"


@pytest.fixture
def engine() -> Engine:
    return Engine(ManualClock())


@pytest.fixture
def trader(engine: Engine) -> Account:
    """1000 USDT, 50x, long 0.5 BTC at 60000: liquidation price 58257.03 (cross)."""
    account = engine.create_account(D("1000"))
    engine.set_leverage(account.api_key, BTC, 50)
    engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "MARKET", D("0.500")))
    engine.drain_events()
    return account


def summary(payloads: list[dict[str, Any]]) -> list[str]:
    out = []
    for payload in payloads:
        inner: dict[str, Any] = payload.get("o") or {}
        if payload["e"] == "ORDER_TRADE_UPDATE":
            out.append(f"{payload['e']} {inner['x']} {inner['X']}")
        else:
            out.append(f"{payload['e']} {inner['X']}" if inner else payload["e"])
    return out


def test_liquidation_price_is_reported(engine: Engine, trader: Account) -> None:
    """positionRisk shows where margin balance meets the 0.4 % maintenance margin."""
    (row,) = handlers.position_rows(engine, trader.api_key, BTC, version=2)
    assert row["liquidationPrice"] == "58257.02811245"


def test_no_liquidation_above_maintenance(engine: Engine, trader: Account) -> None:
    """A drop that leaves margin above maintenance changes nothing."""
    engine.set_mark_price(BTC, D("58300"))
    assert trader.position(BTC).amount == D("0.500")
    assert engine.drain_events() == []


def test_cross_liquidation_closes_with_an_autoclose_order(engine: Engine,
                                                          trader: Account) -> None:
    """Below maintenance the position closes at the mark by a LIQUIDATION order: NEW, then
    ACCOUNT_UPDATE, then CALCULATED/FILLED with rp and commission."""
    engine.set_mark_price(BTC, D("58200"))
    payloads = [d.payload for d in engine.drain_events()]
    assert summary(payloads) == ["ORDER_TRADE_UPDATE NEW NEW", "ACCOUNT_UPDATE",
                                 "ORDER_TRADE_UPDATE CALCULATED FILLED"]
    new, done = payloads[0]["o"], payloads[2]["o"]
    assert new["c"].startswith("autoclose-") and new["c"] == done["c"]
    assert (new["o"], new["S"], new["f"], new["R"]) == ("LIQUIDATION", "SELL", "IOC", True)
    assert (done["L"], done["l"], done["rp"], done["n"]) == (
        "58200.00", "0.500", "-900.00000000", "11.64000000")
    assert payloads[1]["a"]["P"][0]["pa"] == "0"
    assert trader.position(BTC).amount == 0
    assert trader.wallet == D("1000") - 12 - 900 - D("11.64")


def test_liquidation_expires_orders_and_algo_orders(engine: Engine, trader: Account) -> None:
    """The symbol's open LIMIT orders EXPIRE (er 5) and its algo orders EXPIRE first."""
    engine.set_leverage(trader.api_key, BTC, 125)
    engine.place_order(trader.api_key, OrderRequest(BTC, "BUY", "LIMIT", D("0.010"),
                                                    D("57500")))
    engine.place_algo_order(trader.api_key, AlgoRequest(
        BTC, "SELL", "TAKE_PROFIT_MARKET", D("65000"), close_position=True))
    engine.drain_events()
    engine.set_mark_price(BTC, D("58200"))
    payloads = [d.payload for d in engine.drain_events()]
    assert summary(payloads)[:2] == ["ORDER_TRADE_UPDATE EXPIRED EXPIRED", "ALGO_UPDATE EXPIRED"]
    assert payloads[0]["o"]["er"] == "5"
    assert engine.open_orders(trader.api_key) == []
    assert engine.open_algo_orders(trader.api_key) == []


def test_isolated_liquidation_leaves_the_cross_wallet_alone(engine: Engine) -> None:
    """An ISOLATED position is liquidated on its own margin (20x: 5 % move, less maintenance);
    the cross wallet only loses what the isolated wallet held and the fees."""
    account = engine.create_account(D("10000"))
    engine.set_margin_type(account.api_key, BTC, "ISOLATED")
    engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "MARKET", D("0.100")))
    assert account.position(BTC).isolated_wallet == D("300")
    engine.set_mark_price(BTC, D("57200"))  # 300 - 280 = 20 < 22.88
    assert account.position(BTC).amount == 0
    assert account.position(BTC).isolated_wallet == 0
    assert account.wallet == D("10000") - D("2.4") - 280 - D("2.288")


def test_cross_liquidation_closes_the_moved_symbol_first(engine: Engine) -> None:
    """With two cross positions, closing the one whose mark moved can be enough."""
    account = engine.create_account(D("1000"))
    engine.set_leverage(account.api_key, BTC, 50)
    engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "MARKET", D("0.500")))
    engine.place_order(account.api_key, OrderRequest(ETH, "BUY", "MARKET", D("0.100")))
    engine.set_mark_price(BTC, D("58150"))
    assert (account.position(BTC).amount, account.position(ETH).amount) == (D(0), D("0.100"))


def test_hedge_positions_liquidate_per_side(engine: Engine) -> None:
    """In hedge mode the liquidation order carries the position's side."""
    account = engine.create_account(D("1000"))
    engine.set_position_mode(account.api_key, True)
    engine.set_leverage(account.api_key, BTC, 50)
    engine.place_order(account.api_key, OrderRequest(BTC, "SELL", "MARKET", D("0.500"),
                                                     position_side="SHORT"))
    engine.drain_events()
    engine.set_mark_price(BTC, D("61800"))
    new = engine.drain_events()[0].payload["o"]
    assert (new["o"], new["S"], new["ps"]) == ("LIQUIDATION", "BUY", "SHORT")
    assert account.position(BTC, "SHORT").amount == 0


def test_liquidation_can_be_switched_off(engine: Engine, trader: Account) -> None:
    """With liquidation off (admin), the position survives any mark."""
    handlers.admin_liquidation(engine, {"enabled": False})
    engine.set_mark_price(BTC, D("50000"))
    assert trader.position(BTC).amount == D("0.500")
    with pytest.raises(ValueError, match="enabled"):
        handlers.admin_liquidation(engine, {"enabled": "no"})
