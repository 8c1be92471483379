"""One FIFO in front of the bus: socket readers submit envelopes, a flusher publishes batches.

* ``submit`` appends to the FIFO and returns at once; it awaits only while ``max_pending``
  envelopes are submitted and not yet on the bus (back-pressure to the socket readers, which
  then stop reading: the exchange keeps the data in the socket buffers). ``offer`` is the
  same without the wait, for a socket's ``data_received``: it always takes the envelope and
  returns False when the reader should stop until ``room()``.
* The flusher (``run``) takes up to ``max_batch`` envelopes from the head of the FIFO per
  call and keeps up to ``max_in_flight`` calls in flight. A call is ``start(envelopes,
  on_done)`` when given (``PublishStarter.start_publish``: the batch is written to the bus
  right there and the ack is the report, with no task to start or wake), else, or when
  ``start`` declines, a task awaiting ``publish_many``. There is no fixed
  wait: an envelope is sent as soon as a call slot is free, and while every slot is busy the
  next batch accumulates, so at a low rate an envelope waits about one round trip, at a high
  rate the batches grow by themselves. A call is started where the room for it appears (in
  ``offer`` when none is in flight, at the end of the loop turn of an ``offer`` otherwise, or
  when a call is acked), not by waking the flusher task: each loop turn between a socket's
  bytes and the bus write is a turn in which other sockets' work can run first.
* **Order per key.** A batch never carries an ordering key (``Envelope.key``) that a batch in
  flight carries: the flusher stops taking envelopes at the first one whose key is in flight
  and waits for that batch. Events of one key therefore reach the bus in submission order
  whatever the outcome of each call, since concurrent calls share no key; events of different
  keys may land in another order than submitted (the bus orders per key only). With
  ``max_in_flight=1`` the whole FIFO is sent in order, one batch at a time.
* A failed batch is logged and retried (the same envelopes) after a growing delay,
  ``retry_initial_s`` doubling up to ``retry_max_s``, forever: nothing is dropped and nothing of
  its keys overtakes it. A bus that stays down therefore fills the FIFO and blocks ``submit``.
* ``flush`` returns once everything submitted before the call is on the bus; ``close`` stops
  accepting, flushes and ends ``run`` (if ``run`` is not running, ``close`` sends the rest
  itself). Cancelling ``run`` cancels its calls in flight and puts their envelopes back at the
  head of the FIFO, in submission order.
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
from dataclasses import dataclass
from typing import Any

from tradewire.bus.base import Envelope, StartMany
from tradewire.bus.lanes import error_text
from tradewire.logging import log

logger = logging.getLogger("tradewire.streams.publisher")

PublishMany = Callable[[Sequence[Envelope]], Awaitable[Any]]


@dataclass(slots=True)
class _Item:
    envelope: Envelope
    key: str
    seq: int  # submission number
    submitted: float  # clock() at submit


class BatchPublisher:
    """Bounded FIFO + a flusher task over ``publish_many`` with calls in flight per key."""

    def __init__(
        self,
        publish_many: PublishMany,
        *,
        start: StartMany | None = None,
        max_batch: int = 500,
        max_pending: int = 20_000,
        max_in_flight: int = 1,
        observe: Callable[[float], object] | None = None,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if max_batch < 1 or max_pending < 1 or max_in_flight < 1:
            raise ValueError("max_batch, max_pending and max_in_flight must be >= 1")
        self._publish_many = publish_many
        self._start = start
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.max_in_flight = max_in_flight
        self._observe = observe
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._sleep = sleep
        self._queue: deque[_Item] = deque()  # submitted, not sent (or sent and given back)
        # calls in flight: a task awaiting ``publish_many``, or a ``_Started`` call's token
        self._flying: dict[object, list[_Item]] = {}
        self._busy: dict[str, int] = {}  # key -> envelopes of it in flight
        self._in_flight = 0  # envelopes in flight
        self._wake = asyncio.Event()  # something to send, a call ended, or closing
        self._room = asyncio.Event()  # pending dropped below max_pending
        self._room.set()
        self._progress = asyncio.Event()  # a batch was acked (flush waiters re-check)
        self._submitted = 0
        self._closing = False
        self._running = False
        self._kicked = False  # a dispatch is scheduled for the end of this loop turn
        self._stopped = asyncio.Event()
        self._sending = asyncio.Lock()  # close() without run(): one batch at a time
        self.published = 0
        self.batches = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        """Submitted and not yet on the bus (queued + in flight)."""
        return len(self._queue) + self._in_flight

    async def submit(self, envelope: Envelope) -> None:
        """Enqueue; awaits only while ``max_pending`` envelopes are not yet on the bus."""
        await self.room()
        self.offer(envelope)

    def offer(self, envelope: Envelope) -> bool:
        """Enqueue now, whatever the FIFO holds (``submit`` without the wait, for a caller that
        cannot await: a socket's ``data_received``). With ``run`` running and no call in
        flight, the call starts here; with calls in flight, what is offered in this loop turn
        leaves together at its end (one call, one write, for the envelopes that piled up in
        the sockets while the process was not running — not one call each). Returns False
        once ``max_pending`` is reached: the caller stops taking input until ``room()``.
        Raises ``RuntimeError`` once ``close`` was called."""
        if self._closing:
            raise RuntimeError("publisher is closed")
        self._queue.append(_Item(envelope, envelope.key, self._submitted, self._clock()))
        self._submitted += 1
        if not self._running:
            self._wake.set()
        elif not self._flying:
            self._dispatch()
        elif not self._kicked:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._kick)
        return self.pending < self.max_pending

    def _kick(self) -> None:
        self._kicked = False
        if self._running:
            self._dispatch()

    async def room(self) -> None:
        """Return once fewer than ``max_pending`` envelopes are not yet on the bus (at once
        after ``close``: ``offer`` then raises)."""
        while self.pending >= self.max_pending and not self._closing:
            self._room.clear()
            await self._room.wait()

    def _unacked_floor(self) -> int:
        """The lowest submission number not yet on the bus (``_submitted`` when none)."""
        floor = self._queue[0].seq if self._queue else self._submitted
        for items in self._flying.values():
            floor = min(floor, items[0].seq)
        return floor

    async def flush(self) -> None:
        """Wait until everything submitted so far is on the bus."""
        target = self._submitted
        while self._unacked_floor() < target:
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
                self._dispatch()
                if self._closing and not self._queue and not self._flying:
                    return
                self._wake.clear()
                await self._wake.wait()
        finally:
            self._give_back()
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
                async with self._sending:
                    batch = self._take()
                    if batch:
                        await self._send(batch)
                        self._done(batch)

    # -- internals ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start a call per free slot while the FIFO's head can go: written right here by
        ``start`` when it can, else a task awaiting ``publish_many``."""
        while len(self._flying) < self.max_in_flight:
            batch = self._take()
            if not batch:
                return
            if self._start is not None and self._started(batch):
                continue
            self._send_later(batch)

    def _started(self, batch: list[_Item]) -> bool:
        """``start`` the batch; False when it declined (nothing written). If it raises, the
        batch is a failed call: retried later through ``publish_many``, like any other."""
        assert self._start is not None
        token = _Started(self)
        self._flying[token] = batch
        try:
            if self._start([item.envelope for item in batch], token.landed):
                return True
        except Exception as exc:
            del self._flying[token]
            self._retry_later(batch, exc)
            return True
        del self._flying[token]
        return False

    def _send_later(self, batch: list[_Item], *, after_s: float = 0.0) -> None:
        task = asyncio.create_task(self._send(batch, after_s=after_s))
        self._flying[task] = batch
        task.add_done_callback(self._landed)

    def _take(self) -> list[_Item]:
        """Up to ``max_batch`` items from the head, stopping at the first key in flight; their
        keys become busy."""
        queue, busy = self._queue, self._busy
        batch: list[_Item] = []
        while queue and len(batch) < self.max_batch:
            key = queue[0].key
            if key in busy:
                break
            batch.append(queue.popleft())
        for item in batch:
            busy[item.key] = busy.get(item.key, 0) + 1
        self._in_flight += len(batch)
        return batch

    async def _send(self, batch: list[_Item], *, after_s: float = 0.0) -> None:
        """One ``publish_many`` call (after ``after_s``: a started call failed), retried until
        the bus takes the batch."""
        envelopes = [item.envelope for item in batch]
        delay = self._retry_initial_s
        if after_s:
            await self._sleep(after_s)
            delay = min(after_s * 2, self._retry_max_s)
        while True:
            try:
                await self._publish_many(envelopes)
                return
            except Exception as exc:
                self._failed(batch, exc, delay)
            await self._sleep(delay)
            delay = min(delay * 2, self._retry_max_s)

    def _failed(self, batch: list[_Item], exc: BaseException, retry_in_s: float) -> None:
        self.failures += 1
        log(logger, logging.WARNING, "publishing a batch failed; retrying",
            size=len(batch), retry_in_s=retry_in_s, failures=self.failures,
            error=error_text(exc))

    def _started_landed(self, token: _Started, error: BaseException | None) -> None:
        batch = self._flying.pop(token, None)
        if batch is None:
            return  # given back by a cancelled run: its envelopes are queued again
        if error is None:
            self._done(batch)
            return
        self._retry_later(batch, error)

    def _retry_later(self, batch: list[_Item], error: BaseException) -> None:
        """A started call failed: the batch goes again through ``publish_many`` after
        ``retry_initial_s``; its keys stay busy meanwhile."""
        self._failed(batch, error, self._retry_initial_s)
        self._send_later(batch, after_s=self._retry_initial_s)

    def _landed(self, task: asyncio.Task[None]) -> None:  # a task's call ended
        batch = self._flying.pop(task, None)
        if batch is None:
            return  # given back by a cancelled run
        if task.cancelled() or task.exception() is not None:
            self._release(batch)  # only cancellation ends _send without success
            self._queue.extendleft(reversed(batch))
            self._wake.set()
            return
        self._done(batch)

    def _done(self, batch: list[_Item]) -> None:
        acked = self._clock()
        observe = self._observe
        if observe is not None:
            for item in batch:
                observe(acked - item.submitted)
        self._release(batch)
        self.published += len(batch)
        self.batches += 1
        self._progress.set()
        if self._running:
            self._dispatch()  # the next batch leaves now, not a loop turn later
        self._wake.set()
        if self.pending < self.max_pending:
            self._room.set()

    def _release(self, batch: list[_Item]) -> None:
        busy = self._busy
        for item in batch:
            left = busy[item.key] - 1
            if left:
                busy[item.key] = left
            else:
                del busy[item.key]
        self._in_flight -= len(batch)

    def _give_back(self) -> None:
        """``run`` ends: calls still in flight are cancelled, their envelopes back at the head
        of the FIFO in submission order."""
        if not self._flying:
            return
        flying, self._flying = self._flying, {}
        back: list[_Item] = []
        for call, batch in flying.items():
            if isinstance(call, asyncio.Task):
                call.cancel()  # a started call cannot be taken back: its ack is ignored
            self._release(batch)
            back += batch
        back.sort(key=lambda item: item.seq)
        self._queue.extendleft(reversed(back))


class _Started:
    """A call written by ``start``: the token its outcome comes back with."""

    __slots__ = ("publisher",)

    def __init__(self, publisher: BatchPublisher) -> None:
        self.publisher = publisher

    def landed(self, error: BaseException | None) -> None:
        self.publisher._started_landed(self, error)
