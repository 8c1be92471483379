"""Bus contract: every backend stores, hands out, acks, dead-letters and reclaims alike.

The ``bus`` fixture runs each test on the in-memory embedded bus, the durable SQLite bus (a temp
file), Redis Streams (Redis db 15, flushed around each test; stream and group names are the
production ones from ``names``) and RabbitMQ (a unique name prefix per test, deleted afterwards).
``open_bus`` and ``envelope`` are reused by ``test_bus_consumer.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from tradewire import names
from tradewire.bus.base import Bus, DeadLetter, Envelope, Message, partition_for
from tradewire.bus.consumer import Consumer, SupportsTouch
from tradewire.bus.embedded import EmbeddedBus
from tradewire.bus.factory import create_bus
from tradewire.bus.rabbitmq import RabbitMQBus, delete_namespace
from tradewire.bus.redis_streams import RedisStreamsBus
from tradewire.bus.sqlite_bus import SqliteBus
from tradewire.config import Settings
from tradewire.errors import ConfigError, PermanentError

REDIS_TEST_DB = 15
PARTITIONS = 4
BACKENDS = [
    "embedded",
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
]


def redis_db_url(redis_url: str, db: int = REDIS_TEST_DB) -> str:
    return urlunsplit(urlsplit(redis_url)._replace(path=f"/{db}"))


async def flush(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@asynccontextmanager
async def open_bus(
    kind: str, request: pytest.FixtureRequest, *, redis_db: int = REDIS_TEST_DB
) -> AsyncIterator[Bus]:
    """A fresh, empty bus of the given backend; closed (and Redis db flushed) afterwards."""
    url = namespace = ""
    if kind == "embedded":
        bus: Bus = EmbeddedBus(PARTITIONS)
    elif kind == "sqlite":
        bus = SqliteBus(request.getfixturevalue("tmp_path") / "bus.db", PARTITIONS)
    elif kind == "rabbitmq":
        amqp_url = request.getfixturevalue("rabbitmq_url")
        namespace = f"test-{uuid.uuid4().hex[:10]}."
        bus = RabbitMQBus(amqp_url, PARTITIONS, namespace=namespace)
    else:
        url = redis_db_url(request.getfixturevalue("redis_url"), redis_db)
        await flush(url)
        bus = RedisStreamsBus(url, PARTITIONS)
    try:
        yield bus
    finally:
        await bus.close()
        if url:
            await flush(url)
        if namespace:
            await delete_namespace(request.getfixturevalue("rabbitmq_url"), namespace, PARTITIONS)


def envelope(account_id: int = 1, symbol: str = "BTCUSDT", seq: int = 0) -> Envelope:
    return Envelope(
        event_id=f"ev-{account_id}-{symbol}-{seq}", account_id=account_id,
        user_id=account_id * 10, symbol=symbol, received_ms=1_767_000_000_000 + seq,
        event={"e": "ORDER_TRADE_UPDATE", "seq": seq},
    )


def letter_for(message: Message, attempts: int = 3) -> DeadLetter:
    return DeadLetter(
        id="", original_id=message.id, partition=message.partition, body=message.body,
        attempts=attempts, error="boom", error_type="RuntimeError",
        first_failed_ms=1_000, last_failed_ms=2_000, extra={"consumer": "c1"},
    )


async def fetch_all(bus: Bus, consumer: str) -> list[Message]:
    """Everything not yet delivered (Redis hands out ``ceil(count / partitions)`` per stream)."""
    got: list[Message] = []
    while batch := await bus.fetch(consumer, 100, 20):
        got += batch
    return got


@pytest.fixture(params=BACKENDS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    async with open_bus(request.param, request) as opened:
        yield opened


async def test_published_messages_are_handed_out_once_and_acked(bus: Bus) -> None:
    """Fetched messages carry the published body, stay pending until acked, and are not
    handed out a second time."""
    sent = [envelope(seq=i) for i in range(3)]
    for env in sent:
        await bus.publish(env)
    got = await fetch_all(bus, "c1")
    assert [Envelope.decode(m.body) for m in got] == sent
    assert {m.deliveries for m in got} == {1}
    assert {m.partition for m in got} == {partition_for(sent[0].key, PARTITIONS)}
    assert await bus.pending() == 3
    assert await bus.fetch("c2", 10, 20) == []
    for message in got:
        await bus.ack(message)
    assert await bus.pending() == 0


async def test_fetch_blocks_until_a_message_arrives(bus: Bus) -> None:
    """An empty fetch waits up to ``block_ms`` and returns as soon as a message is published."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bus.fetch("c1", 1, 50) == []
    assert loop.time() - started >= 0.04
    waiting = asyncio.create_task(bus.fetch("c1", 1, 5_000))
    await asyncio.sleep(0.05)
    started = loop.time()
    await bus.publish(envelope())
    got = await waiting
    assert len(got) == 1 and loop.time() - started < 1.0


