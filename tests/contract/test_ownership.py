"""Partition ownership (``bus.ownership``): one consumer per partition, leases, takeover.

Redis tests use db 7 (flushed around each test) with short leases (TTL 0.6 s, renew 0.2 s)
unless a test says otherwise; backend ``fetch(partitions=...)`` runs on every backend.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest
from test_bus import PARTITIONS, envelope, flush, open_bus
from tests.polling import until

from tradewire.bus.base import Bus, Envelope, partition_for
from tradewire.bus.consumer import Consumer
from tradewire.bus.embedded import EmbeddedBus
from tradewire.bus.ownership import (
    LocalOwnership,
    assignment,
    create_ownership,
)
from tradewire.bus.ownership_redis import RedisOwnership
from tradewire.bus.redis_streams import RedisStreamsBus
from tradewire.bus.sqlite_bus import SqliteBus
from tradewire.config import Settings
from tradewire.errors import ConfigError

DB = 7
P = 16
TTL_S, RENEW_S = 0.6, 0.2


@pytest.fixture
async def url(redis_url: str) -> AsyncIterator[str]:
    db_url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{DB}"))
    await flush(db_url)
    yield db_url
    await flush(db_url)


@asynccontextmanager
async def members(
    url: str, *names: str, ttl_s: float = TTL_S, renew_s: float = RENEW_S
) -> AsyncIterator[list[RedisOwnership]]:
    owners = [RedisOwnership(url, n, P, ttl_s=ttl_s, renew_s=renew_s) for n in names]
    try:
        yield owners
    finally:
        for owner in owners:
            await owner.close()


def split_ok(a: RedisOwnership, b: RedisOwnership) -> bool:
    """Each member owns exactly its rendezvous share (so: no overlap, full coverage)."""
    expected = assignment(P, [a.member, b.member])
    share = {m.member: {p for p, o in expected.items() if o == m.member} for m in (a, b)}
    assert not (a.owned() & b.owned()), "a partition owned twice"
    return a.owned() == share[a.member] and b.owned() == share[b.member]


def test_assignment_is_balanced_stable_and_moves_little() -> None:
    """Every member gets P // N partitions or one more (plain rendezvous hashing gave the
    bench's two workers 11 and 5 of 16), whatever the order the members are listed in; a
    member joining or leaving moves about its share, averaged over many member names."""
    assert assignment(P, []) == {}
    assert Counter(assignment(P, ["bench-worker-0", "bench-worker-1"]).values()) == {
        "bench-worker-0": 8, "bench-worker-1": 8}
    moved = share = 0
    for trial in range(40):
        for n in range(1, 9):
            names = [f"worker-{trial}-{i}" for i in range(n)]
            before = assignment(P, names)
            assert set(before) == set(range(P))
            assert before == assignment(P, list(reversed(names)))
            counts = Counter(before.values())
            assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == min(n, P)
            after = assignment(P, [*names, f"joiner-{trial}-{n}"])
            moved += sum(before[p] != after[p] for p in range(P))
            share += P / (n + 1)
    assert moved <= 1.4 * share, (moved, share)


def test_create_ownership_picks_the_coordinator(tmp_path: object) -> None:
    local = create_ownership(Settings(bus_url="memory"), "w1")
    assert isinstance(local, LocalOwnership) and local.owned() is None
    redis = create_ownership(Settings(bus_url="redis://127.0.0.1:6379/7"), "w1")
    assert isinstance(redis, RedisOwnership) and redis.ttl_s == 6.0 and redis.renew_s == 2.0
    rabbit = Settings(bus_url="amqp://g:g@127.0.0.1/", lock_url="redis://127.0.0.1:6379/7")
    assert isinstance(create_ownership(rabbit, "w1"), RedisOwnership)
    with pytest.raises(ConfigError):
        create_ownership(Settings(bus_url="amqp://g:g@127.0.0.1/"), "w1")


@pytest.mark.parametrize("kind", [
    "embedded", "sqlite", pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
])
async def test_fetch_only_returns_the_given_partitions(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async with open_test_bus(kind, request) as bus:
        for account in range(1, 40):
            await bus.publish(envelope(account))
        assert await bus.fetch("c1", 100, 10, partitions=set()) == []  # nothing owned
        wanted = {1, 3}
        got = []
        for _ in range(20):
            got += await bus.fetch("c1", 100, 20, partitions=wanted)
        expected = sum(
            1 for a in range(1, 40) if partition_for(f"{a}:BTCUSDT", PARTITIONS) in wanted
        )
        assert len(got) == expected and {m.partition for m in got} == wanted
        rest = await bus.fetch("c1", 100, 50)
        assert rest and wanted.isdisjoint(m.partition for m in rest)


@asynccontextmanager
async def open_test_bus(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """``test_bus.open_bus``, but Redis on db 7."""
    if kind != "redis":
        async with open_bus(kind, request) as bus:
            yield bus
        return
    db_url = _db7(request)
    await flush(db_url)
    bus = RedisStreamsBus(db_url, PARTITIONS)
    try:
        yield bus
    finally:
        await bus.close()
        await flush(db_url)


def _db7(request: pytest.FixtureRequest) -> str:
    return urlunsplit(urlsplit(request.getfixturevalue("redis_url"))._replace(path=f"/{DB}"))


@pytest.mark.redis
async def test_two_members_split_all_partitions_without_overlap(url: str) -> None:
    async with members(url, "a", "b") as (a, b):
        await a.start()
        assert a.owned() == set(range(P))  # alone: everything
        await b.start()
        took = await until(lambda: split_ok(a, b))
        assert 0 < len(a.owned()) < P and len(a.owned()) + len(b.owned()) == P
        assert took < RENEW_S * 3  # a hands over on b's join notice, not after a TTL
        for _ in range(10):  # stays split across rounds
            await asyncio.sleep(RENEW_S / 2)
            assert split_ok(a, b)


@pytest.mark.redis
async def test_owned_is_the_same_object_until_a_lease_changes(url: str) -> None:
    """Callers asking every tick (the streams manager) skip their work while ``owned()`` *is*
    the previous answer; any lease change (a renewal round, a handover) gives a new object."""
    async with members(url, "a", "b") as (a, b):
        await a.start()
        first = a.owned()
        assert first == set(range(P)) and a.owned() is first
        rounds = a.rounds
        await until(lambda: a.rounds > rounds)
        renewed = a.owned()
        assert renewed == first and renewed is not first  # new deadlines: asked afresh
        assert a.owned() is renewed
        await b.start()
        await until(lambda: split_ok(a, b))
        assert a.owned() != first and a.owned() is a.owned()


@pytest.mark.redis
async def test_renewals_survive_a_flushed_script_cache(url: str) -> None:
    """Renewals go over the lean pipe as EVALSHA; a Redis that forgot the script (restart,
    ``SCRIPT FLUSH``) answers NOSCRIPT, and the renewal is sent as EVAL: nothing is lost."""
    async with members(url, "a") as (a,):
        assert a._pipe is not None  # plain TCP: the lean path is the one under test
        await a.start()
        assert a.owned() == set(range(P))
        epochs = {p: a.epoch(p) for p in range(P)}
        for _ in range(2):
            await a.redis.script_flush()
            rounds = a.rounds
            await until(lambda r=rounds: a.rounds >= r + 2)
            assert a.owned() == set(range(P))
            assert {p: a.epoch(p) for p in range(P)} == epochs  # renewed, never re-acquired


@pytest.mark.redis
async def test_a_member_that_stops_renewing_loses_its_partitions_within_the_ttl(
    url: str,
) -> None:
    async with members(url, "a", "b") as (a, b):
        await a.start()
        await b.start()
        await until(lambda: split_ok(a, b))
        a_parts = set(a.owned())
        epochs = {p: a.epoch(p) or 0 for p in a_parts}
        await a.kill()
        killed = time.monotonic()
        await until(lambda: not a.owned(), timeout_s=TTL_S)  # self-fenced before expiry
        fenced = time.monotonic() - killed
        await until(lambda: b.owned() == set(range(P)), timeout_s=3)
        took = time.monotonic() - killed
        assert fenced < took  # a stops fetching before b can start
        print(f"takeover after a stopped renewing: {took:.3f}s (fenced at {fenced:.3f}s)")
        assert took < TTL_S + RENEW_S + 0.3  # bound: lease TTL + one survivor round
        assert all((b.epoch(p) or 0) > epochs[p] for p in a_parts)  # fencing token grows


@pytest.mark.redis
async def test_graceful_stop_hands_over_at_once(url: str) -> None:
    async with members(url, "a", "b", ttl_s=6.0, renew_s=2.0) as (a, b):  # production timing
        await a.start()
        await b.start()
        await until(lambda: split_ok(a, b), timeout_s=3)
        await a.stop()
        took = await until(lambda: b.owned() == set(range(P)), timeout_s=3)
        assert took < 0.5  # not a TTL, not a renew round: the leave notice wakes b


@pytest.mark.redis
async def test_new_owner_reads_the_old_owners_pending_messages_first(url: str) -> None:
    bus_a, bus_b = RedisStreamsBus(url, P), RedisStreamsBus(url, P)
    try:
        for seq in range(5):
            await bus_a.publish(envelope(seq=seq))
        p = partition_for(envelope().key, P)
        first = await bus_a.fetch("w-a", 2, 10, partitions={p})
        assert [Envelope.decode(m.body).event["seq"] for m in first] == [0, 1]  # never acked
        got = await bus_b.fetch("w-b", 10, 10, partitions={p})  # b's first read of p: history
        assert [(Envelope.decode(m.body).event["seq"], m.deliveries) for m in got] == [
            (0, 2), (1, 2)
        ]
        rest = await bus_b.fetch("w-b", 10, 10, partitions={p})
        assert [Envelope.decode(m.body).event["seq"] for m in rest] == [2, 3, 4]
    finally:
        await bus_a.close()
        await bus_b.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_local_ownership_consumes_everything(kind: str, tmp_path: object) -> None:
    bus: Bus = EmbeddedBus(PARTITIONS) if kind == "memory" else SqliteBus(
        f"{tmp_path}/bus.db", PARTITIONS
    )
    seen: list[str] = []

    async def handler(env: Envelope) -> None:
        seen.append(env.key)

    try:
        for account in range(1, 9):
            await bus.publish(envelope(account))
        consumer = Consumer(bus, handler, name="w1", ownership=LocalOwnership("w1"),
                            block_ms=20, redelivery_idle_s=0.3)
        await consumer.drain(5)
        assert len(seen) == 8
    finally:
        await bus.close()


Applied = Callable[[str, Envelope], Awaitable[None]]


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["crash", "stall"])
async def test_per_key_order_holds_across_a_takeover(url: str, mode: str) -> None:
    """A processes a key's events, then stops renewing (``stall``: its consumer keeps running;
    ``crash``: it is also dropped without acking). B takes over; the key's events are applied
    in publish order (duplicates, deduplicated by event id as the database does, allowed) and
    never by both consumers at the same time. A stalled A keeps handling until its local
    lease deadline (up to 0.9 x ``TTL_S`` after its last renewal, ~50 events of 10 ms): the
    events left after the kill must outlast that, or A applies them all and B has nothing new
    to apply (1 run in ~30 with 60 events)."""
    total = 150
    bus_a, bus_b = RedisStreamsBus(url, P), RedisStreamsBus(url, P)
    applied: list[int] = []
    by: dict[str, int] = {"a": 0, "b": 0}
    active: set[str] = set()
    overlaps: list[int] = []

    def handler(name: str) -> Callable[[Envelope], Awaitable[None]]:
        async def handle(env: Envelope) -> None:
            if active:
                overlaps.append(env.event["seq"])
            active.add(name)
            try:
                await asyncio.sleep(0.01)
                if env.event["seq"] not in applied:  # event-id dedupe
                    applied.append(env.event["seq"])
                    by[name] += 1
            finally:
                active.discard(name)

        return handle

    async with members(url, "a", "b") as (own_a, own_b):
        for seq in range(total):
            await bus_a.publish(envelope(seq=seq))
        options = {"block_ms": 20, "redelivery_idle_s": 3.0, "grace_s": 0.5}
        con_a = Consumer(bus_a, handler("a"), name="a", ownership=own_a, **options)
        con_b = Consumer(bus_b, handler("b"), name="b", ownership=own_b, **options)
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        run_a = asyncio.create_task(con_a.run(stop_a))
        await until(lambda: len(applied) >= 15)
        await own_a.kill()
        killed = time.monotonic()
        if mode == "crash":
            run_a.cancel()
        run_b = asyncio.create_task(con_b.run(stop_b))
        await until(lambda: by["b"] > 0, timeout_s=5)
        takeover = time.monotonic() - killed
        await until(lambda: len(applied) == total, timeout_s=10)
        stop_a.set()
        stop_b.set()
        await asyncio.gather(run_a, run_b, return_exceptions=True)
    await bus_a.close()
    await bus_b.close()
    assert applied == list(range(total))
    assert overlaps == []
    assert by["a"] >= 15 and by["b"] > 0
    assert takeover < TTL_S + RENEW_S + 0.5, takeover
    print(f"takeover ({mode}): {takeover:.3f}s")
