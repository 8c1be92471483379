"""Bus on RabbitMQ (AMQP 0.9.1 via ``aio_pika``): quorum queues, publisher confirms, manual acks.

* Topology (declared lazily, idempotently): direct exchange ``ws-events``; one durable quorum
  queue ``ws-events.<p>`` per partition bound with routing key ``<p>``; the DLQ ``ws-events.dlq``
  and the pause flag ``ws-events.paused`` are durable *classic* queues (nobody consumes them;
  classic because listing the DLQ requeues its messages, and on RabbitMQ >= 4.0 a quorum queue
  would count those requeues against its default delivery limit of 20 and drop the entries).
* ``publish`` sends a persistent message (``message_id`` = a fresh uuid, the stable
  ``Message.id``) and returns after the broker's publisher confirm.
* ``publish_many`` packs the envelopes of one partition into one AMQP message (up to
  ``pack_max``, default 50, in order; header ``tw-parts`` = the comma-separated byte lengths
  of the bodies): the broker stores, confirms, delivers and acks a pack once, which is what
  the per-message costs of a quorum queue and of aio-pika/aiormq made the bottleneck (see
  docs/benchmarks.md). The consumer side unpacks a delivery into one ``Message`` per body
  (``Message.id`` = ``<message_id>.<n>``, each with the delivery's ``x-delivery-count``); the
  delivery is basic.ack'ed when every message of it is acked or dead-lettered, and
  nack-requeued when any was given back (its partition moved): the new owner then sees the
  whole pack again, the already processed events as duplicates (idempotent processing), a
  dead-lettered one possibly as a second DLQ entry. A delivery whose ``tw-parts`` does not
  describe its body is handed out whole, as one message (the consumer dead-letters it as
  malformed; nothing is dropped). A pack redelivered because a process died counts one more
  delivery for every message in it: a pack that kills ``max_attempts`` processes in a row is
  dead-lettered whole, including events processed before (replaying those is a no-op).
  ``pack_max`` 1 keeps one AMQP message per event.
* ``fetch``: on first use the bus starts one basic.consume per partition queue (manual acks,
  per-consumer ``prefetch``), which fills an in-process buffer per partition; ``fetch`` hands
  out buffered messages round-robin over partitions and waits up to ``block_ms`` for one.
  A bus that only publishes (the streams role) never consumes. Handed-out messages stay
  unacked until ``ack`` (basic.ack); ``prefetch`` bounds buffered + unacked AMQP deliveries
  per partition (so at most ``prefetch * pack_max`` events).
* ``fetch(partitions=...)`` (ownership by ``bus.ownership`` on Redis): basic.consume only the
  owned partition queues; a partition that leaves the set is basic.cancel'ed and its buffered,
  never handed-out messages are nack-requeued at once for the new owner, and so are deliveries
  of it that arrive after the cancel; handed-out ones stay unacked until acked, requeued by
  ``give_back`` when the consumer drops them unstarted (partition lost), or requeued when the
  connection closes.
* ``Message.deliveries`` = ``x-delivery-count`` + 1 (quorum queues count returns). No
  ``x-delivery-limit`` is set (3.x: unlimited; >= 4.0: 20, far above the consumer's 3 attempts).
* ``reclaim``: across processes there is nothing to do: when a consumer process dies its
  connection closes and RabbitMQ requeues its unacked messages, which the surviving consumers
  receive with a raised ``x-delivery-count``. Within one process (one bus shared by several
  named consumers) ``reclaim``/``touch`` follow the other backends: a message held idle longer
  than ``min_idle_ms`` is handed to the caller with ``deliveries`` + 1 (same delivery tag).
* ``pending`` counts the messages handed out *by this process* and not yet acked (AMQP exposes
  no cluster-wide unacked count without the management API).
* ``dead_letter``: publish the ``DeadLetter`` to ``ws-events.dlq`` (persistent, confirmed),
  THEN basic.ack the original. Not atomic: a crash between the two redelivers the original, which
  can end in a second DLQ entry with the same ``original_id`` (duplicate recognisable); a letter
  is never lost. A failed DLQ publish leaves the original unacked.
* DLQ tooling: ``dlq_size`` = ready count from queue.declare-ok. ``dlq_list``/``dlq_get``/
  ``dlq_delete`` basic.get every entry (unacked) on a private channel, then basic.ack the deleted
  ones and nack-requeue the rest; entries are sorted by id (``<ms>-<hex>``). Scans are serialised
  per bus; a concurrent scan in another process briefly hides the entries it holds.
* ``set_paused``: the flag is "``ws-events.paused`` holds a message" (max-length 1, never
  consumed): pause publishes one, resume purges; ``is_paused`` reads the ready count.

``aio_pika`` is imported on first use; constructing the bus opens no connection. ``namespace``
prefixes every exchange/queue name (tests use a unique one and ``delete_namespace``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradewire import names
from tradewire.bus.base import DeadLetter, Envelope, Message, PartitionDepth, partition_for
from tradewire.bus.held import claim_idle, refresh
from tradewire.names import DEFAULT_PARTITIONS

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractChannel,
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustConnection,
    )

PAUSED_QUEUE = f"{names.EVENTS}.paused"
_DLQ_SCAN_MAX = 100_000
_QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
_PERSISTENT = 2  # AMQP delivery mode
PACK_HEADER = "tw-parts"  # a pack's body lengths, comma-separated
DEFAULT_PACK_MAX = 50


def _queue_names(namespace: str, partitions: int) -> tuple[str, list[str], str, str]:
    """Exchange, partition queues, DLQ, pause-flag queue."""
    parts = [namespace + names.partition_name(p) for p in range(partitions)]
    return namespace + names.EVENTS, parts, namespace + names.DLQ, namespace + PAUSED_QUEUE


def pack_parts(headers: Mapping[str, Any] | None, body: bytes) -> list[bytes] | None:
    """The bodies packed in one AMQP message, or None: not a pack, or a ``tw-parts`` header
    that does not describe the body (not integers, negative, not summing to its length)."""
    raw = (headers or {}).get(PACK_HEADER)
    if raw is None:
        return None
    try:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        lengths = [int(length) for length in text.split(",")]
    except (ValueError, UnicodeDecodeError):
        return None
    if min(lengths) < 0 or sum(lengths) != len(body):
        return None
    parts: list[bytes] = []
    start = 0
    for length in lengths:
        parts.append(body[start:start + length])
        start += length
    return parts


@dataclass(eq=False)
class _Delivery:
    """One AMQP delivery and how many of its messages are still open (buffered or handed
    out). When none is left it is settled: basic.ack, or nack-requeue if any was returned."""

    incoming: AbstractIncomingMessage
    open: int
    returned: bool = False

    def close_one(self, *, returned: bool = False) -> bool:
        """One of its messages is done (acked, dead-lettered) or returned; True: the last."""
        self.open -= 1
        self.returned = self.returned or returned
        return self.open == 0


@dataclass
class _Held:
    delivery: _Delivery
    message: Message
    consumer: str
    delivered_at: float  # event-loop time


def _letter(incoming: AbstractIncomingMessage) -> DeadLetter:
    """A DLQ message: body = the original body, header ``tw-letter`` = the other fields (JSON)."""
    raw = (incoming.headers or {}).get("tw-letter", "{}")
    meta = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    meta.pop("id", None)
    meta.pop("body", None)
    return DeadLetter(id=incoming.message_id or "", body=incoming.body, **meta)


class RabbitMQBus:
    """``Bus`` on RabbitMQ quorum queues; see the module docstring for the semantics."""

    def __init__(
        self, url: str, partitions: int = DEFAULT_PARTITIONS, *, prefetch: int = 100,
        namespace: str = "", pack_max: int = DEFAULT_PACK_MAX,
    ) -> None:
        if partitions < 1 or prefetch < 1 or pack_max < 1:
            raise ValueError("partitions, prefetch and pack_max must be >= 1")
        self.partitions = partitions
        self.url = url
        self.prefetch = prefetch
        self.pack_max = pack_max
        self._exchange_name, self._queues, self._dlq, self._paused = _queue_names(
            namespace, partitions
        )
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consuming: AbstractChannel | None = None
        self._tags: dict[int, tuple[AbstractQueue, str]] = {}  # consumed partition queues
        self._wanted: set[int] = set()  # partitions whose deliveries are buffered (see receive)
        # unpacked deliveries, one entry per message, not yet handed out
        self._buffers: list[deque[tuple[_Delivery, Message]]] = [
            deque() for _ in range(partitions)
        ]
        self._arrived = asyncio.Event()
        self._held: dict[str, _Held] = {}
        self._declared: dict[str, AbstractQueue] = {}
        self._setup_lock = asyncio.Lock()
        self._dlq_lock = asyncio.Lock()
        self._next_partition = 0
        self._closed = False

    # -- connection and topology ---------------------------------------------------------------

    async def setup(self) -> None:
        """Connect and declare the topology (every method does it lazily)."""
        async with self._setup_lock:
            if self._pub is not None:
                return
            import aio_pika

            self._conn = await aio_pika.connect_robust(self.url)
            self._conn.reconnect_callbacks.add(self._on_reconnect)
            self._pub = await self._conn.channel(publisher_confirms=True)
            self._exchange = await self._pub.declare_exchange(
                self._exchange_name, aio_pika.ExchangeType.DIRECT, durable=True
            )
            for partition, name in enumerate(self._queues):
                queue = await self._pub.declare_queue(name, durable=True, arguments=_QUORUM)
                await queue.bind(self._exchange, routing_key=str(partition))
            self._declared[self._dlq] = await self._pub.declare_queue(self._dlq, durable=True)
            self._declared[self._paused] = await self._pub.declare_queue(
                self._paused, durable=True,
                arguments={"x-max-length": 1, "x-overflow": "drop-head"},
            )

    def _on_reconnect(self, *_: Any) -> None:
        """After a reconnect the old delivery tags are void; the broker requeued them."""
        self._held.clear()
        for buffer in self._buffers:
            buffer.clear()

    async def _publisher(self) -> tuple[AbstractChannel, AbstractExchange]:
        if self._closed:
            raise RuntimeError("bus is closed")
        await self.setup()
        assert self._pub is not None and self._exchange is not None
        return self._pub, self._exchange

    async def _start_consuming(self, partitions: Collection[int] | None = None) -> None:
        """Consume exactly the queues of ``partitions`` (None: all of them)."""
        await self._publisher()
        wanted = set(range(self.partitions) if partitions is None else partitions)
        if self._consuming is not None and wanted == set(self._tags):
            return
        async with self._setup_lock:
            if self._conn is None:
                return
            if self._consuming is None:
                channel = await self._conn.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=self.prefetch)
                self._consuming = channel
            for partition in sorted(set(self._tags) - wanted):
                queue, tag = self._tags[partition]
                self._wanted.discard(partition)
                await queue.cancel(tag)
                del self._tags[partition]  # from now on a late delivery is requeued at once
                buffer = self._buffers[partition]
                returned = [d for d, _ in buffer if d.close_one(returned=True)]
                buffer.clear()
                await self._settle(returned)
            for partition in sorted(wanted - set(self._tags)):
                if not 0 <= partition < self.partitions:
                    continue
                queue = await self._consuming.declare_queue(  # declared: restored on reconnect
                    self._queues[partition], durable=True, arguments=_QUORUM
                )
                self._wanted.add(partition)
                tag = await queue.consume(self._receiver(partition), no_ack=False)
                self._tags[partition] = (queue, tag)

    def _receiver(self, partition: int) -> Any:
        async def receive(incoming: AbstractIncomingMessage) -> None:
            if partition not in self._wanted and partition not in self._tags:
                # a delivery of a partition already cancelled: aiormq runs delivery callbacks
                # as tasks, so it can land after the buffer was requeued; handing it out would
                # strand it (the lane of a partition not held drops it, unacked, until the
                # connection closes): give it back for the new owner at once
                await incoming.nack(requeue=True)
                return
            # while its basic.cancel is under way a delivery is buffered, not requeued: the
            # broker would hand it straight back to this consumer (each return counts as a
            # delivery: a few such bounces dead-lettered an event); the cancel requeues it
            self._buffers[partition].extend(self._unpack(partition, incoming))
            if partition not in self._wanted:
                return
            self._arrived.set()

        return receive

    @staticmethod
    def _unpack(
        partition: int, incoming: AbstractIncomingMessage
    ) -> list[tuple[_Delivery, Message]]:
        """The messages of one delivery (a pack's, or the delivery's own body)."""
        headers = incoming.headers or {}
        count_header = headers.get("x-delivery-count", 0)
        deliveries = (count_header if isinstance(count_header, int) else 0) + 1
        base = incoming.message_id or f"{partition}:{incoming.delivery_tag}"
        parts = pack_parts(headers, incoming.body)
        if parts is None:
            messages = [Message(base, partition, incoming.body, deliveries)]
        else:
            messages = [
                Message(f"{base}.{n}", partition, body, deliveries)
                for n, body in enumerate(parts)
            ]
        delivery = _Delivery(incoming, len(messages))
        return [(delivery, message) for message in messages]

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, envelope: Envelope) -> str:
        partition = partition_for(envelope.key, self.partitions)
        return await self.publish_raw(partition, envelope.encode())

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[str]:
        """Publish the envelopes of each partition in packs of up to ``pack_max`` (one AMQP
        message each; a lone envelope as a plain message) on the confirm channel, then await
        all the confirms. Ids: ``<message_id>.<n>`` for the n-th envelope of a pack.

        The publishes are started in order and take the channel's (FIFO) lock in that order,
        so the broker receives them in order; the call returns when every one is confirmed and
        raises the first error after all have settled (the others may be stored).

        Sent through the underlying aiormq channel without waiting for each frame to be
        written before the next one takes the lock (``wait=False``; the confirm is still
        awaited): aio-pika's ``exchange.publish`` waits for that write, one socket send and a
        few event-loop turns per message, about 0.6 ms of CPU each (publishing 20,000 took
        15 s)."""
        if not envelopes:
            return []
        from aiormq.channel import Channel
        from pamqp.commands import Basic
        from pamqp.common import FieldTable

        channel, _ = await self._publisher()
        underlay = await channel.get_underlay_channel()
        assert isinstance(underlay, Channel)  # its basic_publish takes ``wait``
        ids = [""] * len(envelopes)
        by_partition: dict[int, list[int]] = {}
        for index, envelope in enumerate(envelopes):
            by_partition.setdefault(partition_for(envelope.key, self.partitions), []).append(index)
        sends = []
        for partition, indexes in by_partition.items():
            for start in range(0, len(indexes), self.pack_max):
                pack = indexes[start:start + self.pack_max]
                bodies = [envelopes[index].encode() for index in pack]
                message_id = uuid.uuid4().hex
                headers: FieldTable | None = None
                if len(pack) == 1:
                    ids[pack[0]] = message_id
                else:
                    for n, index in enumerate(pack):
                        ids[index] = f"{message_id}.{n}"
                    headers = {PACK_HEADER: ",".join(str(len(body)) for body in bodies)}
                sends.append(asyncio.ensure_future(underlay.basic_publish(
                    b"".join(bodies), exchange=self._exchange_name, routing_key=str(partition),
                    properties=Basic.Properties(
                        message_id=message_id, delivery_mode=_PERSISTENT, headers=headers
                    ),
                    mandatory=True, wait=False,
                )))
        results = await asyncio.gather(*sends, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return ids

    async def publish_raw(self, partition: int, body: bytes) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range 0..{self.partitions - 1}")
        import aio_pika

        _, exchange = await self._publisher()
        message_id = uuid.uuid4().hex
        await exchange.publish(
            aio_pika.Message(
                body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            routing_key=str(partition), mandatory=True,
        )
        return message_id

    # -- consuming -----------------------------------------------------------------------------

    async def fetch(
        self, consumer: str, count: int, block_ms: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        await self._start_consuming(partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(block_ms, 0) / 1000
        while not self._closed:
            self._arrived.clear()
            taken = self._take(consumer, count)
            remaining = deadline - loop.time()
            if taken or remaining <= 0:
                return taken
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return self._take(consumer, count)
        return []

    def _take(self, consumer: str, count: int) -> list[Message]:
        taken: list[Message] = []
        now = asyncio.get_running_loop().time()
        start = self._next_partition
        self._next_partition = (start + 1) % self.partitions
        while len(taken) < count:
            progressed = False
            for offset in range(self.partitions):
                partition = (start + offset) % self.partitions
                buffer = self._buffers[partition]
                if buffer and len(taken) < count and partition in self._wanted:
                    delivery, message = buffer.popleft()
                    self._held[message.id] = _Held(delivery, message, consumer, now)
                    taken.append(dataclasses.replace(message))
                    progressed = True
            if not progressed:
                break
        return taken

    async def ack(self, message: Message) -> None:
        await self.ack_many([message])

    async def ack_many(self, messages: Sequence[Message]) -> None:
        """Ack messages (``bus.acks``: a committed batch at once); a delivery is basic.ack'ed
        when its last message is (see ``_settle``)."""
        await self._close(messages, returned=False)

    async def give_back(self, messages: list[Message]) -> None:
        """Requeue handed-out messages this process will not process (their partition moved
        to another consumer before they started): otherwise they would stay unacked here until
        the connection closes. A pack is requeued whole once its other messages are settled."""
        await self._close(messages, returned=True)

    async def _close(self, messages: Iterable[Message], *, returned: bool) -> None:
        settled = [
            held.delivery for m in messages
            if (held := self._held.pop(m.id, None)) is not None
            and held.delivery.close_one(returned=returned)
        ]
        await self._settle(settled)

    @staticmethod
    async def _settle(deliveries: Sequence[_Delivery]) -> None:
        """Requeue the deliveries with a returned message, basic.ack the others: each frame
        queued without waiting for it to be written except the last (frames go out in order),
        one event-loop wait per batch instead of per message. ``multiple=True`` is not used:
        it would also ack older deliveries of the channel still in other lanes."""
        for delivery in deliveries:
            if delivery.returned:
                await delivery.incoming.nack(requeue=True)
        acks = [d for d in deliveries if not d.returned and d.incoming.delivery_tag is not None]
        for n, delivery in enumerate(acks, 1):
            tag = delivery.incoming.delivery_tag
            assert tag is not None
            await delivery.incoming.channel.basic_ack(tag, wait=n == len(acks))

    async def dead_letter(self, message: Message, letter: DeadLetter) -> None:
        """Confirmed publish to the DLQ, then ack (at-least-once; see the module docstring)."""
        import aio_pika

        channel, _ = await self._publisher()
        meta = {k: v for k, v in dataclasses.asdict(letter).items() if k not in ("id", "body")}
        dlq_id = f"{time.time_ns() // 1_000_000:013d}-{uuid.uuid4().hex[:12]}"
        await channel.default_exchange.publish(
            aio_pika.Message(
                letter.body, message_id=dlq_id, headers={"tw-letter": json.dumps(meta)},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self._dlq, mandatory=True,
        )
        await self.ack(message)

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        """In-process takeover only; a dead process's messages are requeued by the broker."""
        now = asyncio.get_running_loop().time()
        return claim_idle(list(self._held.values()), consumer, min_idle_ms, count, now,
                          partitions)

    async def touch(
        self, consumer: str, messages: Iterable[Message],
        partitions: Collection[int] | None = None,
    ) -> None:
        refresh(self._held, consumer, messages, asyncio.get_running_loop().time())

    async def pending(self) -> int:
        return len(self._held)

    # -- DLQ and control -----------------------------------------------------------------------

    async def _ready(self, name: str) -> int:
        """Ready messages of a queue: re-declare (same arguments) and read declare-ok."""
        await self._publisher()
        result = await self._declared[name].declare()
        return int(result.message_count or 0)

    async def partition_depths(self) -> dict[int, PartitionDepth]:
        """``lag`` = the ready count of each partition queue (passive declare: broker-wide;
        AMQP messages, a pack counts once) plus this process's buffered, not yet fetched
        messages (unpacked); ``pending`` = messages THIS
        process has handed out and not acked. Both are partly per process: declare-ok has no
        unacked count, so other processes' buffered and handed-out messages are in neither."""
        channel, _ = await self._publisher()
        pending = [0] * self.partitions
        for held in self._held.values():
            pending[held.message.partition] += 1
        depths: dict[int, PartitionDepth] = {}
        for partition, name in enumerate(self._queues):
            queue = await channel.get_queue(name, ensure=False)
            declared = await queue.declare()  # passive=True on a queue got with ensure=False
            ready = int(declared.message_count or 0)
            lag = ready + len(self._buffers[partition])
            depths[partition] = PartitionDepth(lag=lag, pending=pending[partition])
        return depths

    async def dlq_size(self) -> int:
        return await self._ready(self._dlq)

    async def _dlq_scan(self, delete: set[str] | None = None) -> tuple[list[DeadLetter], int]:
        """Every DLQ entry (sorted by id); entries whose id is in ``delete`` are removed."""
        await self._publisher()
        assert self._conn is not None
        async with self._dlq_lock:
            channel = await self._conn.channel(publisher_confirms=False)
            try:
                queue = await channel.get_queue(self._dlq, ensure=False)
                held: list[AbstractIncomingMessage] = []
                while len(held) < _DLQ_SCAN_MAX:
                    incoming = await queue.get(no_ack=False, fail=False)
                    if incoming is None:
                        break
                    held.append(incoming)
                kept: list[DeadLetter] = []
                removed = 0
                for incoming in held:
                    if delete is not None and incoming.message_id in delete:
                        await incoming.ack()
                        removed += 1
                    else:
                        kept.append(_letter(incoming))
                        await incoming.nack(requeue=True)
            finally:
                await channel.close()
        return sorted(kept, key=lambda letter: letter.id), removed

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        letters, _ = await self._dlq_scan()
        return letters[:limit]

    async def dlq_get(self, dlq_id: str) -> DeadLetter | None:
        letters, _ = await self._dlq_scan()
        return next((letter for letter in letters if letter.id == dlq_id), None)

    async def dlq_delete(self, dlq_ids: Sequence[str]) -> int:
        if not dlq_ids:
            return 0
        _, removed = await self._dlq_scan(set(dlq_ids))
        return removed

    async def set_paused(self, paused: bool) -> None:
        import aio_pika

        channel, _ = await self._publisher()
        if paused:
            await channel.default_exchange.publish(
                aio_pika.Message(b"1", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self._paused, mandatory=True,
            )
        else:
            queue = await channel.get_queue(self._paused, ensure=False)
            await queue.purge()

    async def is_paused(self) -> bool:
        return await self._ready(self._paused) > 0

    async def close(self) -> None:
        """Close the connection; unacked and buffered messages are requeued by the broker."""
        if self._closed:
            return
        self._closed = True
        self._arrived.set()
        self._held.clear()
        if self._conn is not None:
            await self._conn.close()


async def delete_namespace(url: str, namespace: str, partitions: int) -> None:
    """Delete every exchange and queue of a namespace (tests' cleanup)."""
    import aio_pika

    exchange, queues, dlq, paused = _queue_names(namespace, partitions)
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for name in [*queues, dlq, paused]:
            await channel.queue_delete(name)
        await channel.exchange_delete(exchange)
    finally:
        await connection.close()
