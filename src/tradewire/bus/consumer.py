"""The consumer policy shared by every bus backend.

* **Per-key order.** Each fetched message joins the *lane* of its ordering key
  (``Envelope.key``; a malformed body gets a lane of its own). A lane is one task that runs its
  messages one after the other; lanes of different keys run concurrently. At most
  ``concurrency`` messages are in flight (queued in lanes or running); fetching pauses when full.
* **Retries in place.** A failed attempt is retried in its lane after ``retry_delays_s[n-1]``
  (plus up to ``jitter`` x that delay), so later events of the key wait behind it while other
  keys keep flowing. The message stays pending in the bus meanwhile.
* **Dead letters.** After ``max_attempts`` failed attempts the message goes to the DLQ with
  ``bus.dead_letter`` (atomic with its ack) and an error is logged with userId/symbol/error.
* **Redelivery.** Every ``redelivery_idle_s / 3`` the consumer refreshes the idle time of its
  own in-flight messages (``touch``, when the backend has it) and reclaims messages idle for
  longer than ``redelivery_idle_s`` (their consumer died). A message handed out ``d`` times
  arrives with ``d - 1`` attempts already spent (each earlier delivery ended without an ack), so
  a message that keeps killing its consumer ends in the DLQ instead of looping forever.

* **Pause.** While ``bus.is_paused()`` (checked at most every ``pause_check_s``, 0.5 s) the
  consumer fetches and reclaims nothing; work already in flight finishes. ``tradewire bus
  pause|resume`` set the flag for every consumer of the backend.

Test knobs (style.md #8): ``run(stop)`` until the event is set; ``drain(timeout_s)`` until the
bus has nothing undelivered, pending or in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tradewire.bus.base import Bus, DeadLetter, Envelope, Message
from tradewire.clock import Clock, SystemClock
from tradewire.config import Settings
from tradewire.errors import PermanentError
from tradewire.logging import bind, log

logger = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]

_ERROR_TEXT_MAX = 2000
_FETCH_ERROR_BACKOFF_S = 0.5
_DRAIN_BLOCK_MS = 20
_MIN_MAINTENANCE_S = 0.01
_CANCEL_POLL_S = 0.1
_PAUSE_CHECK_S = 0.5


@runtime_checkable
class SupportsTouch(Protocol):
    """Optional backend capability: keep in-flight messages from being reclaimed."""

    async def touch(self, consumer: str, messages: Iterable[Message]) -> None: ...


@runtime_checkable
class SupportsTrim(Protocol):
    """Optional backend capability: drop acknowledged entries (Redis Streams)."""

    async def trim(self, retain_ms: int = 0) -> int: ...


@dataclass
class ConsumerStats:
    processed: int = 0  # handled successfully and acked
    retried: int = 0  # failed attempts followed by another attempt
    dead_lettered: int = 0
    reclaimed: int = 0  # messages taken over from idle (dead) consumers
    paused_checks: int = 0  # times the bus's pause flag was read


@dataclass
class _Work:
    message: Message
    envelope: Envelope | None
    error: PermanentError | None  # why the body could not be decoded

    @classmethod
    def of(cls, message: Message) -> _Work:
        try:
            return cls(message, Envelope.decode(message.body), None)
        except PermanentError as exc:
            return cls(message, None, exc)

    @property
    def key(self) -> str:
        if self.envelope is None:
            return f"malformed:{self.message.partition}:{self.message.id}"
        return self.envelope.key

    def log_fields(self) -> dict[str, Any]:
        env = self.envelope
        return {"userId": env.user_id, "symbol": env.symbol} if env else {}


def _ref(message: Message) -> tuple[int, str]:
    return message.partition, message.id


def _error_text(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:_ERROR_TEXT_MAX]


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


async def _cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel until every task has ended (a cancellation swallowed by a client library is
    simply repeated)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_CANCEL_POLL_S)


class Consumer:
    """Runs ``handler`` for every message of ``bus`` with the policy described above."""

    def __init__(
        self, bus: Bus, handler: Handler, *, name: str, max_attempts: int = 3,
        retry_delays_s: Sequence[float] = (1.0, 2.0, 3.0), redelivery_idle_s: float = 15.0,
        concurrency: int = 64, block_ms: int = 250, jitter: float = 0.1,
        trim_interval_s: float | None = 60.0, grace_s: float = 10.0, clock: Clock | None = None,
        pause_check_s: float = _PAUSE_CHECK_S,
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
        self._inflight: dict[tuple[int, str], Message] = {}  # ids are unique per partition
        self._lanes: dict[str, deque[_Work]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._accepting = False  # reclaimed messages are taken only while fetching
        self._closing = False  # lanes stop after their current message
        self.pause_check_s = pause_check_s
        self._paused = False  # the bus's pause flag as last read
        self._pause_read_at: float | None = None  # loop time of that read

    @classmethod
    def from_settings(
        cls, bus: Bus, handler: Handler, settings: Settings, **overrides: Any
    ) -> Consumer:
        options: dict[str, Any] = {
            "name": settings.worker_name, "max_attempts": settings.max_attempts,
            "retry_delays_s": settings.retry_delays_s,
            "redelivery_idle_s": settings.redelivery_idle_s,
        }
        return cls(bus, handler, **{**options, **overrides})

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

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
        self._accepting, self._closing = True, False
        halt = asyncio.Event()
        maintenance = asyncio.create_task(self._maintain(halt))
        try:
            await self._fetch_loop(stop, deadline)
            self._accepting = False
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self.grace_s)
        finally:
            self._accepting, self._closing = False, True
            halt.set()
            await _cancel_all([maintenance, *self._tasks])

    async def _fetch_loop(self, stop: asyncio.Event, deadline: float | None) -> None:
        """Fetch while there is room; with a ``deadline`` (drain) return once all is done."""
        loop = asyncio.get_running_loop()
        block_ms = self.block_ms if deadline is None else min(self.block_ms, _DRAIN_BLOCK_MS)
        while not stop.is_set():
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"consumer {self.name!r} did not drain the bus in time")
            if await self._is_paused():
                await _wait(stop, min(self.pause_check_s, block_ms / 1000) or _MIN_MAINTENANCE_S)
                continue
            room = self.concurrency - len(self._inflight)
            if room <= 0:
                self._room.clear()
                await _wait(self._room, block_ms / 1000)
                continue
            messages = await self._fetch(stop, room, block_ms)
            for message in messages or ():
                self._dispatch(message)
            if deadline is not None and messages == [] and await self._drained():
                return

    async def _fetch(self, stop: asyncio.Event, count: int, block_ms: int) -> list[Message] | None:
        """Up to ``count`` new messages; ``None`` when the bus could not be asked."""
        try:
            return await self.bus.fetch(self.name, count, block_ms)
        except Exception as exc:
            log(logger, logging.WARNING, "bus fetch failed", error=_error_text(exc))
            await _wait(stop, _FETCH_ERROR_BACKOFF_S)
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
                    error=_error_text(exc))
            else:
                if paused != self._paused:
                    log(logger, logging.WARNING if paused else logging.INFO,
                        "consumption paused" if paused else "consumption resumed")
                self._paused = paused
        return self._paused

    async def _drained(self) -> bool:
        return not self._inflight and await self.bus.pending() == 0

    # -- lanes ---------------------------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        if _ref(message) in self._inflight:
            return  # our own message, reclaimed while still in its lane
        self._inflight[_ref(message)] = message
        work = _Work.of(message)
        lane = self._lanes.get(work.key)
        if lane is not None:
            lane.append(work)
            return
        self._lanes[work.key] = deque([work])
        task = asyncio.create_task(self._run_lane(work.key), name=f"lane:{work.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_lane(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane and not self._closing:
                await self._process(lane[0])
                self._release(lane.popleft().message)
        except Exception as exc:  # a bug in the policy itself: leave the rest to redelivery
            log(logger, logging.ERROR, "consumer lane crashed", error=_error_text(exc), key=key)
        finally:
            del self._lanes[key]
            for work in lane:  # cancelled: the rest stays pending in the bus
                self._release(work.message)

    def _release(self, message: Message) -> None:
        self._inflight.pop(_ref(message), None)
        self._room.set()

    # -- one message ---------------------------------------------------------------------------

    async def _process(self, work: _Work) -> None:
        with bind(**work.log_fields()):
            attempt = work.message.deliveries  # earlier deliveries count as failed attempts
            if attempt > self.max_attempts:
                error = PermanentError(f"delivered {attempt} times without an ack")
                await self._bury(work, attempt - 1, error, first_failed_ms=self.clock.now_ms())
                return
            await self._attempts(work, attempt)

    async def _attempts(self, work: _Work, attempt: int) -> None:
        first_failed_ms: int | None = None
        while True:
            try:
                if work.envelope is None:
                    raise work.error or PermanentError("malformed envelope")
                await self.handler(work.envelope)
            except Exception as exc:
                first_failed_ms = first_failed_ms or self.clock.now_ms()
                if attempt >= self.max_attempts:
                    await self._bury(work, attempt, exc, first_failed_ms=first_failed_ms)
                    return
                await self._before_retry(work, attempt, exc)
                attempt += 1
            else:
                if await self._settle(work, self.bus.ack(work.message), "ack"):
                    self.stats.processed += 1
                return

    async def _before_retry(self, work: _Work, attempt: int, exc: Exception) -> None:
        self.stats.retried += 1
        delay = self.retry_delay_s(attempt)
        log(
            logger, logging.WARNING, "event attempt failed; retrying", error=_error_text(exc),
            attempt=attempt, retryInS=round(delay, 3), messageId=work.message.id,
        )
        await asyncio.sleep(delay)

    async def _bury(
        self, work: _Work, attempts: int, exc: Exception, *, first_failed_ms: int
    ) -> None:
        message, env = work.message, work.envelope
        extra = {"consumer": self.name}
        if env is not None:
            extra.update(event_id=env.event_id, user_id=str(env.user_id), symbol=env.symbol)
        letter = DeadLetter(
            id="", original_id=message.id, partition=message.partition, body=message.body,
            attempts=attempts, error=_error_text(exc), error_type=type(exc).__name__,
            first_failed_ms=first_failed_ms, last_failed_ms=self.clock.now_ms(), extra=extra,
        )
        if await self._settle(work, self.bus.dead_letter(message, letter), "dead-letter"):
            self.stats.dead_lettered += 1
            log(
                logger, logging.ERROR, "event moved to the dead-letter queue",
                **work.log_fields(), error=letter.error, errorType=letter.error_type,
                attempts=attempts, messageId=message.id, partition=message.partition,
            )

    async def _settle(self, work: _Work, call: Awaitable[None], what: str) -> bool:
        """Ack or dead-letter; if that fails the message stays pending and is redelivered."""
        try:
            await call
        except Exception as exc:
            text = f"bus {what} failed; the message will be redelivered"
            log(logger, logging.ERROR, text, error=_error_text(exc), messageId=work.message.id)
            return False
        return True

    # -- maintenance ---------------------------------------------------------------------------

    async def _maintain(self, halt: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last_trim = loop.time()
        interval = max(self.redelivery_idle_s / 3, _MIN_MAINTENANCE_S)
        while not halt.is_set():
            await _wait(halt, interval)
            if halt.is_set():
                return
            try:
                await self._touch()
                await self._reclaim()
                if self.trim_interval_s is not None and (
                    loop.time() - last_trim >= self.trim_interval_s
                ):
                    last_trim = loop.time()
                    await self._trim()
            except Exception as exc:
                log(logger, logging.WARNING, "bus maintenance failed", error=_error_text(exc))

    async def _touch(self) -> None:
        if self._inflight and isinstance(self.bus, SupportsTouch):
            await self.bus.touch(self.name, list(self._inflight.values()))

    async def _reclaim(self) -> None:
        room = self.concurrency - len(self._inflight)
        if not self._accepting or room <= 0 or self._paused:
            return
        min_idle_ms = int(self.redelivery_idle_s * 1000)
        messages = await self.bus.reclaim(self.name, min_idle_ms, room)
        fresh = [m for m in messages if _ref(m) not in self._inflight]
        if fresh:
            self.stats.reclaimed += len(fresh)
            log(logger, logging.WARNING, "reclaimed messages of an idle consumer", count=len(fresh))
        for message in fresh:
            self._dispatch(message)

    async def _trim(self) -> None:
        if isinstance(self.bus, SupportsTrim):
            await self.bus.trim()