async def test_fetch_respects_count_within_one_partition(bus: Bus) -> None:
    """Messages of one key come out in publish order, ``count`` at a time."""
    sent = [envelope(seq=i) for i in range(7)]
    for env in sent:
        await bus.publish(env)
    seen: list[Envelope] = []
    while batch := await bus.fetch("c1", 2, 20):
        assert len(batch) <= 2
        seen += [Envelope.decode(m.body) for m in batch]
    assert seen == sent


async def test_publish_many_keeps_per_key_order_and_returns_one_id_each(bus: Bus) -> None:
    """A batch of interleaved keys: one id per envelope (unique within its partition, like
    every message id), each envelope in the partition ``publish`` would choose, every key's
    envelopes consumable in batch order, also after a single ``publish`` and across batches."""
    await bus.publish(envelope(account_id=1, seq=0))
    keys = [(1, "BTCUSDT"), (2, "ETHUSDT"), (3, ""), (1, "ETHUSDT")]
    first = [envelope(a, s, seq) for seq in range(1, 26) for a, s in keys]
    second = [envelope(a, s, seq) for seq in range(26, 31) for a, s in keys]
    ids = await bus.publish_many(first)
    ids += await bus.publish_many(second)
    assert await bus.publish_many([]) == []
    published = {
        (partition_for(env.key, PARTITIONS), message_id): env
        for message_id, env in zip(ids, first + second, strict=True)
    }
    assert len(published) == len(ids) == len(first) + len(second)
    got = await fetch_all(bus, "c1")
    assert len(got) == 1 + len(ids)
    by_key: dict[str, list[int]] = {}
    for message in got:
        env = Envelope.decode(message.body)
        assert message.partition == partition_for(env.key, PARTITIONS)
        by_key.setdefault(env.key, []).append(env.event["seq"])
        if env.event["seq"] > 0:  # the id publish_many returned is the id the consumer sees
            assert published.pop((message.partition, message.id)) == env
    assert published == {}
    assert by_key.pop("1:BTCUSDT") == list(range(31))
    assert by_key == {f"{a}:{s}": list(range(1, 31)) for a, s in keys[1:]}
    for message in got:
        await bus.ack(message)
    assert await bus.pending() == 0


async def test_a_large_publish_many_batch_is_stored_whole_and_in_order(bus: Bus) -> None:
    """500 envelopes of one key in one call (backends may split it internally, e.g. Redis
    sends one script per 100): all stored, in order, ids in order."""
    sent = [envelope(seq=i) for i in range(500)]
    ids = await bus.publish_many(sent)
    assert len(ids) == len(set(ids)) == 500
    got: list[Message] = []
    while batch := await bus.fetch("c1", 100, 20):  # acked as read: RabbitMQ's prefetch is 100
        got += batch
        for message in batch:
            await bus.ack(message)
    assert [m.id for m in got] == ids
    assert [Envelope.decode(m.body) for m in got] == sent


