"""Bus on Redis Streams (Redis >= 7.0): one stream per partition, one consumer group.

* Streams ``ws-events.<p>`` and the group ``workers`` are created (MKSTREAM, id ``0``) by
  ``setup()``, which every method runs once lazily; call it eagerly to fail fast at startup.
* ``publish_many`` runs the same XADDs as ``publish`` through a Lua script, one call per 100
  messages, the calls pipelined: one round trip, half the client CPU of a pipeline of XADDs.
  It goes through its own lean connection (``bus.redis_pipe``: hiredis packing and parsing,
  replies matched in order, calls from several tasks pipelined) instead of redis-py's client,
  whose per-call overhead exceeded the round trip; TLS URLs keep redis-py.
* ``fetch`` is one XREADGROUP ``>`` over every partition stream. Redis applies COUNT per
  stream, so ``fetch`` asks for ``ceil(count / partitions)`` per stream and may return up to
  ``partitions - 1`` messages more than ``count``.
* ``fetch(partitions=...)`` (partition ownership, ``bus.ownership``): the consumer name inside
  the group is the partition slot ``p<partition>`` (``bus.redis_slots``). A partition that was
  not in the previous call's set is first read from id ``0`` (the pending entries a previous
  owner left under the same slot name) until empty, then with ``>``; ``reclaim``/``touch``
  with ``partitions`` use the slot names too (XAUTOCLAIM stays the safety net).
* ``dead_letter`` runs one Lua script: XADD to ``ws-events.dlq`` then XACK of the original. A
  script is atomic like MULTI/EXEC, and in addition an error in the XADD (e.g. a wrong key type)
  aborts it before the XACK, so a message is never acked without its DLQ entry (MULTI/EXEC would
  still run the XACK after a failed XADD).
* ``reclaim`` iterates XAUTOCLAIM cursors per partition (kept between calls, so a large PEL is
  scanned in pieces, not from ``0-0`` each time). Redis 7 drops entries whose ids were trimmed.
* ``touch`` (XCLAIM JUSTID) resets the idle time of messages a live consumer is still working
  on, so that ``reclaim`` elsewhere only takes messages of dead consumers.
* DLQ entries are entries of the stream ``ws-events.dlq``: ``dlq_get`` is XRANGE id id,
  ``dlq_delete`` is XDEL. The pause flag is the key ``ws-events:paused`` (``names.PAUSED``), shared
  by every process on the same Redis.
* ``trim`` uses MINID bounded by the oldest pending and the last-delivered id of every group:
  it never removes pending or undelivered entries (plain MAXLEN would, silently).

``redis`` is imported when the bus is constructed, not when this module is imported; constructing
the bus opens no connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from tradewire import names
from tradewire.bus.base import (
    DeadLetter,
    Envelope,
    Landed,
    Message,
    PartitionDepth,
    partition_for,
)
from tradewire.bus.redis_pipe import RedisPipe
from tradewire.bus.redis_slots import SlotReader

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.typing import StreamIdT

_BODY = b"body"
_LAG_SCAN_MAX = 10_000  # bound of the XRANGE count used when Redis reports no ``lag``
_STREAM_ID = re.compile(r"^\d+(-\d+)?$")

_PUBLISH_CHUNK = 100  # messages per script call of ``publish_many``
# KEYS: the partition stream of each message. ARGV: the bodies, in the same order. Returns the
# ids joined by spaces: one bulk string parses far faster in redis-py than an array of them.
_PUBLISH_MANY_LUA = """
local ids = {}
for i = 1, #KEYS do
    ids[i] = redis.call('XADD', KEYS[i], '*', 'body', ARGV[i])
