"""Shard ownership of the streams pods over real Redis (``streams.shards_redis.RedisShards``).

Redis db 6, flushed at the start of each test; 256 shards; short leases (TTL 1.5 s, renew
0.5 s) so that failover fits in a few seconds. Waits are bounded generously: they bound a
takeover, they do not measure it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis
from tests.polling import until

from tradewire import names
from tradewire.bus.ownership import assignment
from tradewire.streams.shards_redis import RedisShards

pytestmark = pytest.mark.redis

DB = 6
N = 256
TTL_S, RENEW_S = 1.5, 0.5
HANDOFF_S = 30.0  # drains never time out unless a test says so


@pytest.fixture
async def url(redis_url: str) -> AsyncIterator[str]:
    db_url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{DB}"))
    client = Redis.from_url(db_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    yield db_url


@pytest.fixture
async def redis(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def pods(
    url: str, *members: str, handoff_timeout_s: float = HANDOFF_S
) -> AsyncIterator[list[RedisShards]]:
    made = [
        RedisShards(url, m, N, ttl_s=TTL_S, renew_s=RENEW_S, handoff_timeout_s=handoff_timeout_s,
                    ready_poll_s=0.05)
        for m in members
    ]
    try:
        yield made
    finally:
        for pod in made:
            await pod.close()


def converged(*live: RedisShards) -> bool:
    """Every shard owned by exactly one pod: its rendezvous owner among ``live``."""
    owned = [pod.owned() for pod in live]
    for i, mine in enumerate(owned):
        for theirs in owned[i + 1:]:
            assert not (mine & theirs), f"shards owned twice: {sorted(mine & theirs)}"
    expected = assignment(N, [pod.member for pod in live])
    return all(
        mine == {s for s, owner in expected.items() if owner == pod.member}
        for pod, mine in zip(live, owned, strict=True)
    )


async def mark_all_ready(pod: RedisShards) -> None:
    for shard in sorted(pod.owned()):
        await pod.mark_ready(shard)


async def test_two_pods_split_the_256_shards_each_owned_exactly_once(url: str) -> None:
    async with pods(url, "a", "b") as (a, b):
        await a.start()
        assert a.owned() == set(range(N))  # alone: every shard
        await b.start()
        await until(lambda: converged(a, b))
        assert 0 < len(b.owned()) < N and a.owned() | b.owned() == set(range(N))
        assert set(a.draining()) == set(b.owned())  # handed over to the newcomer, not lost
        assert a.lost == b.lost == 0
        for _ in range(8):  # stays split across rounds
            await asyncio.sleep(RENEW_S / 2)
            assert converged(a, b)


async def test_a_killed_pods_shards_move_to_the_survivor_within_ttl_plus_renew(
    url: str,
) -> None:
    async with pods(url, "a", "b") as (a, b):
        await a.start()
        await b.start()
        await until(lambda: converged(a, b))
        a_shards = set(a.owned())
        epochs = {s: a.epoch(s) or 0 for s in a_shards}
        await a.kill()
        killed = time.monotonic()
        fenced: list[float] = []

        def survivor_owns_all() -> bool:
            assert not (a.owned() & b.owned()), "the dead pod still owns a taken shard"
            if not a.owned() and not fenced:
                fenced.append(time.monotonic() - killed)
            return b.owned() == set(range(N))

        took = await until(survivor_owns_all, timeout_s=TTL_S + RENEW_S + 2.0)
        print(f"takeover of {len(a_shards)} shards: {took:.3f}s (fenced at {fenced[0]:.3f}s)")
        assert fenced[0] < took  # the dead pod stops streaming before the survivor starts
        assert all((b.epoch(s) or 0) > epochs[s] for s in a_shards)  # new epochs
        assert not set(a.draining()) & a_shards  # lost, never handed over


async def test_graceful_stop_drains_until_the_new_owner_is_ready(url: str) -> None:
    async with pods(url, "a", "b") as (a, b):
        await a.start()
        await b.start()
        await until(lambda: converged(a, b))
        leaving = set(a.owned())
        epochs = {s: a.epoch(s) or 0 for s in leaving}
        before = asyncio.get_running_loop().time()
        await a.stop()
        draining = a.draining()
        assert set(draining) >= leaving and a.owned() == frozenset()
        assert all(before + HANDOFF_S <= draining[s] <= before + HANDOFF_S + 1 for s in leaving)
        assert a.lost == 0
        await until(lambda: b.owned() == set(range(N)), timeout_s=3.0)  # woken by the leave
        assert a.member not in b.members
        assert all((b.epoch(s) or 0) > epochs[s] for s in leaving)
        await asyncio.sleep(0.2)
        assert not any(a.ready_elsewhere(s) for s in leaving)  # b has not reported yet
        await mark_all_ready(b)
        await until(lambda: all(a.ready_elsewhere(s) for s in leaving), timeout_s=3.0)


async def test_drains_add_the_keying_estimate_only_while_another_pod_can_take_over(
    url: str,
) -> None:
    """A pod with many accounts says how long a new owner may need for their listenKeys
    (``expect_keying``): its handed-over shards drain that much longer while another pod is
    live — a pod alone keeps the plain timeout."""
    async with pods(url, "a", "b") as (a, b):
        await a.start()
        await b.start()
        await until(lambda: converged(a, b))
        leaving = set(a.owned())
        a.expect_keying(60.0)
        before = asyncio.get_running_loop().time()
        await a.stop()
        draining = a.draining()
        assert set(draining) >= leaving
        assert all(before + HANDOFF_S + 60 <= draining[s] <= before + HANDOFF_S + 61
                   for s in leaving)
    async with pods(url, "alone") as (alone,):
        await alone.start()
        await until(lambda: len(alone.owned()) == N)
        alone.expect_keying(60.0)
        assert alone.drain_s() == HANDOFF_S


async def test_drains_end_at_once_when_no_other_pod_is_left(url: str) -> None:
    """Every pod stopping together (or the last one leaving): nobody can take the shards over,
    so the drains end as soon as the pods see that, not after timeout + keying estimate."""
    async with pods(url, "a", "b") as (a, b):
        await a.start()
        await b.start()
        await until(lambda: converged(a, b))
        for pod in (a, b):
            pod.expect_keying(60.0)
        await asyncio.gather(a.stop(), b.stop())
        assert a.draining() or b.draining()  # each released while the other was live
        await until(lambda: a.draining() == {} and b.draining() == {}, timeout_s=3.0)
        assert a.lost == b.lost == 0


async def test_a_released_shard_enters_draining_as_it_leaves_owned(url: str) -> None:
    """Handing over (a pod joins) and stopping: at every step of the event loop, each shard
    that leaves ``owned()`` is already in ``draining()`` (never seen lost in between, not even
    for the release's round trip), and nothing is counted lost."""
    async with pods(url, "a", "b") as (a, b):
        await a.start()
        gaps: list[int] = []
        had = set(a.owned())

        async def sample() -> None:
            while True:
                owned = a.owned()
                gaps.extend(had - owned - set(a.draining()))
                await asyncio.sleep(0)  # every loop iteration, so also mid-round-trip

        sampler = asyncio.create_task(sample())
        try:
            await b.start()
            await until(lambda: converged(a, b))
            await a.stop()
            await asyncio.sleep(0.05)
        finally:
            sampler.cancel()
        assert gaps == []
        assert a.lost == 0 and a.released == N


async def test_a_third_pod_joining_moves_shards_into_the_old_owners_draining(url: str) -> None:
    async with pods(url, "a", "b", "c") as (a, b, c):
        await a.start()
        await b.start()
        await until(lambda: converged(a, b))
        await mark_all_ready(a)
        await mark_all_ready(b)
        before = {s: (pod, pod.epoch(s) or 0) for pod in (a, b) for s in pod.owned()}
        drained_before = {pod.member: set(pod.draining()) for pod in (a, b)}  # a -> b at join
        a.released = b.released = 0
        await c.start()
        await until(lambda: converged(a, b, c))
        after = {s: pod for pod in (a, b, c) for s in pod.owned()}
        # c's share, and (bounded loads) the odd shard moving between a and b
        moved = {s for s, pod in after.items() if pod is not before[s][0]}
        assert set(c.owned()) <= moved
        assert all((after[s].epoch(s) or 0) > before[s][1] for s in moved)
        for pod in (a, b):
            lost = {s for s in moved if before[s][0] is pod}
            assert set(pod.draining()) - drained_before[pod.member] == lost
            assert pod.released == len(lost)
            assert pod.lost == 0 and not any(pod.ready_elsewhere(s) for s in lost)
        for pod in (a, b, c):
            await mark_all_ready(pod)
        await until(lambda: all(before[s][0].ready_elsewhere(s) for s in moved), timeout_s=3.0)
        assert not any(after[s].ready_elsewhere(s) for s in moved)  # the new owners hold them


async def test_a_stolen_or_deleted_lease_is_lost_not_drained(url: str, redis: Redis) -> None:
    async with pods(url, "a") as (a,):
        await a.start()
        stolen, deleted = 5, 7
        old_epoch = a.epoch(deleted) or 0
        await redis.set(names.shard_lease_name(stolen), "intruder:999", px=20_000)
        await redis.delete(names.shard_lease_name(deleted))
        await until(lambda: stolen not in a.owned() and a.lost == 2, timeout_s=3.0)
        # deleted: lost, then taken again at once under a new epoch (this pod is its owner)
        await until(lambda: (a.epoch(deleted) or 0) > old_epoch, timeout_s=3.0)
        assert deleted in a.owned() and a.epoch(stolen) is None
        assert a.draining() == {} and a.released == 0
        assert a.owned() == set(range(N)) - {stolen}
        await a.mark_ready(stolen)  # not ours: marks nothing
        assert await redis.get(names.shard_ready_name(stolen)) is None
        await a.mark_ready(deleted)
        ready = await redis.get(names.shard_ready_name(deleted))
        assert ready == f"a:{a.epoch(deleted)}".encode()


async def test_epochs_increase_on_every_new_acquisition(url: str) -> None:
    seen: dict[int, list[int]] = {s: [] for s in range(N)}
    for member in ("a", "b", "a"):
        async with pods(url, member) as (pod,):
            await pod.start()
            assert pod.owned() == set(range(N))
            for s in range(N):
                seen[s].append(pod.epoch(s) or 0)
            await pod.stop()
    assert all(e[0] < e[1] < e[2] for e in seen.values())


async def test_ready_needs_another_member_with_a_later_epoch_and_drains_time_out(
    url: str, redis: Redis
) -> None:
    async with pods(url, "a", "b", handoff_timeout_s=1.0) as (a, b):
        await a.start()
        await b.start()
        await until(lambda: converged(a, b))
        shard = min(b.owned())
        held = a.draining()
        assert shard in held
        epoch_b = b.epoch(shard) or 0
        for stale in (f"a:{epoch_b + 5}", f"b:{epoch_b - 1}", "garbage"):
            await redis.set(names.shard_ready_name(shard), stale)  # self, older, unreadable
        await asyncio.sleep(0.3)
        assert not a.ready_elsewhere(shard)
        await until(lambda: shard not in a.draining(), timeout_s=3.0)  # deadline passed
        assert a.draining() == {} and not a.ready_elsewhere(shard)