def test_the_envelope_body_is_compact_json_in_field_order() -> None:
    """The stored body format (read by every consumer, also across versions): compact JSON of
    the fields in declaration order, the event verbatim, ASCII-escaped."""
    env = Envelope(
        event_id="ev-1", account_id=7, user_id=70, symbol="BTCUSDT", received_ms=5,
        event={"e": "ORDER_TRADE_UPDATE", "o": {"s": "BTCUSDT", "q": "0.010", "n": [1, None]},
               "note": "é"},
    )
    assert env.encode() == (
        b'{"event_id":"ev-1","account_id":7,"user_id":70,"symbol":"BTCUSDT","received_ms":5,'
        b'"event":{"e":"ORDER_TRADE_UPDATE","o":{"s":"BTCUSDT","q":"0.010","n":[1,null]},'
        b'"note":"\\u00e9"},"synthetic":false,"replay_of":null}'
    )
    assert Envelope.decode(env.encode()) == env
    replayed = Envelope("ev-\u2028", 1, 2, "", 3, {}, synthetic=True, replay_of='d"1')
    assert replayed.encode() == (
        b'{"event_id":"ev-\\u2028","account_id":1,"user_id":2,"symbol":"","received_ms":3,'
        b'"event":{},"synthetic":true,"replay_of":"d\\"1"}'
    )
    assert Envelope.decode(replayed.encode()) == replayed


@pytest.mark.parametrize("event", [
    b'{"big":123456789012345678901234,"u64":18446744073709551616,"neg":-9223372036854775809}',
    b'{"nan":NaN,"inf":-Infinity}',
    b'{"lone":"\\ud800","f":1e-3,"n":[1,2.5,null,true]}',
    b'{"neg":-9223372036854775809,"min":-9223372036854775808,"u":9999999999999999999}',
], ids=["big-ints", "nan", "surrogate", "19-digit-below-int64"])
def test_decoding_reads_bodies_exactly_as_the_stdlib_json_does(event: bytes) -> None:
    """``Envelope.decode`` parses with orjson where it agrees with ``json.loads`` and with
    ``json.loads`` where it would not (integers beyond 64 bits, NaN, lone surrogates)."""
    body = (b'{"event_id":"ev-3","account_id":1,"user_id":2,"symbol":"","received_ms":3,'
            b'"event":' + event + b',"synthetic":false,"replay_of":null}')
    decoded = Envelope.decode(body).event
    expected = json.loads(event)
    assert repr(decoded) == repr(expected)  # NaN != NaN: compare the text of the values
    assert [type(v) for v in decoded.values()] == [type(v) for v in expected.values()]


def test_a_body_nested_too_deeply_is_a_permanent_error() -> None:
    """Nesting past both parsers' limits (orjson 1,024, json's recursion limit) is a malformed
    message: PermanentError (straight to the DLQ), not a RecursionError retried as transient."""
    body = (b'{"event_id":"ev-4","account_id":1,"user_id":2,"symbol":"","received_ms":3,'
            b'"event":{"x":' + b"[" * 5_000 + b"]" * 5_000 + b'},"synthetic":false}')
    with pytest.raises(PermanentError, match="malformed envelope"):
        Envelope.decode(body)


def test_an_envelope_with_its_raw_event_text_embeds_it_verbatim() -> None:
    """``raw_event`` (the text the event was parsed from) goes into the body as it came; the
    body decodes to the same envelope; equality ignores it."""
    raw = b'{"e": "ACCOUNT_UPDATE", "a": {"m": "ORDER", "B": [{"a": "USDT", "wb": "1.5"}]}}'
    plain = Envelope("ev-2", 7, 70, "", 9, json.loads(raw))
    with_raw = dataclasses.replace(plain, raw_event=raw)
    assert with_raw == plain
    assert with_raw.encode() == (
        b'{"event_id":"ev-2","account_id":7,"user_id":70,"symbol":"","received_ms":9,"event":'
        + raw + b',"synthetic":false,"replay_of":null}'
    )
    assert Envelope.decode(with_raw.encode()) == plain
    assert Envelope.decode(with_raw.encode()).encode() == plain.encode()


