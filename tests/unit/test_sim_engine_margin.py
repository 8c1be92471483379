"""The simulator's fills with slippage, and ISOLATED/CROSSED margin per symbol."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimError, handlers, views
from tradewire.simulator.model import Account
from tradewire.simulator.params import AlgoRequest, OrderRequest

BTC, ETH = "BTCUSDT", "ETHUSDT"


@pytest.fixture
def engine() -> Engine:
    return Engine(ManualClock())


@pytest.fixture
def account(engine: Engine) -> Account:
    return engine.create_account(D("10000"))


def fill(engine: Engine, account: Account, side: str, qty: str, *, symbol: str = BTC,
         price: str | None = None) -> D:
    """Place a MARKET (or LIMIT with ``price``) order and return its average fill price."""
    kind = "LIMIT" if price else "MARKET"
    placed = engine.place_order(account.api_key, OrderRequest(
        symbol, side, kind, D(qty), D(price) if price else None, resp_type="RESULT"))
    return placed.avg_price


# -- slippage --------------------------------------------------------------------------------

def test_no_slippage_by_default(engine: Engine, account: Account) -> None:
    """Without a setting, takers fill exactly at the mark."""
    assert fill(engine, account, "BUY", "0.010") == D("60000")


def test_global_slippage_moves_fills_against_the_taker(engine: Engine, account: Account) -> None:
    """10 bps: a BUY fills 0.1 % above the mark, a SELL 0.1 % below; the fee follows the price."""
    engine.set_slippage(D("10"))
    assert fill(engine, account, "BUY", "0.010") == D("60060")
    assert fill(engine, account, "SELL", "0.010") == D("59940")
    assert account.position(BTC).realized == D("-1.2")


def test_symbol_slippage_overrides_the_global_one(engine: Engine, account: Account) -> None:
    """A per-symbol setting wins over the global one; other symbols keep the global one."""
    engine.set_slippage(D("10"))
    engine.set_slippage(D("0"), BTC)
    assert fill(engine, account, "BUY", "0.010") == D("60000")
    assert fill(engine, account, "BUY", "0.010", symbol=ETH) == D("3003")


def test_slippage_rounds_to_the_tick_away_from_the_taker(engine: Engine,
                                                         account: Account) -> None:
    """1 bp of 60000.3 is 6.00003: a BUY pays 60006.40 (next tick up), a SELL gets 59994.20."""
    engine.set_mark_price(BTC, D("60000.3"))
    engine.set_slippage(D("1"), BTC)
    assert fill(engine, account, "BUY", "0.010") == D("60006.4")
    assert fill(engine, account, "SELL", "0.010") == D("59994.2")


def test_slippage_never_passes_a_limit_price(engine: Engine, account: Account) -> None:
    """A marketable LIMIT fills at the slipped mark, but no worse than its price."""
    engine.set_slippage(D("50"))
    assert fill(engine, account, "BUY", "0.010", price="60100") == D("60100")
    assert fill(engine, account, "BUY", "0.010", price="60500") == D("60300")


def test_resting_limit_fills_at_its_price_despite_slippage(engine: Engine,
                                                           account: Account) -> None:
    """Makers are not slipped: a resting BUY LIMIT fills at its own price."""
    engine.set_slippage(D("50"))
    engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "LIMIT", D("0.010"),
                                                     D("59000")))
    engine.set_mark_price(BTC, D("58000"))
    assert account.position(BTC).entry_price == D("59000")


def test_negative_slippage_is_refused(engine: Engine) -> None:
    """Slippage is a cost: a negative value raises ValueError."""
    with pytest.raises(ValueError, match="negative"):
        engine.set_slippage(D("-1"))


def test_slippage_admin_handler(engine: Engine, account: Account) -> None:
    """POST /sim/slippage {"bps", "symbol"} sets a symbol's slippage."""
    assert handlers.admin_slippage(engine, {"bps": "20", "symbol": BTC}) == {
        "symbol": BTC, "bps": "20"}
    assert fill(engine, account, "BUY", "0.010") == D("60120")


# -- margin type -----------------------------------------------------------------------------

