"""The consumer policy shared by every bus backend.

* **Per-key order.** Each fetched message joins the *lane* of its key (``bus.lanes``): one
  task per key runs its messages in order, keys run concurrently; at most ``concurrency``
  messages are in flight (fetching pauses when full).
* **Batches** (with a ``batch_handler``, ``bus.batch_lanes``): the heads of the lanes, at most
  one message per key and ``batch_max`` per call, go to the batch handler together (one call:
  one read and one write transaction in the worker), one batch at a time; each gets its own
  answer. The successes are acked together (``Acks.ack_all``) while the next batch runs; an
  event whose answer is an exception continues on its own exactly as below, as if that batch
  attempt had been its own attempt (``Deferred``: not attempted, no attempt counted), while the
  other keys go on in batches; the next message of a key is taken only once its head is done.
  Malformed bodies and messages already delivered too often take the per-event path directly.
* **Errors.** ``PermanentError`` (a body that is not an envelope, an event the exchange's wire
  schema rejects) → DLQ at once, after this one attempt. ``DependencyDown`` (the database is
  unreachable) → an outage, below; no attempt is counted. Anything else — ``TransientError``
  and *unknown* exceptions too, treated as transient since retrying may help — is retried in
  place after ``retry_delays_s[n-1]`` (+ up to ``jitter`` x that), later events of the key
  waiting behind it while other keys flow; after ``max_attempts`` failures it goes to the DLQ
  (``bus.dead_letter``, atomic with the ack; error and error type recorded, error logged with
  userId/symbol). The message stays pending in the bus until then.
* **Acks** (``bus.acks``): a message is acked only after its handler returned (its batch
  committed); the acks of one event-loop turn go to the bus in one ``ack_many`` call.
* **Dependency outage** (``bus.outage``). The first lane to see ``DependencyDown`` retries its
  message with backoff (``outage_probe_s``, 0.5 s doubling to 10 s) until it works; meanwhile
  no other lane starts an attempt — a database outage affects every key, so other keys do not
  advance either — nothing is fetched or reclaimed, and in-flight messages stay pending
  (touched): nothing is acked or dead-lettered. One error log when it begins, one info when it
  ends; ``stats.outages`` counts outages.
* **Redelivery** (``bus.redelivery``). Every ``redelivery_idle_s / 3`` (fixed schedule) the
  consumer touches its in-flight messages and reclaims those idle > ``redelivery_idle_s``, so a
  message of a SIGKILLed consumer is processed elsewhere within ``4/3 x redelivery_idle_s``
  of the kill: 13.3 s with the default 10 s. A message handed out ``d`` times arrives with
  ``d - 1`` attempts spent, so one that keeps killing its consumer ends in the DLQ.
* **Ownership** (``bus.ownership``): only owned partitions are fetched and reclaimed (a lost one
  stops at once; its messages not yet started are given back to backends that would otherwise
  keep them with this process, ``SupportsGiveBack``: RabbitMQ requeues them); the member joins
  when serving starts and releases its leases when it ends.
* **Pause.** While ``bus.is_paused()`` (read at most every ``pause_check_s``) nothing is fetched
  or reclaimed; in-flight work finishes (``tradewire bus pause|resume``).

Test knobs (style.md #8): ``run(stop)`` until the event is set; ``drain(timeout_s)`` until the
bus has nothing undelivered, pending or in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tradewire.bus.acks import Acks
from tradewire.bus.base import Bus, Envelope, Message
from tradewire.bus.batch_lanes import BatchHandler, BatchLanes, Deferred
from tradewire.bus.lanes import ConsumerStats as ConsumerStats
from tradewire.bus.lanes import Lanes, SupportsGiveBack, Work, cancel_all, error_text, wait_for
from tradewire.bus.lanes import SupportsTouch as SupportsTouch
from tradewire.bus.lanes import SupportsTrim as SupportsTrim
from tradewire.bus.outage import Outage
from tradewire.bus.ownership import LocalOwnership, Ownership, fetch_owned
from tradewire.bus.redelivery import Redelivery
from tradewire.clock import Clock, SystemClock
from tradewire.config import Settings
from tradewire.errors import DependencyDown, PermanentError
from tradewire.logging import bind, log

logger = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]

_FETCH_ERROR_BACKOFF_S = 0.5
_DRAIN_BLOCK_MS = 20
_MIN_MAINTENANCE_S = 0.01
_PAUSE_CHECK_S = 0.5


class Consumer:
    """Runs ``handler`` for every message of ``bus`` with the policy described above."""

    def __init__(
        self, bus: Bus, handler: Handler, *, name: str, max_attempts: int = 3,
        retry_delays_s: Sequence[float] = (1.0, 2.0, 3.0), redelivery_idle_s: float = 10.0,
        concurrency: int = 64, block_ms: int = 250, jitter: float = 0.1,
        trim_interval_s: float | None = 60.0, grace_s: float = 10.0, clock: Clock | None = None,
        pause_check_s: float = _PAUSE_CHECK_S, outage_probe_s: tuple[float, float] = (0.5, 10.0),
        ownership: Ownership | None = None, batch_handler: BatchHandler | None = None,
        batch_max: int = 256, batch_wait_s: float = 0.002,
    ) -> None:
        if max_attempts < 1 or concurrency < 1:
            raise ValueError("max_attempts and concurrency must be >= 1")
        self.bus, self.handler, self.name = bus, handler, name
        self.max_attempts = max_attempts
        self.retry_delays_s = tuple(retry_delays_s)
        self.redelivery_idle_s = redelivery_idle_s
        self.concurrency, self.block_ms, self.jitter = concurrency, block_ms, jitter
        self.trim_interval_s, self.grace_s = trim_interval_s, grace_s
        self.clock = clock or SystemClock()
        self.stats = ConsumerStats()
        self.outage_probe_s = outage_probe_s
        self.ownership: Ownership = ownership or LocalOwnership(name)  # default: owns all
        self._outage = Outage(*outage_probe_s)
        self._acks = Acks(bus)  # a committed batch's acks go out in one call (bus.acks)
        self.batch_handler, self.batch_max = batch_handler, batch_max
        self.batch_wait_s = batch_wait_s
        self._batches: BatchLanes | None = None
        self._lanes = Lanes(self._process, self.ownership.holds, self._give_back)
        if batch_handler is not None:
            self._batches = BatchLanes(self._process, self.ownership.holds, self._give_back)
            self._lanes = self._batches
        self._giving_back: set[asyncio.Task[None]] = set()
        self._redelivery = Redelivery(
            bus, name, self._lanes, idle_s=redelivery_idle_s, trim_interval_s=trim_interval_s,
            room=lambda: self.concurrency - len(self._lanes), stats=self.stats,
            may_reclaim=lambda: self._accepting and not self._paused and not self._outage.active,
            partitions=self.ownership.owned,
        )
        self._accepting, self.pause_check_s = False, pause_check_s  # reclaim only while fetching
        self._paused = False  # the bus's pause flag as last read
        self._pause_read_at: float | None = None  # loop time of that read

    @classmethod
    def from_settings(cls, bus: Bus, handler: Handler, settings: Settings, **kw: Any) -> Consumer:
        options: dict[str, Any] = {
            "name": settings.worker_name, "max_attempts": settings.max_attempts,
            "retry_delays_s": settings.retry_delays_s,
            "redelivery_idle_s": settings.redelivery_idle_s,
            "outage_probe_s": (settings.outage_probe_min_s, settings.outage_probe_max_s),
        }
        return cls(bus, handler, **{**options, **kw})

    @property
    def in_flight(self) -> int:
        return len(self._lanes)

    @property
    def in_outage(self) -> bool:
        """True while a dependency outage holds consumption."""
        return self._outage.active

    @property
    def maintenance_interval_s(self) -> float:
        """Period of touch + reclaim: ``redelivery_idle_s / 3`` (``bus.redelivery``)."""
        return self._redelivery.interval_s

    def retry_delay_s(self, failed_attempt: int) -> float:
        """Wait after the ``failed_attempt``-th failure (1-based), jitter included."""
        if not self.retry_delays_s:
            return 0.0
        base = self.retry_delays_s[min(failed_attempt, len(self.retry_delays_s)) - 1]
        return base * (1.0 + random.uniform(0.0, self.jitter))

    # -- running -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then let in-flight work finish within ``grace_s``;
        what is left stays pending in the bus and is redelivered later."""
        await self._serve(stop, deadline=None)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Consume until nothing is undelivered, pending or in flight; ``TimeoutError`` after
        ``timeout_s``. Pending messages of dead consumers are reclaimed once idle. While the bus
        is paused nothing is fetched, so ``drain`` raises ``TimeoutError`` at its deadline
        unless the bus is resumed before (it never waits longer than ``timeout_s``)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        await self._serve(asyncio.Event(), deadline=deadline)

    async def _serve(self, stop: asyncio.Event, *, deadline: float | None) -> None:
        # Shutdown is driven by flags and events rather than by cancellation alone: redis-py
        # can lose a cancellation that lands inside a command (redis/redis-py#2028, #2551).
        await self.ownership.start(self._lanes.busy)
        self._accepting, self._lanes.closing = True, False
        halt = asyncio.Event()
        maintenance = asyncio.create_task(self._redelivery.run(halt))
        batches = [asyncio.create_task(self._run_batches(self._batches))
                   for _ in [self._batches] if self._batches is not None]
        try:
            await self._fetch_loop(stop, deadline)
            self._accepting = False
            if self._batches is not None:
                self._batches.wake.set()
            if self._lanes.tasks or batches:
                await asyncio.wait({*self._lanes.tasks, *batches}, timeout=self.grace_s)
        finally:
            self._accepting, self._lanes.closing = False, True
            halt.set()
            await cancel_all([maintenance, *batches, *self._lanes.tasks])
            await self._acks.close()
            if self._batches is not None:
                self._batches.clear()
            await cancel_all(list(self._giving_back))
            self._outage.end()
            await self.ownership.stop()  # graceful: the leases move at once

    async def _fetch_loop(self, stop: asyncio.Event, deadline: float | None) -> None:
        """Fetch while there is room; with a ``deadline`` (drain) return once all is done."""
        loop = asyncio.get_running_loop()
        block_ms = self.block_ms if deadline is None else min(self.block_ms, _DRAIN_BLOCK_MS)
        while not stop.is_set():
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"consumer {self.name!r} did not drain the bus in time")
            if self._outage.active:
                await wait_for(stop, block_ms / 1000 or _MIN_MAINTENANCE_S)
                continue
            if await self._is_paused():
                await wait_for(stop, min(self.pause_check_s, block_ms / 1000) or _MIN_MAINTENANCE_S)
                continue
            room = self.concurrency - len(self._lanes)
            if room <= 0:
                self._lanes.room.clear()
                await wait_for(self._lanes.room, block_ms / 1000)
                continue
            messages = await self._fetch(stop, room, block_ms)
            for message in messages or ():
                self._lanes.dispatch(message)
            if deadline is not None and messages == [] and await self._drained():
                return

    async def _fetch(self, stop: asyncio.Event, count: int, block_ms: int) -> list[Message] | None:
        """Up to ``count`` new messages; ``None`` when the bus could not be asked."""
        try:
            return await fetch_owned(self.bus, self.ownership, self.name, count, block_ms, stop)
        except Exception as exc:
            log(logger, logging.WARNING, "bus fetch failed", error=error_text(exc))
            await wait_for(stop, _FETCH_ERROR_BACKOFF_S)
            return None

    async def _is_paused(self) -> bool:
        """The bus's pause flag, read at most every ``pause_check_s`` (a failed read keeps the
        last value)."""
        now = asyncio.get_running_loop().time()
        if self._pause_read_at is None or now - self._pause_read_at >= self.pause_check_s:
            self._pause_read_at = now
            self.stats.paused_checks += 1
            try:
                paused = await self.bus.is_paused()
            except Exception as exc:
                log(logger, logging.WARNING, "reading the pause flag failed",
                    error=error_text(exc))
            else:
                if paused != self._paused:
                    log(logger, logging.WARNING if paused else logging.INFO,
                        "consumption paused" if paused else "consumption resumed")
                self._paused = paused
        return self._paused

    def _give_back(self, messages: list[Message]) -> None:
        """Messages a lane did not start because their partition was lost: backends that
        would otherwise keep them with this process (RabbitMQ) return them to the broker."""
        if not isinstance(self.bus, SupportsGiveBack):
            return
        task = asyncio.create_task(self._return(self.bus, messages))
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    async def _return(self, bus: SupportsGiveBack, messages: list[Message]) -> None:
        try:
            await bus.give_back(messages)
        except Exception as exc:
            log(logger, logging.WARNING, "giving back messages of a lost partition failed",
                error=error_text(exc), count=len(messages))

    async def _drained(self) -> bool:
        return not len(self._lanes) and await self.bus.pending() == 0

    # -- batches -------------------------------------------------------------------------------

    async def _run_batches(self, lanes: BatchLanes) -> None:
        """Take the ready heads and run them as batches, one at a time (two at once, measured:
        smaller batches, more CPU per event, no more events/s), until the consumer stops
        accepting and nothing is left in flight."""
        while True:
            await self._outage.wait_clear()  # during an outage no batch starts
            if 0 < lanes.ready < self.batch_max and self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)  # let more keys get ready
            works = lanes.take(self.batch_max)
            if works:
                await self._batch(lanes, works)
                continue
            if not self._accepting and not len(lanes):
                return
            lanes.wake.clear()
            await lanes.wake.wait()

    async def _batch(self, lanes: BatchLanes, works: list[Work]) -> None:
        batch: list[Work] = []
        for work in works:
            if work.envelope is None or work.message.deliveries > self.max_attempts:
                lanes.run(work, self._process(work))  # buried on the per-event path
            else:
                batch.append(work)
        if not batch:
            return
        assert self.batch_handler is not None
        answers: Sequence[BaseException | None]
        try:
            answers = await self.batch_handler([w.envelope for w in batch if w.envelope])
            if len(answers) != len(batch):
                raise RuntimeError(f"{len(answers)} answers to a batch of {len(batch)}")
        except Exception as exc:  # the whole batch failed: each event sees the error
            answers = [exc] * len(batch)
        done: list[Work] = []
        for work, answer in zip(batch, answers, strict=True):
            if answer is None:
                done.append(work)
            else:
                lanes.run(work, self._after_batch(work, answer))
        if done:
            lanes.run_all(done, self._ack_all(done))

    async def _ack_all(self, works: list[Work]) -> None:
        try:
            await self._acks.ack_all([work.message for work in works])
        except Exception as exc:
            log(logger, logging.ERROR, "bus ack failed; the messages will be redelivered",
                error=error_text(exc), count=len(works))
            return
        self.stats.processed += len(works)

    async def _after_batch(self, work: Work, exc: BaseException) -> None:
        """The per-event policy for an event whose batch attempt answered ``exc``."""
        with bind(**work.log_fields()):
            attempt = work.message.deliveries
            if isinstance(exc, Deferred | DependencyDown):  # not a failed attempt
                await self._attempts(work, attempt)
                return
            failed_ms = self.clock.now_ms()
            if isinstance(exc, PermanentError) or attempt >= self.max_attempts:
                await self._bury(work, attempt, exc, first_failed_ms=failed_ms)
                return
            await self._before_retry(work, attempt, exc)
            await self._attempts(work, attempt + 1, failed_ms)

    # -- one message ---------------------------------------------------------------------------

    async def _process(self, work: Work) -> None:
        with bind(**work.log_fields()):
            attempt = work.message.deliveries  # earlier deliveries count as failed attempts
            if attempt > self.max_attempts:
                error = PermanentError(f"delivered {attempt} times without an ack")
                await self._bury(work, attempt - 1, error, first_failed_ms=self.clock.now_ms())
                return
            await self._attempts(work, attempt)

    async def _attempts(
        self, work: Work, attempt: int, first_failed_ms: int | None = None
    ) -> None:
        while True:
            await self._outage.wait_clear()  # during an outage no lane starts an attempt
            try:
                done = await self._attempt(work)
            except Exception as exc:
                first_failed_ms = first_failed_ms or self.clock.now_ms()
                if isinstance(exc, PermanentError) or attempt >= self.max_attempts:
                    await self._bury(work, attempt, exc, first_failed_ms=first_failed_ms)
                    return
                await self._before_retry(work, attempt, exc)
                attempt += 1
            else:
                if not done:
                    continue  # held by another lane's outage: try again, attempt not counted
                if await self._settle(work, self._acks.ack(work.message), "ack"):
                    self.stats.processed += 1
                return

    async def _call(self, work: Work) -> None:
        if work.envelope is None:
            raise work.error or PermanentError("malformed envelope")
        await self.handler(work.envelope)

    async def _attempt(self, work: Work) -> bool:
        """One attempt. ``DependencyDown`` is not a failure: the first lane to see it probes
        until the dependency is back (True: handled) while others return False (try again)."""
        try:
            await self._call(work)
            return True
        except DependencyDown as exc:
            if not self._outage.begin(exc):
                return False
        self.stats.outages += 1
        await self._outage.probe(lambda: self._call(work))
        return True

    async def _before_retry(self, work: Work, attempt: int, exc: BaseException) -> None:
        self.stats.retried += 1
        delay = self.retry_delay_s(attempt)
        log(
            logger, logging.WARNING, "event attempt failed; retrying", error=error_text(exc),
            errorType=type(exc).__name__, attempt=attempt, retryInS=round(delay, 3),
            messageId=work.message.id,
        )
        await asyncio.sleep(delay)

    async def _bury(
        self, work: Work, attempts: int, exc: BaseException, *, first_failed_ms: int
    ) -> None:
        message = work.message
        letter = work.letter(attempts, exc, first_failed_ms, self.clock.now_ms(), self.name)
        if await self._settle(work, self.bus.dead_letter(message, letter), "dead-letter"):
            self.stats.dead_lettered += 1
            log(
                logger, logging.ERROR, "event moved to the dead-letter queue",
                **work.log_fields(), error=letter.error, errorType=letter.error_type,
                attempts=attempts, messageId=message.id, partition=message.partition,
            )

    async def _settle(self, work: Work, call: Awaitable[None], what: str) -> bool:
        """Ack or dead-letter; if that fails the message stays pending and is redelivered."""
        try:
            await call
        except Exception as exc:
            text = f"bus {what} failed; the message will be redelivered"
            log(logger, logging.ERROR, text, error=error_text(exc), messageId=work.message.id)
            return False
        return True