async def test_publish_raw_rejects_unknown_partitions(bus: Bus) -> None:
    """A partition outside 0..partitions-1 is a programming error."""
    with pytest.raises(ValueError):
        await bus.publish_raw(PARTITIONS, b"{}")


async def test_dead_letter_stores_the_failure_and_acks_the_original(bus: Bus) -> None:
    """The DLQ entry keeps body and failure metadata; the original is no longer pending."""
    await bus.publish(envelope())
    [message] = await bus.fetch("c1", 1, 100)
    await bus.dead_letter(message, letter_for(message))
    assert await bus.pending() == 0
    assert await bus.dlq_size() == 1
    [stored] = await bus.dlq_list()
    assert stored.id
    assert stored.summary() | {"id": ""} == letter_for(message).summary()


async def test_reclaim_takes_over_idle_messages_only(bus: Bus) -> None:
    """A message fetched by a consumer that never acks is handed to another consumer once it
    has been idle long enough, with its delivery count raised."""
    await bus.publish(envelope())
    [lost] = await bus.fetch("dead", 1, 100)
    assert await bus.reclaim("alive", 10_000, 10) == []
    await asyncio.sleep(0.05)
    [again] = await bus.reclaim("alive", 30, 10)
    assert (again.id, again.body, again.deliveries) == (lost.id, lost.body, 2)
    assert await bus.reclaim("other", 30, 10) == []  # claiming reset the idle time
    await bus.ack(again)
    assert await bus.pending() == 0


async def test_touch_keeps_a_message_from_being_reclaimed(bus: Bus) -> None:
    """Touching an in-flight message resets its idle time without counting a delivery."""
    assert isinstance(bus, SupportsTouch)
    await bus.publish(envelope())
    [message] = await bus.fetch("c1", 1, 100)
    await asyncio.sleep(0.05)
    await bus.touch("c1", [message])
    assert await bus.reclaim("thief", 40, 10) == []
    await asyncio.sleep(0.05)
    [claimed] = await bus.reclaim("thief", 40, 10)
    assert claimed.deliveries == 2


def test_factory_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    """``embedded`` (durable file under data_dir), ``sqlite:///``, ``memory``, ``redis://`` and
    ``amqp://`` select a backend; anything else is a configuration error."""
    embedded = create_bus(Settings(bus_url="embedded", data_dir=tmp_path))
    assert isinstance(embedded, SqliteBus) and embedded.path == tmp_path / "bus.db"
    sqlite = create_bus(Settings(bus_url=f"sqlite:///{tmp_path}/other.db"))
    assert isinstance(sqlite, SqliteBus) and sqlite.path == tmp_path / "other.db"
    assert isinstance(create_bus(Settings(bus_url="memory")), EmbeddedBus)
    amqp = create_bus(Settings(bus_url="amqp://guest:guest@127.0.0.1:5672/", bus_partitions=8))
    assert isinstance(amqp, RabbitMQBus) and amqp.partitions == 8
    redis_bus = create_bus(Settings(bus_url="redis://127.0.0.1:6379/15", bus_partitions=8))
    assert isinstance(redis_bus, RedisStreamsBus) and redis_bus.partitions == 8
    with pytest.raises(ConfigError):
        create_bus(Settings(bus_url="kafka://x"))


# -- Redis Streams only ------------------------------------------------------------------------


@pytest.fixture
async def redis_bus(request: pytest.FixtureRequest) -> AsyncIterator[RedisStreamsBus]:
    async with open_bus("redis", request) as opened:
        assert isinstance(opened, RedisStreamsBus)
        yield opened


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_db_url(redis_url))
    yield client
    await client.aclose()


@pytest.mark.redis
async def test_setup_creates_the_production_streams_and_group(
    redis_bus: RedisStreamsBus, raw: aioredis.Redis
) -> None:
    """Every partition stream exists with the worker group before anything is published."""
    await redis_bus.setup()
    for partition in range(PARTITIONS):
        groups = await raw.xinfo_groups(names.partition_name(partition))
        assert [g["name"] for g in groups] == [names.WORKER_GROUP.encode()]


