"""DLQ tools and the pause flag on every backend: embedded and Redis Streams (Redis db 14,
flushed around each test)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

from tradewire.bus import dlq
from tradewire.bus.base import Bus, DeadLetter, Envelope, Message
from tradewire.bus.consumer import Consumer
from tradewire.bus.embedded import EmbeddedBus
from tradewire.bus.redis_streams import RedisStreamsBus

REDIS_DB = 14
PARTITIONS = 4
NOW = 1_767_000_000_000
HOUR_MS = 3_600_000


def db14(redis_url: str) -> str:
    return urlunsplit(urlsplit(redis_url)._replace(path=f"/{REDIS_DB}"))


async def flushdb(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "embedded":
        opened: Bus = EmbeddedBus(PARTITIONS)
        url = ""
    else:
        url = db14(request.getfixturevalue("redis_url"))
        await flushdb(url)
        opened = RedisStreamsBus(url, PARTITIONS)
    try:
        yield opened
    finally:
        await opened.close()
        if url:
            await flushdb(url)


def envelope(user_id: int, symbol: str, seq: int = 0) -> Envelope:
    return Envelope(
        event_id=f"ev-{user_id}-{symbol}-{seq}", account_id=user_id, user_id=user_id,
        symbol=symbol, received_ms=NOW + seq, event={"e": "ORDER_TRADE_UPDATE", "seq": seq},
    )


async def bury(
    bus: Bus, body: bytes, *, partition: int = 0, error: str = "db down",
    error_type: str = "OperationalError", failed_ms: int = NOW, extra: dict[str, str] | None = None,
) -> DeadLetter:
    """Publish a body, fetch it and dead-letter it; returns the stored DLQ entry."""
    await bus.publish_raw(partition, body)
    got: list[Message] = []
    while not got:
        got = await bus.fetch("c1", 1, 100)
    [message] = got
    letter = DeadLetter(
        id="", original_id=message.id, partition=message.partition, body=message.body,
        attempts=3, error=error, error_type=error_type, first_failed_ms=failed_ms - 3000,
        last_failed_ms=failed_ms, extra=extra or {},
    )
    await bus.dead_letter(message, letter)
    return (await bus.dlq_list(1000))[-1]


async def bury_env(
    bus: Bus, env: Envelope, *, error: str = "db down", error_type: str = "OperationalError",
    failed_ms: int = NOW,
) -> DeadLetter:
    extra = {"user_id": str(env.user_id), "symbol": env.symbol}
    return await bury(bus, env.encode(), extra=extra, error=error, error_type=error_type,
                      failed_ms=failed_ms)


async def test_get_and_delete_by_id(bus: Bus) -> None:
    """``dlq_get`` finds an entry by id (None for unknown or malformed ids) and ``dlq_delete``
    removes only the named entries, counting them."""
    a = await bury_env(bus, envelope(1, "BTCUSDT"))
    b = await bury_env(bus, envelope(2, "ETHUSDT"))
    assert await bus.dlq_get(a.id) == a
    assert await bus.dlq_get("999999-0") is None
    assert await bus.dlq_get("not-an-id") is None
    assert await bus.dlq_delete([a.id, "999999-0", "junk"]) == 1
    assert [x.id for x in await bus.dlq_list()] == [b.id]
    assert await bus.dlq_delete([]) == 0


async def test_filters_select_by_user_symbol_error_and_age(bus: Bus) -> None:
    """Each filter narrows the list: user id, symbol (any case), error text, and age."""
    a = await bury_env(bus, envelope(1, "BTCUSDT"), failed_ms=NOW - 2 * HOUR_MS)
    b = await bury_env(bus, envelope(2, "ETHUSDT"), error="timeout", error_type="TimeoutError")
    c = await bury_env(bus, envelope(1, "ETHUSDT"), failed_ms=NOW - 10_000)

    async def ids(**kw: Any) -> list[str]:
        return [x.id for x in await dlq.select(bus, dlq.DlqFilter(**kw), NOW)]

    assert await ids() == [a.id, b.id, c.id]
    assert await ids(user_id=1) == [a.id, c.id]
    assert await ids(symbol="ethusdt") == [b.id, c.id]
    assert await ids(error="TIMEOUT") == [b.id]
    assert await ids(error="operational") == [a.id, c.id]
    assert await ids(older_than_ms=dlq.parse_age("1h")) == [a.id]
    assert await ids(user_id=1, symbol="ETHUSDT") == [c.id]


async def test_user_and_symbol_come_from_the_body_when_extra_lacks_them(bus: Bus) -> None:
    """An entry without user/symbol in ``extra`` is still found through its decoded body."""
    letter = await bury(bus, envelope(7, "SOLUSDT").encode())
    assert [x.id for x in await dlq.select(bus, dlq.DlqFilter(user_id=7), NOW)] == [letter.id]
    shown = dlq.describe(letter, NOW)
    assert (shown["user_id"], shown["symbol"], shown["valid_envelope"]) == (7, "SOLUSDT", True)


async def test_replay_marks_replay_of_and_is_processed_once(bus: Bus) -> None:
    """A replayed entry is republished to its key's partition with ``replay_of`` set, leaves
    the DLQ, and a consumer then processes it exactly once."""
    env = envelope(3, "BTCUSDT")
    letter = await bury_env(bus, env)
    [outcome] = await dlq.replay(bus, [letter])
    assert (outcome.action, outcome.id) == ("replayed", letter.id) and outcome.new_id
    assert await bus.dlq_size() == 0
    seen: list[Envelope] = []

    async def handler(e: Envelope) -> None:
        seen.append(e)

    consumer = Consumer(bus, handler, name="w", block_ms=20, redelivery_idle_s=5)
    await consumer.drain(5)
    assert seen == [dataclasses.replace(env, replay_of=letter.id)]
    assert consumer.stats.processed == 1 and await bus.pending() == 0


async def test_dry_run_changes_nothing(bus: Bus) -> None:
    """Dry-run replay and purge report their plan but leave the DLQ and partitions untouched."""
    letter = await bury_env(bus, envelope(1, "BTCUSDT"))
    [r] = await dlq.replay(bus, [letter], dry_run=True)
    [p] = await dlq.purge(bus, [letter], dry_run=True)
    assert (r.action, r.new_id, p.action) == ("would-replay", None, "would-purge")
    assert await bus.dlq_list() == [letter]
    assert await bus.fetch("c2", 10, 20) == []


async def test_an_invalid_body_is_replayed_only_with_force(bus: Bus) -> None:
    """A body that is not an envelope is skipped, and republished raw to its partition with
    ``force``."""
    letter = await bury(bus, b"not json", partition=2)
    [skipped] = await dlq.replay(bus, [letter])
    assert skipped.action == "skipped" and await bus.dlq_size() == 1
    [forced] = await dlq.replay(bus, [letter], force=True)
    assert forced.action == "replayed" and await bus.dlq_size() == 0
    got: list[Message] = []
    while not got:
        got = await bus.fetch("c2", 1, 100)
    assert (got[0].partition, got[0].body) == (2, b"not json")


async def test_purge_removes_the_selected_entries(bus: Bus) -> None:
    """Purging by filter deletes the matching entries and keeps the rest."""
    await bury_env(bus, envelope(1, "BTCUSDT"))
    keep = await bury_env(bus, envelope(2, "BTCUSDT"))
    doomed = await dlq.select(bus, dlq.DlqFilter(user_id=1), NOW)
    assert [o.action for o in await dlq.purge(bus, doomed)] == ["purged"]
    assert await bus.dlq_list() == [keep]


async def test_pause_stops_consumption_and_resume_continues_without_loss(bus: Bus) -> None:
    """While paused a running consumer fetches nothing; after resume every message is
    processed once."""
    seen: list[int] = []

    async def handler(e: Envelope) -> None:
        seen.append(int(e.event["seq"]))

    consumer = Consumer(bus, handler, name="w", block_ms=20, pause_check_s=0.02,
                        redelivery_idle_s=5)
    await bus.set_paused(True)
    assert await bus.is_paused()
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        for i in range(5):
            await bus.publish(envelope(1, "BTCUSDT", i))
        await asyncio.sleep(0.3)
        assert seen == [] and consumer.stats.paused_checks >= 2
        await bus.set_paused(False)
        async with asyncio.timeout(5):
            while len(seen) < 5:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running
    assert seen == [0, 1, 2, 3, 4] and not await bus.is_paused()


async def test_drain_gives_up_at_its_deadline_while_paused(bus: Bus) -> None:
    """``drain`` on a paused bus raises ``TimeoutError`` instead of waiting forever."""

    async def handler(e: Envelope) -> None:
        return None

    await bus.publish(envelope(1, "BTCUSDT"))
    await bus.set_paused(True)
    consumer = Consumer(bus, handler, name="w", block_ms=20, pause_check_s=0.02)
    with pytest.raises(TimeoutError):
        await consumer.drain(0.2)
    assert consumer.stats.processed == 0
