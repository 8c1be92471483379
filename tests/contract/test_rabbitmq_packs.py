"""RabbitMQ packs: ``publish_many`` stores the envelopes of one partition as one AMQP message.

What must stay true with packs (``tradewire.bus.rabbitmq``): per-key order; a pack is acked on
the broker only once every message of it is acked or dead-lettered, so a process that dies
half-way loses nothing (the whole pack comes back, the acked part as duplicates the worker's
idempotency absorbs); a message given back (partition moved) requeues the whole pack once its
handed-out siblings are settled; a pack whose header does not describe its body is handed out
whole and dead-lettered by the consumer as malformed, never dropped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from test_bus import PARTITIONS, envelope, fetch_all, letter_for

from tradewire import names
from tradewire.bus.base import Envelope, Message, partition_for
from tradewire.bus.consumer import Consumer
from tradewire.bus.rabbitmq import PACK_HEADER, RabbitMQBus, delete_namespace, pack_parts

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def namespace(rabbitmq_url: str) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}."
    yield name
    await delete_namespace(rabbitmq_url, name, PARTITIONS)


def buses(url: str, namespace: str, n: int, **options: int) -> list[RabbitMQBus]:
    return [RabbitMQBus(url, PARTITIONS, namespace=namespace, **options) for _ in range(n)]


async def fetch_n(bus: RabbitMQBus, consumer: str, n: int, timeout_s: float = 5.0) -> list[Message]:
    """Fetch until ``n`` messages arrived (requeues reach the next consumer asynchronously)."""
    got: list[Message] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < n:
            got += await bus.fetch(consumer, n - len(got), 50)
    return got


async def ready(bus: RabbitMQBus, partition: int) -> int:
    """Stored AMQP messages of a partition queue (nobody consuming it)."""
    return (await bus.partition_depths())[partition].lag


def test_pack_parts_reads_only_a_header_that_describes_the_body() -> None:
    assert pack_parts({PACK_HEADER: "2,0,3"}, b"abxyz") == [b"ab", b"", b"xyz"]
    assert pack_parts({PACK_HEADER: b"5"}, b"abxyz") == [b"abxyz"]
    assert pack_parts({}, b"abxyz") is None
    for bad in ("2,2", "2,4", "a,3", "", "-1,6", "2,,3"):
        assert pack_parts({PACK_HEADER: bad}, b"abxyz") is None, bad


async def test_publish_many_stores_a_partition_s_envelopes_in_packs_of_pack_max(
    rabbitmq_url: str, namespace: str
) -> None:
    """120 envelopes of one key with pack_max 50: 3 AMQP messages, handed out as 120
    messages in order whose ids are the ones publish_many returned; pack_max 1: 120."""
    packed, single = buses(rabbitmq_url, namespace, 1)[0], None
    try:
        sent = [envelope(seq=i) for i in range(120)]
        partition = partition_for(sent[0].key, PARTITIONS)
        ids = await packed.publish_many(sent)
        assert await ready(packed, partition) == 3
        assert len(set(ids)) == 120 and ids[0].endswith(".0") and ids[50].endswith(".0")
        got = await fetch_all(packed, "c1")
        assert [m.id for m in got] == ids
        assert [Envelope.decode(m.body) for m in got] == sent
        for message in got:
            await packed.ack(message)
        assert await packed.pending() == 0
        await packed.close()  # it consumes every partition now
        single = RabbitMQBus(rabbitmq_url, PARTITIONS, namespace=namespace, pack_max=1)
        await single.publish_many(sent)
        assert await ready(single, partition) == 120
    finally:
        await packed.close()
        if single is not None:
            await single.close()


async def test_a_pack_is_acked_only_when_its_last_message_is(
    rabbitmq_url: str, namespace: str
) -> None:
    """One message of a pack acked, one dead-lettered, one still open when the process goes:
    the broker gives the whole pack to the next process (each message with deliveries 2);
    once all three are settled there, nothing is left to redeliver."""
    dead, alive, after = buses(rabbitmq_url, namespace, 3)
    try:
        sent = [envelope(seq=i) for i in range(3)]
        await dead.publish_many(sent)
        first, second, _third = await fetch_all(dead, "dead")
        await dead.ack(first)
        await dead.dead_letter(second, letter_for(second))
        await dead.close()
        again = await fetch_n(alive, "alive", 3)
        assert [(Envelope.decode(m.body), m.deliveries) for m in again] == [
            (env, 2) for env in sent
        ]
        for message in again:
            await alive.ack(message)
        assert await alive.pending() == 0
        await alive.close()
        assert await fetch_all(after, "after") == []
        [letter] = await after.dlq_list()
        assert letter.original_id == second.id and letter.body == second.body
    finally:
        for bus in (dead, alive, after):
            await bus.close()


async def test_a_pack_whose_partition_moves_is_requeued_whole_once_settled(
    rabbitmq_url: str, namespace: str
) -> None:
    """Two of five messages handed out, then the partition is given up: the three buffered
    ones are returned at once, but the pack stays with this process until the two handed-out
    ones are settled (one acked, one given back); then the next owner gets all five, in order."""
    old, new = buses(rabbitmq_url, namespace, 2)
    try:
        sent = [envelope(seq=i) for i in range(5)]
        partition = partition_for(sent[0].key, PARTITIONS)
        await old.publish_many(sent)
        first, second = await old.fetch("old", 2, 1_000, partitions={partition})
        assert await old.fetch("old", 10, 50, partitions=set()) == []  # partition given up
        assert await new.fetch("new", 10, 300) == []  # still held by the old owner
        await old.ack(first)
        await old.give_back([second])
        again = await fetch_n(new, "new", 5)
        assert [Envelope.decode(m.body) for m in again] == sent
        assert {m.deliveries for m in again} == {2}
    finally:
        await old.close()
        await new.close()


async def test_a_pack_with_a_header_not_matching_its_body_is_dead_lettered_whole(
    rabbitmq_url: str, namespace: str
) -> None:
    """A message claiming parts its body does not have is one malformed message: the
    consumer dead-letters it with the whole body (nothing dropped, nothing half-processed)."""
    import aio_pika

    bus = buses(rabbitmq_url, namespace, 1)[0]
    try:
        await bus.setup()
        body = envelope(seq=1).encode() + envelope(seq=2).encode()
        connection = await aio_pika.connect(rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(namespace + names.EVENTS)
            await exchange.publish(
                aio_pika.Message(body, headers={PACK_HEADER: "10,20"}), routing_key="0"
            )
        handled: list[Envelope] = []

        async def handler(env: Envelope) -> None:
            handled.append(env)

        consumer = Consumer(bus, handler, name="w1", block_ms=50)
        await consumer.drain(timeout_s=10)
        assert handled == []
        [letter] = await bus.dlq_list()
        assert letter.body == body and letter.error_type == "PermanentError"
        assert await bus.pending() == 0
    finally:
        await bus.close()
