"""Lanes whose heads go to the handler in batches (``tradewire.bus.consumer``, batch path).

The same per-key lanes as ``bus.lanes`` (one queue per ordering key, every message in flight
tracked), without a task per lane: ``take`` hands out the head of every lane that is *ready*
(its head neither in a batch nor being run on its own) in the order the lanes became ready, at
most one message per key, so a batch never holds two events of one key. A head stays in its
lane, and its key busy, until ``finish`` (acked, dead-lettered, or left pending); only then is
the next message of the key ready. A head whose batch attempt failed is ``run`` by a task of its
own (the consumer's per-event policy: retries in place, outage, DLQ) while the other keys go on
in batches.

A batch handler answers ``Deferred`` for an event it did not attempt (its lock was busy, or it
must take the per-event path): the consumer runs it on its own, no attempt counted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from tradewire.bus.base import Envelope, Message
from tradewire.bus.lanes import Lanes, Work

BatchHandler = Callable[[Sequence[Envelope]], Awaitable[Sequence[BaseException | None]]]


class Deferred(Exception):
    """A batch handler did not attempt this event: run it on the per-event path."""


def one_by_one(handler: Callable[[Envelope], Awaitable[None]]) -> BatchHandler:
    """A batch handler that runs ``handler`` for each event of the batch concurrently (each
    answer: None or that event's exception). For handlers without a batch path, and tests."""

    async def batch(envelopes: Sequence[Envelope]) -> Sequence[BaseException | None]:
        results = await asyncio.gather(*(handler(e) for e in envelopes), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    return batch


class BatchLanes(Lanes):
    def __init__(
        self, process: Callable[[Work], Awaitable[None]],
        may_start: Callable[[int], bool] = lambda partition: True,
        give_back: Callable[[list[Message]], None] = lambda messages: None,
    ) -> None:
        super().__init__(process, may_start, give_back)
        self._ready: deque[str] = deque()  # keys whose head may be taken, in that order
        self.wake = asyncio.Event()  # set when a key becomes ready

    @property
    def ready(self) -> int:
        return len(self._ready)

    def _opened(self, key: str) -> None:
        self._make_ready(key)  # no task per lane: its head waits for a batch

    def take(self, limit: int) -> list[Work]:
        """Up to ``limit`` heads of ready lanes (their keys become busy). A lane whose head's
        partition may no longer start is given back and dropped, as in ``Lanes``."""
        out: list[Work] = []
        while self._ready and len(out) < limit and not self.closing:
            key = self._ready.popleft()
            lane = self._lanes[key]
            if self._may_start(lane[0].message.partition):
                out.append(lane[0])
                continue
            del self._lanes[key]
            self._give_back([work.message for work in lane])
            for work in lane:
                self._release(work.message)
        return out

    def finish(self, work: Work) -> None:
        """``work``, a taken head, is done: release it; the key's next message is ready."""
        lane = self._lanes.get(work.key)
        if lane is None or not lane or lane[0] is not work:
            return  # dropped meanwhile (``clear``)
        lane.popleft()
        self._release(work.message)
        if lane:
            self._make_ready(work.key)
        else:
            del self._lanes[work.key]
            self.wake.set()  # the batch runner may be waiting for the last one to end

    def run(self, work: Work, job: Coroutine[Any, Any, None]) -> None:
        """Run ``job`` for the taken head ``work`` in a task of its own, then ``finish`` it."""
        self.run_all([work], job)

    def run_all(self, works: list[Work], job: Coroutine[Any, Any, None]) -> None:
        """Run ``job`` (about the taken heads ``works``) in a task, then ``finish`` them all."""
        task = asyncio.create_task(self._run_job(works, job))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_job(self, works: list[Work], job: Coroutine[Any, Any, None]) -> None:
        try:
            await job
        finally:
            for work in works:
                self.finish(work)

    def clear(self) -> None:
        """Forget every lane (the consumer stopped): what is left stays pending in the bus."""
        self._lanes.clear()
        self._ready.clear()
        self.inflight.clear()
        self.room.set()

    def _make_ready(self, key: str) -> None:
        self._ready.append(key)
        self.wake.set()
