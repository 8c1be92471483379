"""Connection-attempt budget of one egress IP: at most ``attempts`` WebSocket connection
attempts in any sliding window of ``window_s`` seconds (exchange limit: 300 per 5 minutes per
IP). One instance is shared by every connection of the process; every attempt, successful or
not, spends one unit.

``acquire`` waits (first come, first served) until one more attempt fits, then records it;
``try_acquire`` records it only if it fits now. The clock and the sleep are injectable so tests
run on simulated time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable


class ConnectBudget:
    """Sliding window of attempt times; never lets more than ``attempts`` into one window."""

    def __init__(
        self,
        attempts: int = 300,
        window_s: float = 300.0,
        *,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if attempts < 1 or window_s <= 0:
            raise ValueError("attempts must be >= 1 and window_s > 0")
        self.attempts = attempts
        self.window_s = window_s
        self._now = now
        self._sleep = sleep
        self._times: deque[float] = deque()
        self._queue = asyncio.Lock()  # waiters are served in arrival order
        self.waited = 0  # acquisitions that had to wait (for metrics)

    def _prune(self, now: float) -> None:
        times = self._times
        while times and times[0] <= now - self.window_s:
            times.popleft()

    def available(self) -> int:
        """Attempts that would fit right now."""
        self._prune(self._now())
        return self.attempts - len(self._times)

    def wait_s(self) -> float:
        """Seconds until one more attempt fits (0: now)."""
        now = self._now()
        self._prune(now)
        if len(self._times) < self.attempts:
            return 0.0
        return max(0.0, self._times[len(self._times) - self.attempts] + self.window_s - now)

    def try_acquire(self) -> bool:
        """Record an attempt if it fits now (and nobody is queued in ``acquire``)."""
        if self._queue.locked():
            return False
        return self._take()

    def _take(self) -> bool:
        now = self._now()
        self._prune(now)
        if len(self._times) >= self.attempts:
            return False
        self._times.append(now)
        return True

    async def acquire(self) -> None:
        """Wait until one more attempt fits in the window, then record it."""
        async with self._queue:
            if self._take():
                return
            self.waited += 1
            while True:
                await self._sleep(max(self.wait_s(), 0.001))
                if self._take():
                    return