end
return table.concat(ids, ' ')
"""

# KEYS: partition stream, DLQ stream. ARGV: group, message id, then the DLQ entry's fields.
_DEAD_LETTER_LUA = """
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
"""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _int(fields: dict[bytes, bytes], name: str) -> int:
    try:
        return int(fields.get(name.encode(), b"0"))
    except ValueError:
        return 0


def _extra(raw: bytes) -> dict[str, str]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {"unparsed": _text(raw)}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _letter(entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        id=_text(entry_id),
        original_id=_text(fields.get(b"original_id", b"")),
        partition=_int(fields, "partition"),
        body=fields.get(_BODY, b""),
        attempts=_int(fields, "attempts"),
        error=_text(fields.get(b"error", b"")),
        error_type=_text(fields.get(b"error_type", b"")),
        first_failed_ms=_int(fields, "first_failed_ms"),
        last_failed_ms=_int(fields, "last_failed_ms"),
        extra=_extra(fields.get(b"extra", b"")),
    )


def _letter_fields(letter: DeadLetter) -> list[str | bytes]:
    fields: dict[str, str | bytes] = {
        "original_id": letter.original_id,
        "partition": str(letter.partition),
        "body": letter.body,
        "attempts": str(letter.attempts),
        "error": letter.error,
        "error_type": letter.error_type,
        "first_failed_ms": str(letter.first_failed_ms),
        "last_failed_ms": str(letter.last_failed_ms),
        "extra": json.dumps(letter.extra, separators=(",", ":")),
    }
    return list(itertools.chain.from_iterable(fields.items()))


class RedisStreamsBus:
    """``Bus`` on Redis Streams; stream, DLQ and group names come from ``tradewire.names``."""

    def __init__(
        self, url: str, partitions: int = names.DEFAULT_PARTITIONS, *,
        group: str = names.WORKER_GROUP,
    ) -> None:
        from redis.asyncio import Redis

        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.partitions = partitions
        self.group = group
        self._redis: Redis = Redis.from_url(url)
        self._streams = [names.partition_name(p) for p in range(partitions)]
        self._partition_of = {name.encode(): p for p, name in enumerate(self._streams)}
        self._cursors = ["0-0"] * partitions
        self._next_reclaim = 0
        self._dead_letter = self._redis.register_script(_DEAD_LETTER_LUA)
        self._publish_many = self._redis.register_script(_PUBLISH_MANY_LUA)
        # the publish path's own lean connection (``bus.redis_pipe``); None: redis-py (TLS)
        self._pipe = RedisPipe.for_client(self._redis) if RedisPipe.supported(self._redis) else None
        self._slots = SlotReader(self)
        self._ready = False
        self._setup_lock = asyncio.Lock()

    async def setup(self) -> None:
        """Create every partition stream and the consumer group (idempotent)."""
        from redis.exceptions import ResponseError

        async with self._setup_lock:
            if self._ready:
                return
            for stream in self._streams:
                try:
                    await self._redis.xgroup_create(stream, self.group, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._ready = True

    async def _ensure(self) -> None:
        if not self._ready:
            await self.setup()

    async def publish(self, envelope: Envelope) -> str:
        partition = partition_for(envelope.key, self.partitions)
        return await self.publish_raw(partition, envelope.encode())

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[str]:
        """The XADDs ``publish`` would send (same streams, same field), run by a Lua script per
        ``_PUBLISH_CHUNK`` messages, the scripts pipelined: one round trip, one reply per chunk
        (the ids joined by spaces). Half the client CPU per message of a pipeline of XADDs
        (redis-py packs and parses each command separately). Redis runs each script without
        interleaving other clients (about 0.2 ms for 100 order updates here), hence the chunks. An
        error stops a script; what was added before stays (a retry may duplicate it)."""
        if not envelopes:
            return []
        await self._ensure()
        if self._pipe is not None:
            replies = await self._pipe.call(*self._publish_scripts(envelopes))
            return [entry_id for reply in replies for entry_id in _text(reply).split(" ")]
        streams, partitions = self._streams, self.partitions
        keys = [streams[partition_for(env.key, partitions)] for env in envelopes]
        bodies = [env.encode() for env in envelopes]
        if len(keys) <= _PUBLISH_CHUNK:
            return _text(await self._publish_many(keys=keys, args=bodies)).split(" ")
        from redis.exceptions import NoScriptError

        try:
            replies = await self._publish_chunks(keys, bodies)
        except NoScriptError:  # Redis restarted or SCRIPT FLUSH: no script ran; load it
            await self._redis.script_load(_PUBLISH_MANY_LUA)
            replies = await self._publish_chunks(keys, bodies)
        return [entry_id for reply in replies for entry_id in _text(reply).split(" ")]

    def start_publish(self, envelopes: Sequence[Envelope], on_done: Landed) -> bool:
        """``publish_many`` started without awaiting (``PublishStarter``): the scripts are
        written now on the lean connection, and ``on_done(None)`` (stored) or
        ``on_done(error)`` comes later from its reply handling, never from inside this call.
        False, nothing written, until ``setup`` ran and the connection is open (``publish_many``
        opens it), and always on TLS (no lean connection)."""
        pipe = self._pipe
        if pipe is None or not self._ready or not envelopes:
            return False

        def landed(outcome: list[Any] | BaseException) -> None:
            on_done(outcome if isinstance(outcome, BaseException) else None)

        return pipe.send(self._publish_scripts(envelopes), landed)

    def _publish_scripts(self, envelopes: Sequence[Envelope]) -> list[tuple[Any, ...]]:
        """The script calls of ``publish_many``, one per ``_PUBLISH_CHUNK`` envelopes."""
        streams, partitions = self._streams, self.partitions
        keys = [streams[partition_for(env.key, partitions)] for env in envelopes]
        bodies = [env.encode() for env in envelopes]
        return [("EVAL", _PUBLISH_MANY_LUA, len(keys[i:i + _PUBLISH_CHUNK]),
                 *keys[i:i + _PUBLISH_CHUNK], *bodies[i:i + _PUBLISH_CHUNK])
                for i in range(0, len(keys), _PUBLISH_CHUNK)]

    async def _publish_chunks(self, keys: list[str], bodies: list[bytes]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for i in range(0, len(keys), _PUBLISH_CHUNK):
            chunk = keys[i:i + _PUBLISH_CHUNK]
            pipe.evalsha(self._publish_many.sha, len(chunk), *chunk, *bodies[i:i + _PUBLISH_CHUNK])
        return list(await pipe.execute())

    async def publish_raw(self, partition: int, body: bytes) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range 0..{self.partitions - 1}")
        await self._ensure()
        return _text(await self._redis.xadd(self._streams[partition], {_BODY: body}))

    async def fetch(
        self, consumer: str, count: int, block_ms: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        from redis.exceptions import ResponseError

        await self._ensure()
        if partitions is not None:
            return await self._slots.fetch(partitions, count, block_ms)
        per_stream = max(1, -(-count // self.partitions))
        try:
            reply: Any = await self._redis.xreadgroup(  # RESP2: [[stream, entries], ...]
                self.group, consumer, dict.fromkeys(self._streams, ">"),
                count=per_stream, block=block_ms if block_ms > 0 else None,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ready = False  # a stream was deleted behind our back: recreate it
            await self.setup()
            return []
        return [m for stream, entries in reply or [] for m in self._messages(stream, entries)]

    def _messages(self, stream: bytes, entries: Iterable[Any]) -> list[Message]:
        partition = self._partition_of[stream]
        return [
            Message(id=_text(entry_id), partition=partition, body=(fields or {}).get(_BODY, b""))
            for entry_id, fields in entries
        ]

    async def ack(self, message: Message) -> None:
        await self._redis.xack(self._streams[message.partition], self.group, message.id)

    async def ack_many(self, messages: Sequence[Message]) -> None:
        """One XACK per partition (every id of it), all in one pipelined round trip."""
        by_partition: dict[int, list[str]] = defaultdict(list)
        for message in messages:
            by_partition[message.partition].append(message.id)
        if len(by_partition) == 1:
            (partition, ids), = by_partition.items()
            await self._redis.xack(self._streams[partition], self.group, *ids)
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for partition, ids in by_partition.items():
                pipe.xack(self._streams[partition], self.group, *ids)
            await pipe.execute()

    async def dead_letter(self, message: Message, letter: DeadLetter) -> None:
        await self._ensure()
        keys = [self._streams[message.partition], names.DLQ]
        await self._dead_letter(keys=keys, args=[self.group, message.id, *_letter_fields(letter)])

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        await self._ensure()
        claimed: list[Message] = []
        start = self._next_reclaim
        self._next_reclaim = (start + 1) % self.partitions
        for offset in range(self.partitions):
            if len(claimed) >= count:
                break
            partition = (start + offset) % self.partitions
            if partitions is not None and partition not in partitions:
                continue
            name = consumer if partitions is None else names.partition_consumer(partition)
            claimed += await self._reclaim_partition(
                partition, name, min_idle_ms, count - len(claimed)
            )
        await self._add_deliveries(consumer if partitions is None else None, claimed)
        return claimed

    async def _reclaim_partition(
        self, partition: int, consumer: str, min_idle_ms: int, count: int
    ) -> list[Message]:
        stream = self._streams[partition]
        out: list[Message] = []
        while len(out) < count:
            reply: list[Any] = await self._redis.xautoclaim(
                stream, self.group, consumer, min_idle_ms, self._cursors[partition],
                count=count - len(out),
            )  # [next cursor, claimed entries, ids deleted from the PEL (trimmed entries)]
            self._cursors[partition] = _text(reply[0])
            out += self._messages(stream.encode(), reply[1])
            if self._cursors[partition] == "0-0":
                break
        return out

    async def _add_deliveries(self, consumer: str | None, messages: list[Message]) -> None:
        """Fill ``Message.deliveries`` from the PEL's delivery counters (``consumer`` None:
        the partition slot of each message)."""
        if not messages:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for m in messages:
                name = consumer or names.partition_consumer(m.partition)
                pipe.xpending_range(self._streams[m.partition], self.group, m.id, m.id, 1, name)
            replies = await pipe.execute()
        for message, rows in zip(messages, replies, strict=True):
            if rows:
                message.deliveries = int(rows[0]["times_delivered"])

    async def touch(
        self, consumer: str, messages: Iterable[Message],
        partitions: Collection[int] | None = None,
    ) -> None:
        """Reset the idle time of messages still being worked on (XCLAIM JUSTID: the delivery
        count is unchanged), so that ``reclaim`` elsewhere does not take them away. With
        ``partitions`` (ownership mode) they stay under their partition slot."""
        by_partition: dict[int, list[StreamIdT]] = defaultdict(list)
        for message in messages:
            by_partition[message.partition].append(message.id)
        if not by_partition:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for partition, ids in by_partition.items():
                name = consumer if partitions is None else names.partition_consumer(partition)
                pipe.xclaim(self._streams[partition], self.group, name, 0, ids, justid=True)
            await pipe.execute()

    async def pending(self) -> int:
        await self._ensure()
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in self._streams:
                pipe.xpending(stream, self.group)
            replies = await pipe.execute()
        return sum(int(reply["pending"]) for reply in replies)

    async def partition_depths(self) -> dict[int, PartitionDepth]:
        """One XINFO GROUPS per stream (pipelined); this bus's group gives ``pending`` (its PEL
        size, all consumers, all processes) and ``lag`` (entries never delivered to the group).

        Redis reports ``lag`` as nil when it cannot compute it (entries deleted with XDEL
        inside the undelivered range, a group position set without ENTRIESREAD). Then: the
        entries after the group's ``last-delivered-id``, counted with XRANGE up to
        ``_LAG_SCAN_MAX`` (a lower bound beyond that). ``XLEN - entries-read`` is not used: it
        is wrong as soon as acknowledged entries have been trimmed, which ``trim`` does.
        """
        await self._ensure()
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in self._streams:
                pipe.xinfo_groups(stream)
            replies: list[Any] = await pipe.execute()
        depths: dict[int, PartitionDepth] = {}
        for partition, groups in enumerate(replies):
            group = next((g for g in groups if _text(g["name"]) == self.group), None)
            if group is None:
                depths[partition] = PartitionDepth(lag=0, pending=0)
                continue
            lag = group.get("lag")
            if lag is None:
                lag = await self._count_after(partition, _text(group["last-delivered-id"]))
            depths[partition] = PartitionDepth(lag=int(lag), pending=int(group["pending"]))
        return depths

    async def _count_after(self, partition: int, stream_id: str) -> int:
        entries: list[Any] = await self._redis.xrange(
            self._streams[partition], f"({stream_id}", "+", count=_LAG_SCAN_MAX
        ) or []
        return len(entries)

    async def dlq_size(self) -> int:
        return int(await self._redis.xlen(names.DLQ))

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        entries: list[Any] = await self._redis.xrange(names.DLQ, count=limit) or []
        return [_letter(entry_id, fields) for entry_id, fields in entries]

    async def dlq_get(self, dlq_id: str) -> DeadLetter | None:
        if not _STREAM_ID.match(dlq_id):
            return None
        entries: list[Any] = await self._redis.xrange(names.DLQ, dlq_id, dlq_id, count=1) or []
        return _letter(*entries[0]) if entries else None

    async def dlq_delete(self, dlq_ids: Sequence[str]) -> int:
        valid = [i for i in dlq_ids if _STREAM_ID.match(i)]
        return int(await self._redis.xdel(names.DLQ, *valid)) if valid else 0

    async def set_paused(self, paused: bool) -> None:
        if paused:
            await self._redis.set(names.PAUSED, b"1")
        else:
            await self._redis.delete(names.PAUSED)

    async def is_paused(self) -> bool:
        return bool(await self._redis.exists(names.PAUSED))

    async def trim(self, retain_ms: int = 0) -> int:
        """Remove acknowledged entries from every partition stream; returns how many.

        The MINID threshold is the smallest of: the oldest pending id and the last-delivered id
        of every group of the stream, and ``now - retain_ms`` when ``retain_ms`` > 0. Entries
        at or above it (everything pending or never delivered) are kept.
        """
        await self._ensure()
        removed = 0
        for stream in self._streams:
            threshold = await self._safe_min_id(stream, retain_ms)
            if threshold is not None:
                removed += int(await self._redis.xtrim(stream, minid=threshold, approximate=False))
        return removed

    async def _safe_min_id(self, stream: str, retain_ms: int) -> str | None:
        groups = await self._redis.xinfo_groups(stream)
        if not groups:
            return None  # nobody consumes this stream: trimming could drop undelivered work
        bounds = [_text(group["last-delivered-id"]) for group in groups]
        for group in groups:
            summary = await self._redis.xpending(stream, group["name"])
            if summary["min"] is not None:
                bounds.append(_text(summary["min"]))
        if retain_ms > 0:
            seconds, micros = await self._redis.time()
            bounds.append(f"{seconds * 1000 + micros // 1000 - retain_ms}-0")
        return min(bounds, key=_id_key)

    async def close(self) -> None:
        if self._pipe is not None:
            await self._pipe.close()
        await self._redis.aclose()
