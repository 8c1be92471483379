"""Per-key lanes of the consumer (``tradewire.bus.consumer``).

Each fetched message joins the *lane* of its ordering key (``Envelope.key``; a malformed body
gets a lane of its own). A lane is one task that runs its messages one after the other; lanes of
different keys run concurrently. ``Lanes`` also tracks every message in flight (queued in a lane
or running), which bounds fetching and is what the consumer keeps fresh in the bus (``touch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tradewire.bus.base import DeadLetter, Envelope, Message
from tradewire.errors import PermanentError
from tradewire.logging import log

logger = logging.getLogger("tradewire.bus.consumer")

_ERROR_TEXT_MAX = 2000
_CANCEL_POLL_S = 0.1


@runtime_checkable
class SupportsTouch(Protocol):
    """Optional backend capability: keep in-flight messages from being reclaimed."""

    async def touch(
        self, consumer: str, messages: Iterable[Message],
        partitions: Collection[int] | None = None,
    ) -> None:
        """``partitions`` not None: the messages are held under their partition's slot
        (ownership mode, as in ``Bus.fetch``)."""
        ...


@runtime_checkable
class SupportsGiveBack(Protocol):
    """Optional backend capability: return unstarted messages of a partition this consumer no
    longer owns (RabbitMQ: requeue them; a backend whose pending messages the next owner reads
    anyway, like Redis slots, needs nothing)."""

    async def give_back(self, messages: list[Message]) -> None: ...


@runtime_checkable
class SupportsTrim(Protocol):
    """Optional backend capability: drop acknowledged entries (Redis Streams)."""

    async def trim(self, retain_ms: int = 0) -> int: ...


async def wait_for(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


async def cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel until every task has ended (a cancellation swallowed by a client library is
    simply repeated)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_CANCEL_POLL_S)


def error_text(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:_ERROR_TEXT_MAX]


def ref(message: Message) -> tuple[int, str]:
    """Identity of a message (ids are unique per partition)."""
    return message.partition, message.id


@dataclass
class ConsumerStats:
    processed: int = 0  # handled successfully and acked
    retried: int = 0  # failed attempts followed by another attempt
    dead_lettered: int = 0
    reclaimed: int = 0  # messages taken over from idle (dead) consumers
    paused_checks: int = 0  # times the bus's pause flag was read
    outages: int = 0  # dependency outages (DependencyDown) ridden out


@dataclass
class Work:
    message: Message
    envelope: Envelope | None
    error: PermanentError | None  # why the body could not be decoded

    @classmethod
    def of(cls, message: Message) -> Work:
        try:
            return cls(message, Envelope.decode(message.body), None)
        except PermanentError as exc:
            return cls(message, None, exc)

    @property
    def key(self) -> str:
        if self.envelope is None:
            return f"malformed:{self.message.partition}:{self.message.id}"
        return self.envelope.key

    def letter(
        self, attempts: int, exc: BaseException, first_failed_ms: int, now_ms: int, consumer: str
    ) -> DeadLetter:
        """The DLQ entry for this message after ``attempts`` failed with ``exc`` last."""
        message, env = self.message, self.envelope
        extra = {"consumer": consumer}
        if env is not None:
            extra.update(event_id=env.event_id, user_id=str(env.user_id), symbol=env.symbol)
        return DeadLetter(
            id="", original_id=message.id, partition=message.partition, body=message.body,
            attempts=attempts, error=error_text(exc), error_type=type(exc).__name__,
            first_failed_ms=first_failed_ms, last_failed_ms=now_ms, extra=extra,
        )

    def log_fields(self) -> dict[str, Any]:
        env = self.envelope
        return {"userId": env.user_id, "symbol": env.symbol} if env else {}


class Lanes:
    """Runs ``process`` for each dispatched message, in order per key, concurrently across
    keys. ``closing`` makes lanes stop after their current message; what is left in a lane is
    released and stays pending in the bus. So does a lane whose next message's partition
    ``may_start`` refuses (its ownership was lost: the new owner processes the rest)."""

    def __init__(
        self, process: Callable[[Work], Awaitable[None]],
        may_start: Callable[[int], bool] = lambda partition: True,
        give_back: Callable[[list[Message]], None] = lambda messages: None,
    ) -> None:
        self._process, self._may_start, self._give_back = process, may_start, give_back
        self.inflight: dict[tuple[int, str], Message] = {}
        self._lanes: dict[str, deque[Work]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.room = asyncio.Event()  # set whenever a message leaves
        self.closing = False

    def __len__(self) -> int:
        return len(self.inflight)

    def holds(self, message: Message) -> bool:
        return ref(message) in self.inflight

    def busy(self, partition: int) -> bool:
        """Some message of ``partition`` is in flight (ownership hands it over after)."""
        return any(p == partition for p, _ in self.inflight)

    def dispatch(self, message: Message) -> None:
        if self.holds(message):
            return  # our own message, reclaimed while still in its lane
        self.inflight[ref(message)] = message
        work = Work.of(message)
        lane = self._lanes.get(work.key)
        if lane is not None:
            lane.append(work)
            return
        self._lanes[work.key] = deque([work])
        self._opened(work.key)

    def _opened(self, key: str) -> None:
        """A lane was just made for ``key`` (its first message): run it in a task of its own
        (``BatchLanes`` marks it ready for a batch instead)."""
        task = asyncio.create_task(self._run(key), name=f"lane:{key}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, key: str) -> None:
        lane = self._lanes[key]
        try:
            while lane and not self.closing and self._may_start(lane[0].message.partition):
                await self._process(lane[0])
                self._release(lane.popleft().message)
            if lane and not self.closing:  # its partition was lost: the new owner takes them
                self._give_back([work.message for work in lane])
        except Exception as exc:  # a bug in the policy itself: leave the rest to redelivery
            log(logger, logging.ERROR, "consumer lane crashed", error=error_text(exc), key=key)
        finally:
            del self._lanes[key]
            for work in lane:  # cancelled: the rest stays pending in the bus
                self._release(work.message)

    def _release(self, message: Message) -> None:
        self.inflight.pop(ref(message), None)
        self.room.set()
