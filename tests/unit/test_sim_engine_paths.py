"""The simulator's market and time: price paths, kline replay, SimClock, advance_to."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from tradewire.clock import ManualClock, SystemClock
from tradewire.simulator import Engine, handlers
from tradewire.simulator.params import AlgoRequest, OrderRequest
from tradewire.simulator.paths import Candle, KlineReplay, RandomWalk, Schedule, ScriptedPath
from tradewire.simulator.simclock import SimClock

BTC, ETH = "BTCUSDT", "ETHUSDT"
START = 1_767_000_000_000
HOUR, DAY = 3_600_000, 86_400_000
KLINES = """open_time,open,high,low,close,volume
1767000000000,60000,60500,59800,60300,12.5
1767000060000,60300,60400,59500,59600,8.1
"""


class FakeReal:
    """A real-time source the test moves by hand."""

    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def engine(clock: ManualClock) -> Engine:
    return Engine(clock)


def test_scripted_path_applies_steps_as_time_passes(engine: Engine, clock: ManualClock) -> None:
    """Steps apply when the clock reaches their offset, not before."""
    engine.attach_path(BTC, ScriptedPath([(1000, D("60100")), (5000, D("60200"))]))
    engine.advance(999)
    assert engine.mark_price(BTC) == D("60000")
    engine.advance(1)
    assert engine.mark_price(BTC) == D("60100")
    engine.advance_to(START + 10_000)
    assert (engine.mark_price(BTC), clock.now_ms()) == (D("60200"), START + 10_000)


def test_steps_run_at_their_own_time_and_in_time_order(engine: Engine) -> None:
    """Fills and triggers happen at the step's time; steps of two symbols interleave by time."""
    account = engine.create_account()
    engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "MARKET", D("0.010")))
    engine.place_algo_order(account.api_key, AlgoRequest(
        BTC, "SELL", "STOP_MARKET", D("59000"), quantity=D("0.010"), reduce_only=True))
    engine.drain_events()
    engine.attach_path(ETH, ScriptedPath([(1000, D("3010")), (3000, D("3030"))]))
    engine.attach_path(BTC, ScriptedPath([(2000, D("59500")), (4000, D("58900"))]))
    engine.advance(HOUR)
    (trade,) = engine.user_trades(account.api_key, BTC)[1:]
    assert (trade.time, trade.price) == (START + 4000, D("58900"))
    assert engine.mark_price(ETH) == D("3030")


def test_schedule_merges_paths_by_time() -> None:
    """Schedule.due yields (time, symbol, price) across symbols, earliest first."""
    schedule = Schedule()
    schedule.attach(BTC, ScriptedPath([(0, D("1")), (20, D("2"))]), 100, D("5"))
    schedule.attach(ETH, ScriptedPath([(10, D("3")), (20, D("4"))]), 100, D("5"))
    assert list(schedule.due(120)) == [(100, BTC, D("1")), (110, ETH, D("3")),
                                       (120, BTC, D("2")), (120, ETH, D("4"))]
    assert schedule.next_time() is None


def test_random_walk_is_seeded_and_on_the_tick(engine: Engine) -> None:
    """The same seed gives the same walk; prices are positive and on the 0.10 tick."""
    walk = RandomWalk(seed=7, volatility=0.002, step_ms=1000, count=50)
    first = list(walk.steps(D("60000")))
    assert first == list(walk.steps(D("60000")))
    assert first != list(RandomWalk(seed=8, volatility=0.002, step_ms=1000,
                                    count=50).steps(D("60000")))
    assert [t for t, _ in first[:3]] == [1000, 2000, 3000]
    engine.attach_path(BTC, walk)
    engine.advance(50_000)
    mark = engine.mark_price(BTC)
    assert mark > 0 and mark % D("0.10") == 0 and mark != D("60000")


def test_random_walk_without_volatility_stays_put() -> None:
    """Zero volatility and drift keep the start price."""
    steps = list(RandomWalk(seed=1, volatility=0.0, step_ms=60_000, count=3).steps(D("150")))
    assert [p for _, p in steps] == [D("150")] * 3


