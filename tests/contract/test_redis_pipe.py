"""RedisPipe (the publish path's lean Redis connection) against a real Redis, on asyncio's and
uvloop's event loops: calls from many tasks pipeline on one socket and each gets its own
replies in order; an error reply fails only its call; a killed connection fails the calls in
flight and the next call reconnects; a reply that never comes times out and closes the
connection; the URL's database is selected; and ``publish_many`` through it keeps each call's
order. ``send`` (a call without a task) writes at once, reports from the reply handling, and
declines while there is no connection; the bus's ``start_publish`` and the streams'
``BatchPublisher`` use it end to end. Keys are unique per test in DB 1 (nothing else uses
it) and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
import uvloop
from redis.asyncio import Redis

from tradewire.bus.base import Envelope, PublishStarter
from tradewire.bus.redis_pipe import PipeReplyError, RedisPipe
from tradewire.bus.redis_streams import RedisStreamsBus
from tradewire.names import partition_name
from tradewire.streams.publisher import BatchPublisher

DB_URL = "redis://127.0.0.1:6379/1"


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(DB_URL)
    yield client
    await client.aclose()


def on_both_loops(test: Callable[[], Awaitable[None]]) -> None:
    """Run ``test`` once on asyncio's default loop and once on uvloop (the CLI's loop)."""
    asyncio.run(test())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test())


def test_calls_from_many_tasks_pipeline_and_get_their_own_replies(redis_url: str) -> None:
    async def scenario() -> None:
        key = f"pipe-{uuid.uuid4().hex}"
        pipe = RedisPipe.for_client(Redis.from_url(DB_URL))
        try:
            async def one(n: int) -> list[object]:
                return await pipe.call(("RPUSH", key, n), ("LLEN", key), ("ECHO", f"e{n}"))

            replies = await asyncio.gather(*(one(n) for n in range(200)))
            assert pipe.connects == 1  # one socket for all 200 calls
            for n, (pushed, length, echo) in enumerate(replies):
                assert echo == f"e{n}".encode()
                assert pushed == length  # the LLEN ran right after this call's RPUSH
            assert sorted(r[0] for r in replies) == list(range(1, 201))
            stored = await pipe.call(("LRANGE", key, 0, -1))
            assert stored[0] == [str(n).encode() for n in range(200)]  # sent in call order
        finally:
            await pipe.call(("DEL", key))
            await pipe.close()

    on_both_loops(scenario)


def test_an_error_reply_fails_only_its_own_call(redis_url: str) -> None:
    async def scenario() -> None:
        key = f"pipe-{uuid.uuid4().hex}"
        pipe = RedisPipe.for_client(Redis.from_url(DB_URL))
        try:
            await pipe.call(("SET", key, "text"))
            bad = pipe.call(("RPUSH", key, "x"), ("ECHO", "after"))  # WRONGTYPE, then fine
            good = pipe.call(("GET", key))
            results = await asyncio.gather(bad, good, return_exceptions=True)
            assert isinstance(results[0], PipeReplyError) and "WRONGTYPE" in str(results[0])
            assert results[1] == [b"text"]
            assert await pipe.call(("PING",)) == [b"PONG"]  # the connection is still good
            assert pipe.connects == 1
        finally:
            await pipe.call(("DEL", key))
            await pipe.close()

    on_both_loops(scenario)


def test_a_killed_connection_fails_calls_in_flight_and_the_next_call_reconnects(
        redis_url: str) -> None:
    async def scenario() -> None:
        list_key = f"pipe-{uuid.uuid4().hex}"
        pipe = RedisPipe.for_client(Redis.from_url(DB_URL))
        admin = Redis.from_url(DB_URL)
        try:
            [client_id] = await pipe.call(("CLIENT", "ID"))
            waiting = asyncio.create_task(pipe.call(("BLPOP", list_key, 5)))
            await asyncio.sleep(0.1)
            assert await admin.execute_command("CLIENT", "KILL", "ID", client_id) == 1
            with pytest.raises(ConnectionError):
                await waiting
            assert await pipe.call(("PING",)) == [b"PONG"]
            assert pipe.connects == 2
        finally:
            await admin.aclose()
            await pipe.close()

    on_both_loops(scenario)


def test_a_reply_that_never_comes_times_out_and_closes_the_connection(redis_url: str) -> None:
    async def scenario() -> None:
        pipe = RedisPipe(dict(Redis.from_url(DB_URL).connection_pool.connection_kwargs),
                         reply_timeout_s=0.2)
        try:
            with pytest.raises(ConnectionError, match="no reply"):
                await pipe.call(("BLPOP", f"pipe-{uuid.uuid4().hex}", 2))
            assert await pipe.call(("PING",)) == [b"PONG"]
            assert pipe.connects == 2  # the late BLPOP reply cannot be taken for the PING's
        finally:
            await pipe.close()

    on_both_loops(scenario)


async def test_the_urls_database_is_selected(admin: Redis) -> None:
    key = f"pipe-{uuid.uuid4().hex}"
    pipe = RedisPipe.for_client(Redis.from_url(DB_URL))
    try:
        await pipe.call(("SET", key, "here"))
        assert await admin.get(key) == b"here"  # DB 1, not DB 0
    finally:
        await admin.delete(key)
        await pipe.close()


def test_tls_urls_keep_redis_py() -> None:
    assert RedisPipe.supported(Redis.from_url("redis://127.0.0.1:6379/1"))
    assert RedisPipe.supported(Redis.from_url("unix:///tmp/redis.sock?db=1"))
    assert not RedisPipe.supported(Redis.from_url("rediss://127.0.0.1:6379/1"))


async def test_concurrent_publish_many_calls_all_land_each_in_its_order(redis_url: str) -> None:
    """Through the pipe, 30 concurrent ``publish_many`` calls all land, each call's events in
    their order on each partition stream. (Concurrent calls may land in any order among
    themselves: the publisher never has two calls with one ordering key in flight.)"""
    bus = RedisStreamsBus(DB_URL, partitions=2, group=f"g-{uuid.uuid4().hex[:8]}")
    admin = Redis.from_url(DB_URL)
    streams = [partition_name(p) for p in range(2)]
    before = {s: await admin.xlen(s) for s in streams}
    try:
        def env(n: int) -> Envelope:
            return Envelope(event_id=f"pipe-{n}", account_id=n % 7, user_id=1, symbol="BTCUSDT",
                            received_ms=n, event={"n": n})

        batches = [[env(b * 10 + i) for i in range(10)] for b in range(30)]
        ids = await asyncio.gather(*(bus.publish_many(batch) for batch in batches))
        assert all(len(got) == 10 for got in ids)
        for stream in streams:
            entries = await admin.xrange(stream, min="-", max="+")
            mine = [Envelope.decode(fields[b"body"]).event["n"] for _, fields in entries
                    if Envelope.decode(fields[b"body"]).event_id.startswith("pipe-")]
            for batch in range(30):
                of_batch = [n for n in mine if n // 10 == batch]
                assert of_batch == sorted(of_batch)
        after = {s: await admin.xlen(s) for s in streams}
        assert sum(after[s] - before[s] for s in streams) == 300
    finally:
        for stream in streams:
            await admin.delete(stream)
        await admin.aclose()
        await bus.close()


def test_send_writes_now_and_reports_from_the_reply_handling(redis_url: str) -> None:
    """No connection yet: ``send`` declines and writes nothing. Open: it writes at once and
    returns; the outcome comes later (never from inside ``send``), in call order, interleaved
    with awaited calls on the same socket: replies, an error reply as ``PipeReplyError``."""
    async def scenario() -> None:
        key = f"pipe-{uuid.uuid4().hex}"
        pipe = RedisPipe.for_client(Redis.from_url(DB_URL))
        outcomes: list[object] = []
        try:
            assert pipe.send([("PING",)], outcomes.append) is False
            await pipe.call(("SET", key, "text"))
            assert pipe.send([("ECHO", "a"), ("GET", key)], outcomes.append) is True
            assert outcomes == []  # not from inside send
            assert pipe.send([("RPUSH", key, "x")], outcomes.append) is True  # WRONGTYPE
            assert await pipe.call(("ECHO", "b")) == [b"b"]  # answered after both sends
            assert outcomes[0] == [b"a", b"text"]
            assert isinstance(outcomes[1], PipeReplyError) and "WRONGTYPE" in str(outcomes[1])
            assert pipe.connects == 1
        finally:
            await pipe.call(("DEL", key))
            await pipe.close()

    on_both_loops(scenario)


def test_a_lost_or_silent_connection_reports_every_sent_call(redis_url: str) -> None:
    """Sent calls waiting on a connection that is killed, or that stays silent past
    ``reply_timeout_s``, each hear a ``ConnectionError``; an ``on_done`` that raises goes to
    the loop's exception handler and the other calls still hear theirs."""
    async def scenario() -> None:
        pipe = RedisPipe(dict(Redis.from_url(DB_URL).connection_pool.connection_kwargs),
                         reply_timeout_s=0.3)
        admin = Redis.from_url(DB_URL)
        handled: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: handled.append(
            context))
        outcomes: list[object] = []

        def broken(outcome: object) -> None:
            raise RuntimeError("a bug in a caller")

        try:
            [client_id] = await pipe.call(("CLIENT", "ID"))
            blocked = f"pipe-{uuid.uuid4().hex}"
            assert pipe.send([("BLPOP", blocked, 5)], broken)
            assert pipe.send([("PING",)], outcomes.append)  # queued behind the BLPOP
            assert await admin.execute_command("CLIENT", "KILL", "ID", client_id) == 1
            await until_true(lambda: len(outcomes) == 1)
            assert isinstance(outcomes[0], ConnectionError)
            assert [type(c["exception"]) for c in handled] == [RuntimeError]
            await pipe.call(("PING",))  # reconnects
            began = asyncio.get_running_loop().time()
            assert pipe.send([("BLPOP", blocked, 2)], outcomes.append)
            await until_true(lambda: len(outcomes) == 2)
            waited = asyncio.get_running_loop().time() - began
            assert isinstance(outcomes[1], ConnectionError) and "no reply" in str(outcomes[1])
            assert 0.25 <= waited < 1.5  # the watchdog, not BLPOP's own 2 s
            assert await pipe.call(("PING",)) == [b"PONG"] and pipe.connects == 3
        finally:
            await admin.aclose()
            await pipe.close()

    on_both_loops(scenario)


