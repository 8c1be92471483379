"""One FIFO in front of the bus: socket readers submit envelopes, one flusher publishes batches.

* ``submit`` appends to the FIFO and returns at once; it awaits only while ``max_pending``
  envelopes are submitted and not yet on the bus (back-pressure to the socket readers, which
  then stop reading: the exchange keeps the data in the socket buffers).
* The flusher (``run``) sends up to ``max_batch`` envelopes per ``publish_many`` call, in
  submission order, one batch at a time. There is no fixed wait: while a batch is in flight the
  next one accumulates, so at a low rate an envelope waits one round trip, at a high rate the
  batches grow by themselves.
* A failed batch is logged and retried (the same envelopes, in the same order) after a growing
  delay, ``retry_initial_s`` doubling up to ``retry_max_s``, forever: nothing is dropped and
  nothing overtakes it. A bus that stays down therefore fills the FIFO and blocks ``submit``.
* ``flush`` returns once everything submitted before the call is on the bus; ``close`` stops
  accepting, flushes and ends ``run`` (if ``run`` is not running, ``close`` sends the rest
  itself).
* Counters: ``published`` (envelopes acked by the bus), ``batches``, ``failures`` (failed
  ``publish_many`` calls); ``observe(seconds)``, if given, receives every envelope's
  submit -> bus-ack latency (e.g. a Prometheus histogram's ``observe``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tradewire.bus.base import Envelope
from tradewire.bus.lanes import error_text
from tradewire.logging import log

logger = logging.getLogger("tradewire.streams.publisher")

PublishMany = Callable[[Sequence[Envelope]], Awaitable[Any]]


class BatchPublisher:
    """Bounded FIFO + a single flusher task over ``publish_many``."""

    def __init__(
        self,
        publish_many: PublishMany,
        *,
        max_batch: int = 500,
        max_pending: int = 20_000,
        observe: Callable[[float], object] | None = None,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if max_batch < 1 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be >= 1")
        self._publish_many = publish_many
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._observe = observe
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._sleep = sleep
        self._queue: deque[Envelope] = deque()
        self._times: deque[float] = deque()  # submit time of each queued envelope
        self._wake = asyncio.Event()  # something to send, or closing
        self._room = asyncio.Event()  # pending dropped below max_pending
        self._room.set()
        self._progress = asyncio.Event()  # a batch was acked (flush waiters re-check)
        self._submitted = 0
        self._closing = False
        self._running = False
        self._stopped = asyncio.Event()
        self._sending = asyncio.Lock()  # one batch in flight at a time (run or close)
        self.published = 0
        self.batches = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        """Submitted and not yet on the bus (queued + in flight)."""
        return len(self._queue)

    async def submit(self, envelope: Envelope) -> None:
        """Enqueue; awaits only while ``max_pending`` envelopes are not yet on the bus."""
        while len(self._queue) >= self.max_pending:
            if self._closing:
                break
            self._room.clear()
            await self._room.wait()
        if self._closing:
            raise RuntimeError("publisher is closed")
        self._queue.append(envelope)
        self._times.append(self._clock())
        self._submitted += 1
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything submitted so far is on the bus."""
        target = self._submitted
        while self.published < target:
            self._progress.clear()
            await self._progress.wait()

    async def run(self) -> None:
        """The flusher: send batches until ``close``. Run it as one task."""
        if self._running:
            raise RuntimeError("publisher is already running")
        self._running = True
        self._stopped.clear()
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._send_one()
        finally:
            self._running = False
            self._stopped.set()

    async def close(self) -> None:
        """Stop accepting, send everything submitted, end ``run``."""
        self._closing = True
        self._wake.set()
        self._room.set()  # a submit blocked on a full FIFO raises instead of waiting forever
        if self._running:
            await self._stopped.wait()
        else:
            while self._queue:
                await self._send_one()

    async def _send_one(self) -> None:
        """Send the oldest ``max_batch`` envelopes, retrying until the bus takes them. They
        stay at the head of the FIFO until acked (a cancelled send leaves them there)."""
        async with self._sending:
            if self._queue:
                await self._send_head()

    async def _send_head(self) -> None:
        queue = self._queue
        size = min(len(queue), self.max_batch)
        batch = [queue[i] for i in range(size)] if size < len(queue) else list(queue)
        delay = self._retry_initial_s
        while True:
            try:
                await self._publish_many(batch)
                break
            except Exception as exc:
                self.failures += 1
                log(logger, logging.WARNING, "publishing a batch failed; retrying",
                    size=size, retry_in_s=delay, failures=self.failures, error=error_text(exc))
            await self._sleep(delay)
            delay = min(delay * 2, self._retry_max_s)
        acked = self._clock()
        times = self._times
        observe = self._observe
        for _ in range(size):
            queue.popleft()
            submitted = times.popleft()
            if observe is not None:
                observe(acked - submitted)
        self.published += size
        self.batches += 1
        self._progress.set()
        if len(queue) < self.max_pending:
            self._room.set()