def test_margin_type_switch_and_no_change(engine: Engine, account: Account) -> None:
    """ISOLATED is set per symbol; setting the current type again answers -4046."""
    answer = handlers.set_margin_type(engine, account.api_key,
                                      {"symbol": BTC, "marginType": "ISOLATED"})
    assert answer == {"code": 200, "msg": "success"}
    assert (account.margin_type(BTC), account.margin_type(ETH)) == ("ISOLATED", "CROSSED")
    with pytest.raises(SimError) as excinfo:
        engine.set_margin_type(account.api_key, BTC, "ISOLATED")
    assert (excinfo.value.code, excinfo.value.msg) == (-4046, "No need to change margin type.")


def test_margin_type_refused_with_open_orders_or_position(engine: Engine,
                                                          account: Account) -> None:
    """Open orders (algo ones too) answer -4047, a position -4048; other symbols are free."""
    engine.place_algo_order(account.api_key, AlgoRequest(BTC, "SELL", "STOP_MARKET", D("58000"),
                                                         quantity=D("0.010")))
    with pytest.raises(SimError) as orders:
        engine.set_margin_type(account.api_key, BTC, "ISOLATED")
    engine.cancel_all_algo_orders(account.api_key, BTC)
    fill(engine, account, "BUY", "0.010")
    with pytest.raises(SimError) as position:
        engine.set_margin_type(account.api_key, BTC, "ISOLATED")
    engine.set_margin_type(account.api_key, ETH, "ISOLATED")
    assert (orders.value.code, position.value.code) == (-4047, -4048)
    assert position.value.msg == "Margin type cannot be changed if there exists position."


def test_isolated_position_holds_its_margin(engine: Engine, account: Account) -> None:
    """Opening ISOLATED moves notional/leverage into the isolated wallet: the events show
    mt=isolated and iw, cw excludes it, and closing half releases half."""
    engine.set_margin_type(account.api_key, BTC, "ISOLATED")
    engine.set_leverage(account.api_key, BTC, 10)
    engine.drain_events()
    fill(engine, account, "BUY", "0.020")  # 1200 notional -> 120 isolated
    (update,) = [d.payload for d in engine.drain_events() if d.payload["e"] == "ACCOUNT_UPDATE"]
    balance, entry = update["a"]["B"][0], update["a"]["P"][0]
    assert (entry["mt"], entry["iw"]) == ("isolated", "120.00000000")
    assert (balance["wb"], balance["cw"]) == ("9999.52000000", "9879.52000000")
    fill(engine, account, "SELL", "0.010")
    assert account.position(BTC).isolated_wallet == D("60")
    fill(engine, account, "SELL", "0.010")
    assert account.position(BTC).isolated_wallet == 0


def test_isolated_rows_and_available_balance(engine: Engine, account: Account) -> None:
    """positionRisk shows marginType isolated, isolatedWallet and isolatedMargin (wallet + PnL);
    the isolated PnL does not count towards the available balance."""
    engine.set_margin_type(account.api_key, BTC, "ISOLATED")
    fill(engine, account, "BUY", "0.020")  # 20x: 60 isolated, fee 0.48
    engine.set_mark_price(BTC, D("61000"))
    (row,) = handlers.position_rows(engine, account.api_key, BTC, version=2)
    assert (row["marginType"], row["isolated"], row["isolatedWallet"], row["isolatedMargin"]) == (
        "isolated", True, "60.00000000", "80.00000000")
    assert engine.available_balance(account.api_key) == D("10000") - D("0.48") - 60
    (balance,) = views.balance_body(account, D(0), D(0))
    assert balance["crossWalletBalance"] == "9939.52000000"


def test_tiered_maintenance_margin_in_position_risk(engine: Engine) -> None:
    """maintMargin follows the bracket: 0.4 % of BTC notional up to 50k, then 0.5 % - 50."""
    rich = engine.create_account(D("100000"))
    fill(engine, rich, "BUY", "0.500")  # 30000 notional
    (small,) = handlers.position_rows(engine, rich.api_key, BTC, version=3)
    fill(engine, rich, "BUY", "0.500")  # 60000 notional
    (large,) = handlers.position_rows(engine, rich.api_key, BTC, version=3)
    assert (small["maintMargin"], large["maintMargin"]) == ("120.00000000", "250.00000000")