def test_kline_replay_walks_each_candle(engine: Engine) -> None:
    """A rising candle walks O-L-H-C, a falling one O-H-L-C, a quarter interval apart."""
    replay = KlineReplay.from_csv(KLINES)
    assert list(replay.steps(D("0"))) == [
        (0, D("60000")), (15_000, D("59800")), (30_000, D("60500")), (45_000, D("60300")),
        (60_000, D("60300")), (75_000, D("60400")), (90_000, D("59500")), (105_000, D("59600"))]
    engine.attach_path(BTC, replay, start_ms=START)
    engine.advance_to(START + 90_000)
    assert engine.mark_price(BTC) == D("59500")


def test_kline_replay_needs_rows() -> None:
    """A CSV without kline rows is refused; a single candle defaults to one minute."""
    with pytest.raises(ValueError, match="no kline rows"):
        KlineReplay.from_csv("open_time,open\n")
    single = KlineReplay([Candle(0, D("1"), D("2"), D("1"), D("2"))])
    assert single.interval == 60_000


def test_scripted_steps_must_be_ordered() -> None:
    """Offsets going backwards are refused."""
    with pytest.raises(ValueError, match="non-decreasing"):
        ScriptedPath([(1000, D("1")), (500, D("2"))])


def test_crossing_24_hours_expires_listen_keys_on_time(engine: Engine) -> None:
    """advance(24 h) runs listenKey expiry at the step times: the key dies after 60 min."""
    account = engine.create_account()
    key = engine.start_listen_key(account.api_key)
    engine.attach_path(BTC, RandomWalk(seed=3, volatility=0.001, step_ms=60_000))
    engine.advance(DAY)
    (expired,) = [d.payload for d in engine.drain_events()]
    assert expired == {"e": "listenKeyExpired", "E": START + HOUR, "listenKey": key}


def test_sim_clock_runs_at_its_speed_and_jumps() -> None:
    """speed 60 turns a real second into a simulated minute; advance jumps; set_speed keeps
    the time reached."""
    real = FakeReal()
    clock = SimClock(START, speed=60, real_ms=real)
    real.ms = 1000
    assert clock.now_ms() == START + 60_000
    clock.advance(HOUR)
    assert clock.now_ms() == START + 60_000 + HOUR
    clock.set_speed(0)
    real.ms = 5000
    assert clock.now_ms() == START + 60_000 + HOUR
    with pytest.raises(ValueError):
        SimClock(START, speed=-1)


def test_sim_clock_drives_paths_in_real_time() -> None:
    """With a running SimClock, advance_to(now) applies the steps whose time has come."""
    real = FakeReal()
    clock = SimClock(START, speed=3600, real_ms=real)
    engine = Engine(clock)
    engine.attach_path(BTC, ScriptedPath([(HOUR, D("61000")), (2 * HOUR, D("62000"))]))
    real.ms = 1000  # one simulated hour
    engine.advance_to(clock.now_ms())
    assert engine.mark_price(BTC) == D("61000")
    handlers.admin_clock_speed(engine, {"speed": "0"})
    assert clock.speed == 0


def test_advance_needs_a_settable_clock() -> None:
    """Moving time forward on the system clock is a TypeError."""
    engine = Engine(SystemClock())
    with pytest.raises(TypeError):
        engine.advance(1000)


def test_admin_path_and_advance_handlers(engine: Engine, clock: ManualClock) -> None:
    """POST /sim/paths attaches scripted, random-walk or kline paths; /sim/clock/advance
    applies them."""
    answer = handlers.admin_attach_path(engine, {"symbol": BTC, "kind": "scripted",
                                                 "steps": [[1000, "60100"]]})
    assert answer == {"symbol": BTC, "kind": "scripted", "next_step_ms": START + 1000}
    assert handlers.admin_advance(engine, {"ms": 1000}) == {"now": START + 1000}
    assert engine.mark_price(BTC) == D("60100")
    handlers.admin_attach_path(engine, {"symbol": ETH, "kind": "random_walk", "seed": 1,
                                        "volatility": 0.001, "step_ms": 1000, "count": 2})
    handlers.admin_attach_path(engine, {"symbol": BTC, "kind": "klines", "csv": KLINES,
                                        "start_ms": START + 2000})
    assert handlers.admin_advance(engine, {"to": START + 2000}) == {"now": START + 2000}
    assert engine.mark_price(BTC) == D("60000")
    engine.detach_path(BTC)
    for bad in ({"symbol": BTC, "kind": "sine"}, {"symbol": BTC, "kind": "scripted"}):
        with pytest.raises(ValueError):
            handlers.admin_attach_path(engine, bad)
