"""``SimClock``: simulated time that runs at a chosen speed and jumps on request; ``Timeline``:
the price paths applied as that time moves.

It implements ``tradewire.clock.Clock`` and is a ``ManualClock`` (``advance``/``set``), so the
admin clock endpoint and ``Engine.advance_to`` work with it. ``speed`` 0 stands still between
jumps (a manual clock); 60 runs an hour a minute. Real time comes from an injectable
millisecond source, so tests drive it without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

from tradewire.clock import Clock, ManualClock
from tradewire.simulator.paths import Schedule


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class SimClock(ManualClock):
    """Simulated epoch milliseconds: ``anchor + (real elapsed) * speed``."""

    def __init__(self, start_ms: int | None = None, *, speed: float = 0.0,
                 real_ms: Callable[[], int] = _monotonic_ms) -> None:
        start = start_ms if start_ms is not None else time.time_ns() // 1_000_000
        super().__init__(start)
        if speed < 0:
            raise ValueError("speed must not be negative")
        self._real_ms = real_ms
        self._speed = speed
        self._anchor_sim = start
        self._anchor_real = real_ms()

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        """Change the pace from now on (time so far is kept)."""
        if speed < 0:
            raise ValueError("speed must not be negative")
        self._reanchor(self.now_ms())
        self._speed = speed

    def now_ms(self) -> int:
        elapsed = self._real_ms() - self._anchor_real
        return self._anchor_sim + int(elapsed * self._speed)

    def advance(self, ms: int) -> None:
        """Jump ``ms`` ahead at once."""
        self._reanchor(self.now_ms() + ms)

    def set(self, ms: int) -> None:
        self._reanchor(ms)

    def _reanchor(self, sim_ms: int) -> None:
        self._anchor_sim, self._anchor_real = sim_ms, self._real_ms()
        self._now = sim_ms


class Timeline:
    """Price paths attached to symbols, applied as the clock is moved (``advance_to``).

    ``on_step(symbol, price)`` moves a mark (fills, triggers, liquidations); ``on_time()`` lets
    time-driven work run (listenKey expiry). Both run with the clock at the step's time."""

    def __init__(self, clock: Clock, on_step: Callable[[str, Decimal], None],
                 on_time: Callable[[], None]) -> None:
        self.clock = clock
        self.schedule = Schedule()
        self._on_step = on_step
        self._on_time = on_time

    def advance_to(self, ms: int) -> None:
        """Every step due by ``ms`` in time order, then the clock to ``ms``."""
        for at, symbol, price in self.schedule.due(ms):
            self._move_clock(at)
            self._on_step(symbol, price)
            self._on_time()
        self._move_clock(ms)
        self._on_time()

    def _move_clock(self, ms: int) -> None:
        """Forward only; a clock already past ``ms`` (running faster) is left alone."""
        if ms <= self.clock.now_ms():
            return
        if not isinstance(self.clock, ManualClock):
            raise TypeError("moving time needs a ManualClock or SimClock")
        self.clock.set(ms)
