"""The simulator in hedge mode: position mode switch, positions per side, order rules."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimError, handlers
from tradewire.simulator.model import Account
from tradewire.simulator.params import AlgoRequest, OrderRequest, parse_order

BTC = "BTCUSDT"


@pytest.fixture
def engine() -> Engine:
    return Engine(ManualClock())


@pytest.fixture
def account(engine: Engine) -> Account:
    return engine.create_account(D("10000"))


@pytest.fixture
def hedged(engine: Engine, account: Account) -> Account:
    engine.set_position_mode(account.api_key, True)
    return account


def order(engine: Engine, account: Account, side: str, qty: str, position_side: str, *,
          reduce_only: bool = False) -> None:
    engine.place_order(account.api_key, OrderRequest(
        BTC, side, "MARKET", D(qty), reduce_only=reduce_only, position_side=position_side))


def code(excinfo: pytest.ExceptionInfo[SimError]) -> tuple[int, str]:
    return excinfo.value.code, excinfo.value.msg


def test_position_mode_switch_and_no_change(engine: Engine, account: Account) -> None:
    """dualSidePosition flips the account to hedge mode; asking for the current mode is -4059."""
    assert engine.position_mode(account.api_key) is False
    engine.set_position_mode(account.api_key, True)
    assert engine.position_mode(account.api_key) is True
    with pytest.raises(SimError) as excinfo:
        engine.set_position_mode(account.api_key, True)
    assert code(excinfo) == (-4059, "No need to change position side.")


def test_position_mode_refused_with_open_orders(engine: Engine, account: Account) -> None:
    """An open LIMIT order (or algo order) blocks the switch with -4067."""
    engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "LIMIT", D("0.010"),
                                                     D("59000")))
    with pytest.raises(SimError) as excinfo:
        engine.set_position_mode(account.api_key, True)
    assert code(excinfo) == (-4067, "Position side cannot be changed if there exists open orders.")
    engine.cancel_all_orders(account.api_key, BTC)
    engine.place_algo_order(account.api_key, AlgoRequest(BTC, "SELL", "STOP_MARKET", D("58000"),
                                                         quantity=D("0.010")))
    with pytest.raises(SimError) as algo_open:
        engine.set_position_mode(account.api_key, True)
    assert algo_open.value.code == -4067


def test_position_mode_refused_with_a_position(engine: Engine, account: Account) -> None:
    """Any open position blocks the switch with -4068."""
    order(engine, account, "BUY", "0.010", "BOTH")
    with pytest.raises(SimError) as excinfo:
        engine.set_position_mode(account.api_key, True)
    assert code(excinfo) == (-4068, "Position side cannot be changed if there exists position.")


def test_long_and_short_are_separate_positions(engine: Engine, hedged: Account) -> None:
    """BUY LONG and SELL SHORT open two positions of one symbol; each has its own entry."""
    order(engine, hedged, "BUY", "0.010", "LONG")
    engine.set_mark_price(BTC, D("61000"))
    order(engine, hedged, "SELL", "0.020", "SHORT")
    long, short = hedged.position(BTC, "LONG"), hedged.position(BTC, "SHORT")
    assert (long.amount, long.entry_price) == (D("0.010"), D("60000"))
    assert (short.amount, short.entry_price) == (D("-0.020"), D("61000"))
    assert [p.side for p in engine.positions(hedged.api_key)] == ["LONG", "SHORT"]


def test_closing_a_side_realizes_its_pnl_only(engine: Engine, hedged: Account) -> None:
    """SELL LONG closes the long at a profit; the short stays as it was."""
    order(engine, hedged, "BUY", "0.010", "LONG")
    order(engine, hedged, "SELL", "0.010", "SHORT")
    engine.set_mark_price(BTC, D("62000"))
    order(engine, hedged, "SELL", "0.010", "LONG")
    assert hedged.position(BTC, "LONG").realized == D("20")
    assert hedged.position(BTC, "SHORT").amount == D("-0.010")


def test_closing_order_is_capped_and_never_flips(engine: Engine, hedged: Account) -> None:
    """A SELL LONG larger than the long fills the long only and expires the rest; with no
    long at all it is rejected (-2022)."""
    order(engine, hedged, "BUY", "0.010", "LONG")
    result = engine.place_order(hedged.api_key, OrderRequest(
        BTC, "SELL", "MARKET", D("0.030"), position_side="LONG", resp_type="RESULT"))
    assert (result.executed_qty, result.status) == (D("0.010"), "EXPIRED")
    assert hedged.position(BTC, "LONG").amount == 0
    assert hedged.position(BTC, "SHORT").amount == 0
    with pytest.raises(SimError) as excinfo:
        order(engine, hedged, "SELL", "0.010", "LONG")
    assert excinfo.value.code == -2022


@pytest.mark.parametrize(("dual", "position_side"),
                         [(True, "BOTH"), (False, "LONG"), (False, "SHORT")])
def test_position_side_must_match_the_mode(engine: Engine, account: Account, dual: bool,
                                           position_side: str) -> None:
    """BOTH only in one-way mode, LONG/SHORT only in hedge mode: otherwise -4061."""
    if dual:
        engine.set_position_mode(account.api_key, True)
    with pytest.raises(SimError) as excinfo:
        order(engine, account, "BUY", "0.010", position_side)
    assert code(excinfo) == (-4061, "Order's position side does not match user's setting.")


def test_reduce_only_is_refused_in_hedge_mode(engine: Engine, hedged: Account) -> None:
    """reduceOnly is a parameter not required in hedge mode (-1106), for orders and algos."""
    with pytest.raises(SimError) as plain:
        order(engine, hedged, "SELL", "0.010", "LONG", reduce_only=True)
    with pytest.raises(SimError) as algo:
        engine.place_algo_order(hedged.api_key, AlgoRequest(
            BTC, "SELL", "STOP_MARKET", D("58000"), quantity=D("0.010"), reduce_only=True,
            position_side="LONG"))
    assert code(plain) == code(algo) == (-1106, "Parameter 'reduceOnly' sent when not required.")


def test_unknown_position_side_is_4060() -> None:
    """A positionSide other than BOTH/LONG/SHORT answers -4060 at parse time."""
    params = {"symbol": BTC, "side": "BUY", "type": "MARKET", "quantity": "0.01",
              "positionSide": "UP"}
    with pytest.raises(SimError) as excinfo:
        parse_order(params)
    assert code(excinfo) == (-4060, "Invalid position side.")


@pytest.mark.parametrize(("side", "position_side", "allowed"),
                         [("SELL", "LONG", True), ("BUY", "SHORT", True),
                          ("BUY", "LONG", False), ("SELL", "SHORT", False)])
def test_close_position_must_close_its_own_side(engine: Engine, hedged: Account, side: str,
                                                position_side: str, allowed: bool) -> None:
    """closePosition: SELL with LONG and BUY with SHORT; BUY LONG / SELL SHORT are refused."""
    trigger = D("58000") if side == "SELL" else D("62000")
    request = AlgoRequest(BTC, side, "STOP_MARKET", trigger, close_position=True,
                          position_side=position_side)
    if allowed:
        assert engine.place_algo_order(hedged.api_key, request).position_side == position_side
    else:
        with pytest.raises(SimError) as excinfo:
            engine.place_algo_order(hedged.api_key, request)
        assert excinfo.value.code == -2022


def test_close_position_stop_closes_only_its_side(engine: Engine, hedged: Account) -> None:
    """A SELL LONG closePosition stop closes the long at trigger and expires no SHORT order."""
    order(engine, hedged, "BUY", "0.020", "LONG")
    order(engine, hedged, "SELL", "0.010", "SHORT")
    stop = engine.place_algo_order(hedged.api_key, AlgoRequest(
        BTC, "SELL", "STOP_MARKET", D("59000"), close_position=True, position_side="LONG"))
    short_tp = engine.place_algo_order(hedged.api_key, AlgoRequest(
        BTC, "BUY", "TAKE_PROFIT_MARKET", D("55000"), close_position=True,
        position_side="SHORT"))
    engine.set_mark_price(BTC, D("58900"))
    assert (stop.status, stop.executed_qty) == ("FINISHED", D("0.020"))
    assert hedged.position(BTC, "LONG").amount == 0
    assert short_tp.status == "NEW"


def test_events_and_rows_carry_the_position_side(engine: Engine, hedged: Account) -> None:
    """ORDER_TRADE_UPDATE ps, ACCOUNT_UPDATE P[].ps, userTrades and positionRisk rows are per
    side; positionRisk v2 lists LONG and SHORT of every symbol."""
    engine.drain_events()
    order(engine, hedged, "SELL", "0.010", "SHORT")
    payloads = [d.payload for d in engine.drain_events()]
    assert {p["o"]["ps"] for p in payloads if p["e"] == "ORDER_TRADE_UPDATE"} == {"SHORT"}
    (update,) = [p for p in payloads if p["e"] == "ACCOUNT_UPDATE"]
    assert (update["a"]["P"][0]["ps"], update["a"]["P"][0]["pa"]) == ("SHORT", "-0.010")
    assert engine.user_trades(hedged.api_key, BTC)[0].position_side == "SHORT"
    v3 = handlers.position_rows(engine, hedged.api_key, None, version=3)
    assert [(r["symbol"], r["positionSide"], r["positionAmt"]) for r in v3] == [
        (BTC, "SHORT", "-0.010")]
    v2 = handlers.position_rows(engine, hedged.api_key, BTC, version=2)
    assert [r["positionSide"] for r in v2] == ["LONG", "SHORT"]


def test_position_mode_rest_handlers(engine: Engine, account: Account) -> None:
    """POST positionSide/dual answers success; GET reports dualSidePosition."""
    answer = handlers.set_position_mode(engine, account.api_key, {"dualSidePosition": "true"})
    assert answer == {"code": 200, "msg": "success"}
    assert handlers.get_position_mode(engine, account.api_key, {}) == {"dualSidePosition": True}
    with pytest.raises(SimError) as missing:
        handlers.set_position_mode(engine, account.api_key, {})
    assert missing.value.code == -1102
