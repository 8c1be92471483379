"""``RedisStreamsBus.fetch(partitions=...)``: reading owned partitions under their slot names.

Inside the group, the consumer of partition ``p`` is always named ``p<p>`` (reference §1.4), so
the pending entries of a dead or paused owner are the new owner's own history:

* a partition that appears in ``partitions`` (newly owned) is read with XREADGROUP from id
  ``0`` — its pending entries, delivery counter bumped — page by page until empty;
* then new entries with ``>``: first one pipeline of XREADGROUP ``>`` per owned stream (with a
  backlog that is the whole fetch); when it found nothing, one MULTI with, per owned stream,
  XREADGROUP ``>`` and XREVRANGE
  ``+ - COUNT 1`` (the stream's last id at the same instant); when nothing was new, XREAD BLOCK
  from those last ids wakes up as soon as one of the streams grows, and the read is repeated
  until ``block_ms`` is over. No entry added after the MULTI can be missed by the XREAD.

A partition that leaves ``partitions`` is no longer read; its pending entries stay under its
slot for the next owner. COUNT is per stream (``ceil(count / owned)``), as for ``fetch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from tradewire import names
from tradewire.bus.base import Message

if TYPE_CHECKING:
    from tradewire.bus.redis_streams import RedisStreamsBus

_HISTORY_START = "0"
_MIN_BLOCK_MS = 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(reply: Any) -> list[Any]:
    """The entries of a single-stream XREADGROUP/XREAD reply (RESP2: [[stream, entries]])."""
    return list(reply[0][1]) if reply else []


class SlotReader:
    """Per-bus state of slot reads: which partitions still have history to read, and from
    which id."""

    def __init__(self, bus: RedisStreamsBus) -> None:
        self.bus = bus
        self._previous: frozenset[int] = frozenset()
        self._history: dict[int, str] = {}  # partition -> id after which to read history

    async def fetch(
        self, partitions: Collection[int], count: int, block_ms: int
    ) -> list[Message]:
        owned = sorted({p for p in partitions if 0 <= p < self.bus.partitions})
        for p in owned:
            if p not in self._previous:
                self._history[p] = _HISTORY_START
        self._history = {p: i for p, i in self._history.items() if p in owned}
        self._previous = frozenset(owned)
        if not owned:
            await asyncio.sleep(max(block_ms, 0) / 1000)
            return []
        per_stream = max(1, -(-count // len(owned)))
        if self._history and (history := await self._read_history(per_stream)):
            return history
        return await self._read_new(owned, per_stream, block_ms)

    async def _read_history(self, per_stream: int) -> list[Message]:
        bus, order = self.bus, sorted(self._history)
        async with bus._redis.pipeline(transaction=False) as pipe:
            for p in order:
                pipe.xreadgroup(
                    bus.group, names.partition_consumer(p),
                    {bus._streams[p]: self._history[p]}, count=per_stream,
                )
            replies = await pipe.execute()
        out: list[Message] = []
        for p, reply in zip(order, replies, strict=True):
            entries = _entries(reply)
            if not entries:
                del self._history[p]  # history read: from now on only new entries
                continue
            self._history[p] = _text(entries[-1][0])
            live = [(i, f) for i, f in entries if f]  # None: trimmed, nothing to process
            out += bus._messages(bus._streams[p].encode(), live)
        await bus._add_deliveries(None, out)
        return out

    async def _read_new(self, owned: list[int], per_stream: int, block_ms: int) -> list[Message]:
        from redis.exceptions import ResponseError

        bus = self.bus
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(block_ms, 0) / 1000
        streams = [bus._streams[p] for p in owned]
        try:  # with a backlog this is all: one pipelined XREADGROUP per owned stream
            async with bus._redis.pipeline(transaction=False) as pipe:
                for p, stream in zip(owned, streams, strict=True):
                    pipe.xreadgroup(
                        bus.group, names.partition_consumer(p), {stream: ">"}, count=per_stream
                    )
                replies = await pipe.execute()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            bus._ready = False  # a stream was deleted behind our back: recreate it
            await bus.setup()
            return []
        found = [m for stream, reply in zip(streams, replies, strict=True)
                 for m in bus._messages(stream.encode(), _entries(reply))]
        if found:
            return found
        while True:  # nothing new: read again with each stream's tail, then block on those
            try:
                async with bus._redis.pipeline(transaction=True) as pipe:
                    for p, stream in zip(owned, streams, strict=True):
                        pipe.xreadgroup(
                            bus.group, names.partition_consumer(p), {stream: ">"},
                            count=per_stream,
                        )
                        pipe.xrevrange(stream, "+", "-", count=1)
                    replies = await pipe.execute()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                bus._ready = False  # a stream was deleted behind our back: recreate it
                await bus.setup()
                return []
            out: list[Message] = []
            last_ids: dict[str, str] = {}
            for i, stream in enumerate(streams):
                out += bus._messages(stream.encode(), _entries(replies[2 * i]))
                tail = replies[2 * i + 1]
                last_ids[stream] = _text(tail[0][0]) if tail else "0-0"
            remaining_ms = int((deadline - loop.time()) * 1000)
            if out or remaining_ms < _MIN_BLOCK_MS:
                return out
            await bus._redis.xread(last_ids, count=1, block=remaining_ms)  # type: ignore[arg-type]
