"""ConnectBudget: never more than ``attempts`` connection attempts in any sliding window, waiters
are let in as soon as the oldest attempt leaves the window, first come first served.

Simulated time: the injected sleep advances the injected clock (and yields to the loop).
"""

from __future__ import annotations

import asyncio

import pytest

from tradewire.streams.connect_budget import ConnectBudget


class SimTime:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


def budget(attempts: int = 3, window_s: float = 10.0) -> tuple[ConnectBudget, SimTime]:
    sim = SimTime()
    return ConnectBudget(attempts, window_s, now=sim.now, sleep=sim.sleep), sim


def test_try_acquire_fits_attempts_per_window() -> None:
    """Three attempts fit, a fourth not; one more fits when the oldest leaves the window."""
    b, sim = budget()
    assert b.try_acquire()
    sim.t = 1004.0
    assert [b.try_acquire() for _ in range(3)] == [True, True, False]
    assert b.available() == 0
    assert b.wait_s() == pytest.approx(6.0)
    sim.t = 1009.5
    assert not b.try_acquire()
    sim.t = 1010.0  # the first attempt is exactly window_s old: out of the window
    assert b.available() == 1
    assert b.try_acquire()
    assert not b.try_acquire()
    assert b.wait_s() == pytest.approx(4.0)


async def test_acquire_waits_for_room_and_never_exceeds_the_window() -> None:
    """Ten acquisitions through a budget of 3 per 10 s: each one is let in as soon as room
    appears, and no 10 s window ever holds more than 3 attempts."""
    b, sim = budget()
    times: list[float] = []
    for _ in range(10):
        await b.acquire()
        times.append(sim.t)
    assert times[:3] == [1000.0] * 3
    assert times[3:6] == [1010.0] * 3
    assert times[9] == 1030.0
    for i, t in enumerate(times):
        assert sum(1 for u in times if t - 10.0 < u <= t) <= 3, i
    assert b.waited == 3  # the 4th, 7th and 10th waited; the others found room at once
    assert b.waited == sum(1 for s in sim.slept if s > 0)


async def test_waiters_are_served_in_arrival_order_and_try_acquire_does_not_jump() -> None:
    """Waiters queue in arrival order; ``try_acquire`` does not overtake a queued waiter."""
    b, sim = budget(attempts=1, window_s=5.0)
    assert b.try_acquire()
    order: list[int] = []

    async def connect(n: int) -> None:
        await b.acquire()
        order.append(n)

    tasks = [asyncio.create_task(connect(n)) for n in range(4)]
    await asyncio.sleep(0)
    assert not b.try_acquire()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert sim.t == pytest.approx(1020.0)


async def test_the_real_clock_and_sleep_are_the_defaults() -> None:
    b = ConnectBudget(2, 0.05)
    await b.acquire()
    await b.acquire()
    assert not b.try_acquire()
    await b.acquire()  # waits ~50 ms of real time, until the first two leave the window
    assert b.available() == 1


@pytest.mark.parametrize(("attempts", "window_s"), [(0, 10.0), (3, 0.0)])
def test_invalid_budgets_are_refused(attempts: int, window_s: float) -> None:
    with pytest.raises(ValueError):
        ConnectBudget(attempts, window_s)
