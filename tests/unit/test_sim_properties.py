"""Properties of the simulator engine under random orders, fills and mark moves."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimError, trailing
from tradewire.simulator.ledger import signed
from tradewire.simulator.model import Account, AlgoOrder, fires
from tradewire.simulator.params import AlgoRequest, OrderRequest

SYMBOLS = ("BTCUSDT", "ETHUSDT")
BASE = {"BTCUSDT": D("60000"), "ETHUSDT": D("3000")}
STEP = {"BTCUSDT": D("0.001"), "ETHUSDT": D("0.001")}
START_BALANCE = D("1000")
ALGO_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT",
              "TRAILING_STOP_MARKET")


@dataclass(frozen=True)
class Market:
    symbol: str
    side: str
    lots: int
    position_side: int  # index into the account's sides
    reduce_only: bool


@dataclass(frozen=True)
class Limit:
    symbol: str
    side: str
    lots: int
    position_side: int
    offset_bps: int  # limit price vs the mark


@dataclass(frozen=True)
class Mark:
    symbol: str
    move_bps: int


@dataclass(frozen=True)
class Algo:
    symbol: str
    kind: str
    side: str
    lots: int
    position_side: int
    offset_bps: int
    close_position: bool
    reduce_only: bool


@dataclass(frozen=True)
class Leverage:
    symbol: str
    value: int


@dataclass(frozen=True)
class Setting:
    symbol: str
    isolated: bool
    slippage_bps: int


symbols = st.sampled_from(SYMBOLS)
sides = st.sampled_from(("BUY", "SELL"))
lots = st.integers(1, 300)
actions = st.one_of(
    st.builds(Market, symbols, sides, lots, st.integers(0, 1), st.booleans()),
    st.builds(Limit, symbols, sides, lots, st.integers(0, 1), st.integers(-400, 400)),
    st.builds(Mark, symbols, st.integers(-600, 600)),
    st.builds(Mark, symbols, st.integers(-600, 600)),
    st.builds(Mark, symbols, st.integers(-600, 600)),
    st.builds(Algo, symbols, st.sampled_from(ALGO_TYPES), sides, lots, st.integers(0, 1),
              st.integers(-300, 300), st.booleans(), st.booleans()),
    st.builds(Leverage, symbols, st.sampled_from((1, 5, 20, 50, 125))),
    st.builds(Setting, symbols, st.booleans(), st.sampled_from((0, 0, 5, 30))),
)


def _price(engine: Engine, symbol: str, bps: int) -> D:
    moved = engine.mark_price(symbol) * (1 + D(bps) / 10_000)
    return engine.spec(symbol).to_tick(moved, up=False)


def _apply(engine: Engine, account: Account, action: object) -> None:
    key, sides_ = account.api_key, account.position_sides
    if isinstance(action, Market):
        engine.place_order(key, OrderRequest(
            action.symbol, action.side, "MARKET", action.lots * STEP[action.symbol],
            reduce_only=action.reduce_only,
            position_side=sides_[action.position_side % len(sides_)]))
    elif isinstance(action, Limit):
        engine.place_order(key, OrderRequest(
            action.symbol, action.side, "LIMIT", action.lots * STEP[action.symbol],
            _price(engine, action.symbol, action.offset_bps),
            position_side=sides_[action.position_side % len(sides_)]))
    elif isinstance(action, Algo):
        engine.place_algo_order(key, _algo_request(engine, account, action))
    elif isinstance(action, Leverage):
        engine.set_leverage(key, action.symbol, action.value)
    elif isinstance(action, Setting):
        engine.set_slippage(D(action.slippage_bps), action.symbol)
        engine.set_margin_type(key, action.symbol, "ISOLATED" if action.isolated else "CROSSED")


def _algo_request(engine: Engine, account: Account, action: Algo) -> AlgoRequest:
    sides_ = account.position_sides
    price = _price(engine, action.symbol, action.offset_bps)
    is_trailing = action.kind == "TRAILING_STOP_MARKET"
    close_position = action.close_position and action.kind in ("STOP_MARKET",
                                                               "TAKE_PROFIT_MARKET")
    return AlgoRequest(
        action.symbol, action.side, action.kind, None if is_trailing else price,
        quantity=None if close_position else action.lots * STEP[action.symbol],
        price=None if action.kind.endswith("_MARKET") else price,
        close_position=close_position,
        reduce_only=action.reduce_only and not close_position,
        position_side=sides_[action.position_side % len(sides_)],
        callback_rate=D(abs(action.offset_bps) % 50 + 1) / 10 if is_trailing else None,
        activate_price=price if is_trailing and action.offset_bps else None)


def _open_algos(engine: Engine, account: Account) -> list[AlgoOrder]:
    return engine.open_algo_orders(account.api_key)


def _check_triggers(engine: Engine, before: list[AlgoOrder], symbol: str) -> None:
    """Algo orders fired at this mark only on their firing side; the others did not meet it."""
    mark = engine.mark_price(symbol)
    for algo in (a for a in before if a.symbol == symbol):
        fired = algo.status not in ("NEW", "CANCELED", "EXPIRED")
        if algo.is_trailing:
            assert not fired or trailing.fires(algo, mark)
            assert fired or algo.status != "NEW" or not trailing.fires(algo, mark)
        else:
            rule = fires(algo.order_type, algo.side, algo.trigger_price, mark)
            assert rule if fired else (algo.status != "NEW" or not rule)


def _check_books(engine: Engine, account: Account) -> None:
    trades = [t for s in SYMBOLS for t in engine.user_trades(account.api_key, s)]
    for position in account.positions.values():
        mine = [t for t in trades if (t.symbol, t.position_side) == (position.symbol,
                                                                    position.side)]
        assert position.amount == sum((signed(t.side, t.qty) for t in mine), D(0))
        assert position.realized == sum((t.realized_pnl for t in mine), D(0))
        assert position.side != "LONG" or position.amount >= 0
        assert position.side != "SHORT" or position.amount <= 0
    moved = sum((t.realized_pnl - t.commission for t in trades), D(0))
    assert account.wallet == START_BALANCE + moved
    assert all(t.qty > 0 and t.price > 0 and t.commission >= 0 for t in trades)
    for symbol in SYMBOLS:
        for order in engine.all_orders(account.api_key, symbol):
            assert order.quantity > 0 and 0 <= order.executed_qty <= order.quantity
    assert all(a.quantity >= 0 for a in engine.open_algo_orders(account.api_key))


def _run(hedge_mode: bool, steps: list[object]) -> None:
    engine = Engine(ManualClock())
    account = engine.create_account(START_BALANCE)
    if hedge_mode:
        engine.set_position_mode(account.api_key, True)
    for action in steps:
        if isinstance(action, Mark):
            before = _open_algos(engine, account)
            engine.set_mark_price(action.symbol, _price(engine, action.symbol, action.move_bps))
            _check_triggers(engine, before, action.symbol)
        else:
            with contextlib.suppress(SimError):
                _apply(engine, account, action)
        _check_books(engine, account)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, max_size=60))
def test_one_way_books_balance(steps: list[object]) -> None:
    """One-way mode: positions are the signed sum of fills, the wallet moves exactly by
    realized PnL minus commissions, quantities stay positive, triggers fire on their side."""
    _run(False, steps)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, max_size=60))
def test_hedge_books_balance(steps: list[object]) -> None:
    """Hedge mode: the same, per (symbol, side); LONG never below 0, SHORT never above."""
    _run(True, steps)


def _first_trailing_fire(side: str, rate: D, activate: D | None, start: D,
                         prices: list[D]) -> int | None:
    """Reference rule (§5.3): the index of the first price at which the order fires."""
    seen: list[D] = [] if activate is not None else [start]
    for i, price in enumerate(prices):
        reached = activate is None or (price >= activate if side == "SELL" else price <= activate)
        if seen or reached:
            seen.append(price)
        if seen and side == "SELL" and price <= max(seen) * (1 - rate / 100):
            return i
        if seen and side == "BUY" and price >= min(seen) * (1 + rate / 100):
            return i
    return None


@settings(max_examples=200, deadline=None)
@given(sides, st.integers(1, 100), st.none() | st.integers(1, 300),
       st.lists(st.integers(-300, 300), min_size=1, max_size=30))
def test_trailing_fires_exactly_when_the_rule_says(side: str, rate_tenths: int,
                                                   activate_bps: int | None,
                                                   moves: list[int]) -> None:
    """A trailing stop fires at the first mark that is callbackRate back from the extreme
    since activation, never earlier and never on the wrong side."""
    clock = ManualClock()
    engine = Engine(clock)
    engine.liquidation = False
    account = engine.create_account(D("1000000"))
    symbol, rate = "BTCUSDT", D(rate_tenths) / 10
    start = engine.mark_price(symbol)
    activate = None
    if activate_bps is not None:
        activate = _price(engine, symbol, activate_bps if side == "SELL" else -activate_bps)
    algo = engine.place_algo_order(account.api_key, AlgoRequest(
        symbol, side, "TRAILING_STOP_MARKET", None, quantity=D("0.010"), callback_rate=rate,
        activate_price=activate))
    prices = []
    for move in moves:
        clock.advance(1)
        prices.append(_price(engine, symbol, move))
        engine.set_mark_price(symbol, prices[-1])
    expected = _first_trailing_fire(side, rate, activate, start, prices)
    fired_at = algo.trigger_time - clock.now_ms() + len(moves) - 1 if algo.trigger_time else None
    assert fired_at == expected
