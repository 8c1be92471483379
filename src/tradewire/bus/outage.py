"""Dependency outage state of one consumer (``tradewire.bus.consumer``).

When a handler raises ``DependencyDown`` (the database is unreachable) the consumer does not
spend an attempt: the first lane to see it *begins* the outage and becomes the prober — it
retries its own message with growing waits (``min_s`` doubling up to ``max_s``) until that
succeeds or fails for another reason, then *ends* the outage. Meanwhile every other lane holds
before its next attempt (``wait_clear``) and the consumer fetches and reclaims nothing; messages
in flight stay pending in the bus (kept fresh by ``touch``), nothing is acked or dead-lettered.
One error is logged when an outage begins and one info when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tradewire.bus.lanes import error_text
from tradewire.errors import DependencyDown
from tradewire.logging import log

logger = logging.getLogger("tradewire.bus.consumer")


class Outage:
    def __init__(self, min_s: float = 0.5, max_s: float = 10.0) -> None:
        if min_s <= 0 or max_s < min_s:
            raise ValueError("outage probe delays need 0 < min_s <= max_s")
        self.min_s, self.max_s = min_s, max_s
        self._clear = asyncio.Event()
        self._clear.set()
        self._began_at = 0.0
        self.probes = 0  # failed probes of the current outage

    @property
    def active(self) -> bool:
        return not self._clear.is_set()

    def probe_delay_s(self, failed_probes: int) -> float:
        """Wait before the next probe after ``failed_probes`` failed ones (0-based)."""
        return min(self.min_s * 2.0 ** min(failed_probes, 32), self.max_s)

    def begin(self, exc: BaseException) -> bool:
        """Report ``DependencyDown``; True when this call began the outage (the caller probes),
        False when one is already being probed (the caller waits and tries again)."""
        if self.active:
            return False
        self._clear.clear()
        self._began_at = asyncio.get_running_loop().time()
        self.probes = 0
        log(logger, logging.ERROR, "dependency unavailable; consumption paused until it is back",
            error=error_text(exc), errorType=type(exc).__name__)
        return True

    def end(self) -> None:
        if not self.active:
            return
        took = asyncio.get_running_loop().time() - self._began_at
        self._clear.set()
        log(logger, logging.INFO, "dependency available again; consumption resumed",
            outageS=round(took, 3), failedProbes=self.probes)

    async def wait_clear(self) -> None:
        await self._clear.wait()

    async def probe(self, call: Callable[[], Awaitable[None]]) -> None:
        """As the prober: repeat ``call`` with growing waits while it raises ``DependencyDown``;
        the outage ends when it returns or raises anything else (which propagates)."""
        try:
            while True:
                await asyncio.sleep(self.probe_delay_s(self.probes))
                try:
                    await call()
                    return
                except DependencyDown:
                    self.probes += 1
        finally:
            self.end()
