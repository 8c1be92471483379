"""Redelivery upkeep of one consumer (``tradewire.bus.consumer``): touch, reclaim, trim.

Every ``interval_s = idle_s / 3`` — on a fixed schedule, a slow round shortens the next wait —
the consumer refreshes the idle time of its own in-flight messages (``touch``, when the backend
has it) and reclaims messages idle for longer than ``idle_s`` (their consumer died). A message
held by a consumer killed with SIGKILL was touched at most ``interval_s`` before the kill, so
another consumer takes it over between ``idle_s - interval_s`` and ``idle_s + interval_s`` after
the kill: 6.7 s .. 13.3 s with the default ``redelivery_idle_s`` of 10 s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from tradewire.bus.base import Bus
from tradewire.bus.lanes import (
    ConsumerStats,
    Lanes,
    SupportsTouch,
    SupportsTrim,
    error_text,
    wait_for,
)
from tradewire.logging import log

logger = logging.getLogger("tradewire.bus.consumer")

MIN_INTERVAL_S = 0.01


class Redelivery:
    def __init__(
        self, bus: Bus, name: str, lanes: Lanes, *, idle_s: float,
        trim_interval_s: float | None, room: Callable[[], int],
        may_reclaim: Callable[[], bool], stats: ConsumerStats,
        partitions: Callable[[], Collection[int] | None] = lambda: None,
    ) -> None:
        self.bus, self.name, self.lanes = bus, name, lanes
        self._partitions = partitions  # owned partitions (None: all; bus.ownership)
        self.idle_s, self.trim_interval_s = idle_s, trim_interval_s
        self._room, self._may_reclaim, self.stats = room, may_reclaim, stats

    @property
    def interval_s(self) -> float:
        """Period of touch + reclaim: ``idle_s / 3``."""
        return max(self.idle_s / 3, MIN_INTERVAL_S)

    async def run(self, halt: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last_trim = next_at = loop.time()
        while not halt.is_set():
            next_at = max(next_at + self.interval_s, loop.time())
            await wait_for(halt, max(next_at - loop.time(), 0.0) or MIN_INTERVAL_S)
            if halt.is_set():
                return
            try:
                await self.touch()
                await self.reclaim()
                if self.trim_interval_s is not None and (
                    loop.time() - last_trim >= self.trim_interval_s
                ):
                    last_trim = loop.time()
                    if isinstance(self.bus, SupportsTrim):
                        await self.bus.trim()
            except Exception as exc:
                log(logger, logging.WARNING, "bus maintenance failed", error=error_text(exc))

    async def touch(self) -> None:
        if len(self.lanes) and isinstance(self.bus, SupportsTouch):
            messages, owned = list(self.lanes.inflight.values()), self._partitions()
            if owned is None:
                await self.bus.touch(self.name, messages)
            else:
                await self.bus.touch(self.name, messages, partitions=owned)

    async def reclaim(self) -> None:
        room = self._room()
        if room <= 0 or not self._may_reclaim():
            return
        owned, idle_ms = self._partitions(), int(self.idle_s * 1000)
        if owned is not None and not owned:
            return
        messages = await (
            self.bus.reclaim(self.name, idle_ms, room) if owned is None
            else self.bus.reclaim(self.name, idle_ms, room, partitions=owned)
        )
        fresh = [m for m in messages if not self.lanes.holds(m)]
        if fresh:
            self.stats.reclaimed += len(fresh)
            log(logger, logging.WARNING, "reclaimed messages of an idle consumer", count=len(fresh))
        for message in fresh:
            self.lanes.dispatch(message)