@pytest.mark.redis
async def test_publish_many_survives_a_flushed_script_cache(
    redis_bus: RedisStreamsBus, raw: aioredis.Redis
) -> None:
    """After a Redis restart (or SCRIPT FLUSH) the publish script is loaded again, for small
    and for chunked batches, and nothing is stored twice."""
    await redis_bus.publish_many([envelope(seq=0)])
    await raw.script_flush()
    await redis_bus.publish_many([envelope(seq=1)])
    await raw.script_flush()
    await redis_bus.publish_many([envelope(seq=i) for i in range(2, 252)])
    got = await fetch_all(redis_bus, "c1")
    assert [Envelope.decode(m.body).event["seq"] for m in got] == list(range(252))


@pytest.mark.redis
async def test_trim_never_drops_pending_or_undelivered_entries(
    redis_bus: RedisStreamsBus, raw: aioredis.Redis
) -> None:
    """MINID trimming stops at the oldest pending entry; new entries are kept too."""
    stream = names.partition_name(partition_for(envelope().key, PARTITIONS))
    for i in range(10):
        await redis_bus.publish(envelope(seq=i))
    got = await fetch_all(redis_bus, "c1")
    assert len(got) == 10
    for i, message in enumerate(got):
        if i not in (3, 7):
            await redis_bus.ack(message)
    await redis_bus.publish(envelope(seq=10))  # never delivered
    assert await redis_bus.trim() == 3  # entries 0, 1, 2
    assert await raw.xlen(stream) == 8
    kept = await redis_bus.reclaim("c2", 0, 10)
    assert sorted(m.id for m in kept) == sorted([got[3].id, got[7].id])
    assert all(Envelope.decode(m.body) for m in kept)
    for message in kept:
        await redis_bus.ack(message)
    [new] = await fetch_all(redis_bus, "c1")
    assert Envelope.decode(new.body).event["seq"] == 10
    await redis_bus.ack(new)
    await redis_bus.trim()
    assert await raw.xlen(stream) == 1  # the last delivered entry marks the group's position


@pytest.mark.redis
async def test_a_failed_dlq_write_does_not_ack_the_original(
    redis_bus: RedisStreamsBus, raw: aioredis.Redis
) -> None:
    """The DLQ write and the ack succeed or fail together: no ack without a DLQ entry."""
    await redis_bus.publish(envelope())
    [message] = await redis_bus.fetch("c1", 1, 100)
    await raw.set(names.DLQ, "not a stream")
    with pytest.raises(ResponseError):
        await redis_bus.dead_letter(message, letter_for(message))
    assert await redis_bus.pending() == 1


@pytest.mark.redis
async def test_fetch_recreates_a_deleted_stream_group(
    redis_bus: RedisStreamsBus, raw: aioredis.Redis
) -> None:
    """A stream deleted under a running bus is recreated instead of failing every fetch."""
    await redis_bus.setup()
    await raw.delete(names.partition_name(0))
    assert await redis_bus.fetch("c1", 1, 10) == []
    await redis_bus.publish_raw(0, b"x")
    assert [m.body for m in await redis_bus.fetch("c1", 1, 100)] == [b"x"]


@pytest.mark.redis
async def test_a_running_consumer_trims_acknowledged_entries(
    redis_bus: RedisStreamsBus, raw: aioredis.Redis
) -> None:
    """The consumer's maintenance trims what it has acknowledged (Redis needs XTRIM)."""
    stream = names.partition_name(partition_for(envelope().key, PARTITIONS))
    for i in range(5):
        await redis_bus.publish(envelope(seq=i))

    async def handler(env: Envelope) -> None:
        return None

    consumer = Consumer(
        redis_bus, handler, name="w1", redelivery_idle_s=0.03, trim_interval_s=0.0, block_ms=20
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(5):
            while await raw.xlen(stream) > 1:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running
    assert consumer.stats.processed == 5
