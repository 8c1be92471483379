"""In-process bus for the one-machine deployment, with the semantics of Redis Streams.

Each partition is a FIFO of never-delivered messages. ``fetch`` moves messages into one pending
set (the PEL of a single consumer group) that records owner, delivery time and delivery count;
``ack`` and ``dead_letter`` remove them; ``reclaim`` takes over entries idle for longer than a
threshold and bumps their delivery count, like XAUTOCLAIM. Acknowledged messages are forgotten at
once, so there is nothing to trim. Nothing survives a restart: the one-machine deployment relies
on reconciliation with the exchange after a restart (architecture decision 1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from tradewire.bus.base import DeadLetter, Envelope, Message, PartitionDepth, partition_for
from tradewire.bus.held import claim_idle, refresh
from tradewire.names import DEFAULT_PARTITIONS


@dataclass
class _Pending:
    message: Message
    consumer: str
    delivered_at: float  # event-loop time (monotonic seconds)


class EmbeddedBus:
    """``Bus`` on asyncio data structures; one instance is shared by every role of the process."""

    def __init__(self, partitions: int = DEFAULT_PARTITIONS) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.partitions = partitions
        self._queues: list[deque[Message]] = [deque() for _ in range(partitions)]
        self._pending: dict[str, _Pending] = {}
        self._dlq: list[DeadLetter] = []
        self._ids = itertools.count(1)
        self._dlq_ids = itertools.count(1)
        self._next_partition = 0  # round-robin start of the next fetch, for fairness
        self._published = asyncio.Event()
        self._closed = False
        self._paused = False

    async def publish(self, envelope: Envelope) -> str:
        partition = partition_for(envelope.key, self.partitions)
        return await self.publish_raw(partition, envelope.encode())

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[str]:
        """All at once (no await in between): consumers see the batch whole or not at all."""
        ids: list[str] = []
        for envelope in envelopes:
            partition = partition_for(envelope.key, self.partitions)
            message = Message(id=f"{next(self._ids)}-0", partition=partition,
                              body=envelope.encode())
            self._queues[partition].append(message)
            ids.append(message.id)
        if ids:
            self._published.set()
        return ids

    async def publish_raw(self, partition: int, body: bytes) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range 0..{self.partitions - 1}")
        message = Message(id=f"{next(self._ids)}-0", partition=partition, body=body)
        self._queues[partition].append(message)
        self._published.set()
        return message.id

    async def fetch(
        self, consumer: str, count: int, block_ms: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(block_ms, 0) / 1000
        while True:
            taken = self._take(consumer, count, partitions)
            remaining = deadline - loop.time()
            if taken or remaining <= 0 or self._closed:
                return taken
            self._published.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._published.wait()
            except TimeoutError:
                return self._take(consumer, count, partitions)

    def _take(
        self, consumer: str, count: int, partitions: Collection[int] | None = None
    ) -> list[Message]:
        """Hand out up to ``count`` undelivered messages, visiting partitions round-robin."""
        taken: list[Message] = []
        now = asyncio.get_running_loop().time()
        start = self._next_partition
        self._next_partition = (start + 1) % self.partitions
        while len(taken) < count:
            progressed = False
            for offset in range(self.partitions):
                partition = (start + offset) % self.partitions
                if partitions is not None and partition not in partitions:
                    continue
                queue = self._queues[partition]
                if queue and len(taken) < count:
                    message = queue.popleft()
                    self._pending[message.id] = _Pending(message, consumer, now)
                    taken.append(dataclasses.replace(message, deliveries=1))
                    progressed = True
            if not progressed:
                break
        return taken

    async def ack(self, message: Message) -> None:
        self._pending.pop(message.id, None)

    async def dead_letter(self, message: Message, letter: DeadLetter) -> None:
        """Append to the DLQ and ack in one step (no await in between: atomic in the loop)."""
        self._dlq.append(dataclasses.replace(letter, id=f"{next(self._dlq_ids)}-0"))
        self._pending.pop(message.id, None)

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        now = asyncio.get_running_loop().time()
        oldest_first = self._oldest_first(self._pending.values())
        return claim_idle(oldest_first, consumer, min_idle_ms, count, now, partitions)

    async def touch(
        self, consumer: str, messages: Iterable[Message],
        partitions: Collection[int] | None = None,
    ) -> None:
        """Keep messages still being worked on from being reclaimed (``held.refresh``)."""
        refresh(self._pending, consumer, messages, asyncio.get_running_loop().time())

    @staticmethod
    def _oldest_first(entries: Iterable[_Pending]) -> list[_Pending]:
        def order(entry: _Pending) -> tuple[int, int]:
            return entry.message.partition, int(entry.message.id.split("-")[0])

        return sorted(entries, key=order)

    async def pending(self) -> int:
        return len(self._pending)

    async def undelivered(self) -> int:
        """Messages stored but never handed out (consumer lag)."""
        return sum(len(queue) for queue in self._queues)

    async def partition_depths(self) -> dict[int, PartitionDepth]:
        """Exact counts: queued (lag) and in the pending set (pending), per partition."""
        pending = [0] * self.partitions
        for entry in self._pending.values():
            pending[entry.message.partition] += 1
        return {
            p: PartitionDepth(lag=len(queue), pending=pending[p])
            for p, queue in enumerate(self._queues)
        }

    async def dlq_size(self) -> int:
        return len(self._dlq)

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        return list(self._dlq[:limit])

    async def dlq_get(self, dlq_id: str) -> DeadLetter | None:
        return next((letter for letter in self._dlq if letter.id == dlq_id), None)

    async def dlq_delete(self, dlq_ids: Sequence[str]) -> int:
        doomed = set(dlq_ids)
        kept = [letter for letter in self._dlq if letter.id not in doomed]
        removed = len(self._dlq) - len(kept)
        self._dlq = kept
        return removed

    async def set_paused(self, paused: bool) -> None:
        """Shared by every consumer of this process (the only ones this bus has)."""
        self._paused = paused

    async def is_paused(self) -> bool:
        return self._paused

    async def close(self) -> None:
        self._closed = True
        self._published.set()  # blocked fetchers return at once
