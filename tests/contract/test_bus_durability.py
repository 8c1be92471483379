"""What a crashed process leaves behind is not lost: the durable SQLite bus and RabbitMQ.

A "crash" here is dropping the bus object without acking (``close`` releases the file / the
connection but acks nothing); ``tests/e2e/test_kill9_embedded.py`` does it with a real SIGKILL.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from test_bus import PARTITIONS, envelope, fetch_all, letter_for

from tradewire.bus.base import Envelope
from tradewire.bus.consumer import Consumer
from tradewire.bus.rabbitmq import RabbitMQBus, delete_namespace
from tradewire.bus.sqlite_bus import SqliteBus


async def test_a_fetched_unacked_message_survives_and_is_reclaimed_after_reopen(
    tmp_path: Path,
) -> None:
    """Publish, fetch without ack, "crash"; a new bus on the same file reclaims the message
    (delivery count raised), processes it, and the never-fetched one is still there."""
    path = tmp_path / "bus.db"
    first = SqliteBus(path, PARTITIONS)
    await first.publish(envelope(seq=1))
    await first.publish(envelope(seq=2))
    [lost] = await first.fetch("dead", 1, 100)
    await first.close()

    second = SqliteBus(path, PARTITIONS)
    try:
        assert await second.pending() == 1
        await asyncio.sleep(0.03)
        [again] = await second.reclaim("alive", 20, 10)
        assert (again.id, again.body, again.deliveries) == (lost.id, lost.body, 2)
        seen: list[int] = []

        async def handler(env: Envelope) -> None:
            seen.append(env.event["seq"])

        await second.ack(again)
        seen.append(Envelope.decode(again.body).event["seq"])
        await Consumer(second, handler, name="alive", block_ms=20).drain(5)
        assert seen == [1, 2]
        assert await second.pending() == 0
    finally:
        await second.close()


async def test_a_consumer_on_the_reopened_file_reclaims_by_itself(tmp_path: Path) -> None:
    """The ``Consumer`` policy alone (idle reclaim) finishes what the dead process left."""
    path = tmp_path / "bus.db"
    first = SqliteBus(path, PARTITIONS)
    for seq in range(5):
        await first.publish(envelope(seq=seq))
    assert len(await first.fetch("dead", 3, 100)) == 3
    await first.close()

    second = SqliteBus(path, PARTITIONS)
    seen: list[int] = []

    async def handler(env: Envelope) -> None:
        seen.append(env.event["seq"])

    consumer = Consumer(second, handler, name="alive", redelivery_idle_s=0.1, block_ms=20)
    try:
        await consumer.drain(5)
    finally:
        await second.close()
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert consumer.stats.reclaimed == 3


async def test_dlq_pause_flag_and_stored_messages_persist(tmp_path: Path) -> None:
    """DLQ entries, the pause flag and undelivered messages are in the file, not the object."""
    path = tmp_path / "bus.db"
    first = SqliteBus(path, PARTITIONS)
    await first.publish(envelope(seq=1))
    [message] = await first.fetch("c1", 1, 100)
    await first.dead_letter(message, letter_for(message))
    await first.set_paused(True)
    await first.publish(envelope(seq=2))
    await first.close()

    second = SqliteBus(path, PARTITIONS)
    try:
        assert await second.is_paused()
        [stored] = await second.dlq_list()
        assert stored.summary() | {"id": ""} == letter_for(message).summary()
        assert await second.dlq_get(stored.id) == stored
        assert await second.dlq_delete([stored.id, "nope"]) == 1
        assert await second.dlq_size() == 0 and await second.pending() == 0
        [left] = await second.fetch("c2", 10, 100)
        assert Envelope.decode(left.body).event["seq"] == 2
        await second.set_paused(False)
        assert not await second.is_paused()
    finally:
        await second.close()


@pytest.mark.rabbitmq
async def test_rabbitmq_requeues_what_a_closed_connection_held(rabbitmq_url: str) -> None:
    """A bus (process) that fetched and went away without acking: the broker requeues its
    messages and another bus receives them with ``deliveries`` = 2 (``x-delivery-count``); the
    pause flag and the DLQ are shared through the broker."""
    namespace = f"test-{uuid.uuid4().hex[:10]}."
    dead = RabbitMQBus(rabbitmq_url, PARTITIONS, namespace=namespace)
    alive = RabbitMQBus(rabbitmq_url, PARTITIONS, namespace=namespace)
    try:
        sent = [envelope(seq=i) for i in range(3)]
        for env in sent:
            await dead.publish(env)
        [first, *rest] = await fetch_all(dead, "dead")
        await dead.dead_letter(first, letter_for(first))
        await dead.set_paused(True)
        assert await alive.reclaim("alive", 0, 10) == []  # nothing held in this process
        await dead.close()
        again = await fetch_all(alive, "alive")
        assert [(m.id, m.body, m.deliveries) for m in again] == [
            (m.id, m.body, 2) for m in rest
        ]
        for message in again:
            await alive.ack(message)
        assert await alive.pending() == 0
        assert await alive.is_paused()
        [letter] = await alive.dlq_list()
        assert letter.original_id == first.id and letter.body == first.body
    finally:
        await dead.close()
        await alive.close()
        await delete_namespace(rabbitmq_url, namespace, PARTITIONS)