async def until_true(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_start_publish_declines_until_connected_then_lands_in_order(
        redis_url: str) -> None:
    """The bus's ``start_publish`` declines before ``setup`` and before its connection opens
    (the publisher then awaits ``publish_many``, which opens it); afterwards it writes at once
    and reports ``None`` once the entries are in their partition streams, in order."""
    bus = RedisStreamsBus(DB_URL, partitions=2, group=f"g-{uuid.uuid4().hex[:8]}")
    admin = Redis.from_url(DB_URL)
    streams = [partition_name(p) for p in range(2)]
    marker = f"start-{uuid.uuid4().hex[:8]}"
    outcomes: list[BaseException | None] = []

    def env(n: int) -> Envelope:
        return Envelope(event_id=f"{marker}-{n}", account_id=3, user_id=1, symbol="BTCUSDT",
                        received_ms=n, event={"n": n})

    try:
        assert isinstance(bus, PublishStarter)
        assert bus.start_publish([env(0)], outcomes.append) is False  # not set up
        await bus.setup()
        assert bus.start_publish([env(0)], outcomes.append) is False  # no connection yet
        await bus.publish_many([env(0)])
        assert bus.start_publish([env(n) for n in range(1, 151)], outcomes.append) is True
        assert outcomes == []
        await until_true(lambda: outcomes == [None])
        mine = [Envelope.decode(fields[b"body"]).event["n"]
                for stream in streams for _, fields in await admin.xrange(stream)
                if Envelope.decode(fields[b"body"]).event_id.startswith(marker)]
        assert mine == list(range(151))  # one account: one partition, in order (2 scripts)
    finally:
        for stream in streams:
            await admin.delete(stream)
        await admin.aclose()
        await bus.close()


async def test_the_publisher_starts_calls_on_the_redis_bus_and_keeps_each_accounts_order(
        redis_url: str) -> None:
    """The streams wiring: ``BatchPublisher(publish_many, start=start_publish)`` over real
    Redis. 3,000 envelopes of 40 accounts offered as a socket would (in bursts, from plain
    callbacks): every one lands once, each account's in offer order, and every call was
    started without a task (the connection being open)."""
    bus = RedisStreamsBus(DB_URL, partitions=4, group=f"g-{uuid.uuid4().hex[:8]}")
    admin = Redis.from_url(DB_URL)
    streams = [partition_name(p) for p in range(4)]
    marker = f"pub-{uuid.uuid4().hex[:8]}"
    started = awaited = 0

    def start(envelopes: Sequence[Envelope],
              on_done: Callable[[BaseException | None], None]) -> bool:
        nonlocal started
        ok = bus.start_publish(envelopes, on_done)
        started += ok
        return ok

    async def publish_many(envelopes: Sequence[Envelope]) -> list[str]:
        nonlocal awaited
        awaited += 1
        return await bus.publish_many(envelopes)

    publisher = BatchPublisher(publish_many, start=start, max_in_flight=4)
    runner = asyncio.create_task(publisher.run())
    try:
        await bus.setup()
        await bus.publish_many([Envelope(event_id=f"{marker}-open", account_id=99, user_id=1,
                                         symbol="BTCUSDT", received_ms=0, event={"n": -1})])
        for burst in range(100):
            for i in range(30):
                n = burst * 30 + i
                publisher.offer(Envelope(event_id=f"{marker}-{n}", account_id=n % 40,
                                         user_id=1, symbol="BTCUSDT", received_ms=n,
                                         event={"n": n}))
            await asyncio.sleep(0)
        await publisher.flush()
        got: dict[int, list[int]] = {}
        for stream in streams:
            for _, fields in await admin.xrange(stream):
                envelope = Envelope.decode(fields[b"body"])
                if envelope.event_id.startswith(marker) and envelope.account_id != 99:
                    got.setdefault(envelope.account_id, []).append(envelope.event["n"])
        assert sum(map(len, got.values())) == 3000
        assert all(ns == sorted(ns) and ns == [n for n in range(3000) if n % 40 == account]
                   for account, ns in got.items())
        assert awaited == 0 and started == publisher.batches and publisher.failures == 0
    finally:
        await publisher.close()
        await runner
        for stream in streams:
            await admin.delete(stream)
        await admin.aclose()
        await bus.close()
