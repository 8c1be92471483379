"""``Bus.partition_depths``: lag (stored, never delivered) and pending (delivered, not acked)
per partition, on every backend (memory, SQLite, Redis db 8 flushed around each test, RabbitMQ
under a unique name prefix deleted afterwards)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from tests.contract.test_bus import BACKENDS, PARTITIONS, flush, open_bus, redis_db_url

from tradewire import names
from tradewire.bus.base import Bus, DeadLetter, PartitionDepth
from tradewire.bus.redis_streams import RedisStreamsBus

REDIS_TEST_DB = 8
EMPTY = PartitionDepth(lag=0, pending=0)


@pytest.fixture(params=BACKENDS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    async with open_bus(request.param, request, redis_db=REDIS_TEST_DB) as opened:
        yield opened


async def depths_become(bus: Bus, expected: dict[int, PartitionDepth]) -> None:
    """RabbitMQ pushes messages to the process asynchronously: allow a moment to settle."""
    got: dict[int, PartitionDepth] = {}
    for _ in range(100):
        got = await bus.partition_depths()
        if got == expected:
            return
        await asyncio.sleep(0.02)
    assert got == expected


async def test_an_empty_bus_reports_every_partition_at_zero(bus: Bus) -> None:
    """Every partition is present, even those that never held a message."""
    assert await bus.partition_depths() == dict.fromkeys(range(PARTITIONS), EMPTY)


async def test_lag_and_pending_follow_fetch_and_ack(bus: Bus) -> None:
    """3 published to partition 1, 1 fetched: lag 2, pending 1; after the ack: pending 0."""
    for i in range(3):
        await bus.publish_raw(1, f"m{i}".encode())
    await depths_become(bus, {0: EMPTY, 1: PartitionDepth(3, 0), 2: EMPTY, 3: EMPTY})
    [message] = await bus.fetch("c1", 1, 500)
    assert message.partition == 1
    await depths_become(bus, {0: EMPTY, 1: PartitionDepth(2, 1), 2: EMPTY, 3: EMPTY})
    await bus.ack(message)
    await depths_become(bus, {0: EMPTY, 1: PartitionDepth(2, 0), 2: EMPTY, 3: EMPTY})


async def test_dead_lettering_clears_pending(bus: Bus) -> None:
    """A dead-lettered message is no longer pending; it shows up in the DLQ size instead."""
    await bus.publish_raw(2, b"bad")
    [message] = await bus.fetch("c1", 1, 500)
    await depths_become(bus, {0: EMPTY, 1: EMPTY, 2: PartitionDepth(0, 1), 3: EMPTY})
    letter = DeadLetter(
        id="", original_id=message.id, partition=2, body=message.body, attempts=1,
        error="boom", error_type="PermanentError", first_failed_ms=1, last_failed_ms=2,
    )
    await bus.dead_letter(message, letter)
    await depths_become(bus, dict.fromkeys(range(PARTITIONS), EMPTY))
    assert await bus.dlq_size() == 1


@pytest.mark.redis
async def test_redis_counts_lag_itself_when_redis_reports_none(
    request: pytest.FixtureRequest,
) -> None:
    """After XGROUP SETID without ENTRIESREAD Redis reports ``lag`` nil: the entries after the
    group's last-delivered id are counted instead."""
    base = request.getfixturevalue("redis_url")
    url = redis_db_url(base, REDIS_TEST_DB)
    await flush(url)
    bus = RedisStreamsBus(url, PARTITIONS)
    raw = aioredis.Redis.from_url(url)
    try:
        ids = [await bus.publish_raw(0, f"m{i}".encode()) for i in range(4)]
        await raw.xdel(names.partition_name(0), ids[1])  # a tombstone inside the undelivered range
        groups = await raw.xinfo_groups(names.partition_name(0))
        assert groups[0]["lag"] is None
        assert (await bus.partition_depths())[0] == PartitionDepth(lag=3, pending=0)
    finally:
        await raw.aclose()
        await bus.close()
        await flush(url)
