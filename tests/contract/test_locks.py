"""Lock contract: in-process and Redis locks exclude each other alike.

``lock_space`` gives a factory of lock handles onto one lock space: the same ``MemoryLocks``
(one process) or a new ``RedisLocks`` client each time (separate processes). Redis tests use
unique lock names, so they need no flushing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from tradewire.config import Settings
from tradewire.errors import ConfigError
from tradewire.locks.base import Locks, LockTimeout
from tradewire.locks.factory import create_locks
from tradewire.locks.memory import MemoryLocks
from tradewire.locks.redis import RedisLocks
from tradewire.names import lock_name

LockSpace = Callable[[], Locks]


def unique_name() -> str:
    return lock_name(int(uuid.uuid4().int % 10**9), "BTCUSDT")


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def lock_space(request: pytest.FixtureRequest) -> AsyncIterator[LockSpace]:
    opened: list[Locks] = []
    shared = MemoryLocks()

    def handle() -> Locks:
        if request.param == "memory":
            return shared
        locks = RedisLocks(request.getfixturevalue("redis_url"))
        opened.append(locks)
        return locks

    yield handle
    for locks in opened:
        await locks.close()


async def test_holders_of_one_name_never_overlap(lock_space: LockSpace) -> None:
    """Tasks holding the same name through different handles run their blocks one at a time."""
    name = unique_name()
    inside = 0
    peak = 0
    entered = 0

    async def worker(locks: Locks) -> None:
        nonlocal inside, peak, entered
        for _ in range(5):
            async with locks.hold(name, ttl_s=5, wait_s=5):
                inside += 1
                entered += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.005)
                inside -= 1

    await asyncio.gather(*(worker(lock_space()) for _ in range(3)))
    assert (peak, entered) == (1, 15)


async def test_different_names_do_not_block_each_other(lock_space: LockSpace) -> None:
    """Holding one name leaves every other name free."""
    first, second = lock_space(), lock_space()
    async with first.hold(unique_name()), second.hold(unique_name(), wait_s=0.1):
        pass


async def test_waiting_past_wait_s_raises_lock_timeout(lock_space: LockSpace) -> None:
    """A second holder gives up with ``LockTimeout`` after about ``wait_s``."""
    name = unique_name()
    loop = asyncio.get_running_loop()
    async with lock_space().hold(name):
        started = loop.time()
        with pytest.raises(LockTimeout):
            async with lock_space().hold(name, wait_s=0.1):
                pytest.fail("acquired a held lock")
        assert 0.09 <= loop.time() - started < 0.5


async def test_the_lock_is_released_when_the_block_fails(lock_space: LockSpace) -> None:
    """An exception inside the block releases the lock for the next holder."""
    name = unique_name()
    with pytest.raises(RuntimeError):
        async with lock_space().hold(name):
            raise RuntimeError("boom")
    async with lock_space().hold(name, wait_s=0.1):
        pass


async def test_a_waiter_gets_the_lock_as_soon_as_it_is_released(lock_space: LockSpace) -> None:
    """A waiting holder acquires shortly after the current holder leaves."""
    name = unique_name()
    loop = asyncio.get_running_loop()
    holder = lock_space()
    release = asyncio.Event()

    async def hold_until_released() -> None:
        async with holder.hold(name):
            await release.wait()

    task = asyncio.create_task(hold_until_released())
    await asyncio.sleep(0.02)
    loop.call_later(0.05, release.set)
    started = loop.time()
    async with lock_space().hold(name, wait_s=2):
        assert loop.time() - started < 0.5
    await task


async def test_memory_locks_forget_unused_names() -> None:
    """Entries exist only while a name is held or waited for."""
    locks = MemoryLocks()
    async with locks.hold("a"):
        assert len(locks) == 1
    with pytest.raises(LockTimeout):
        async with locks.hold("b"), locks.hold("b", wait_s=0.01):
            pass
    assert len(locks) == 0


@pytest.mark.redis
async def test_an_expired_holder_cannot_release_the_next_holders_lock(redis_url: str) -> None:
    """A holder that outlives its TTL leaves the lock of whoever took it over in place."""
    name = unique_name()
    first, second, third = RedisLocks(redis_url), RedisLocks(redis_url), RedisLocks(redis_url)
    try:
        late = first.hold(name, ttl_s=0.05)
        await late.__aenter__()
        await asyncio.sleep(0.1)  # the TTL expires: the crashed/paused holder lost the lock
        async with second.hold(name, ttl_s=5, wait_s=0.1):
            await late.__aexit__(None, None, None)  # must not delete the second holder's lock
            with pytest.raises(LockTimeout):
                async with third.hold(name, wait_s=0.1):
                    pass
    finally:
        for locks in (first, second, third):
            await locks.close()


@pytest.mark.redis
async def test_a_redis_lock_expires_after_its_ttl(redis_url: str) -> None:
    """A holder that died without releasing blocks others only until the TTL passes."""
    name = unique_name()
    client = aioredis.Redis.from_url(redis_url)
    locks = RedisLocks(redis_url)
    try:
        await client.set(name, "a-dead-holder", px=100)
        async with locks.hold(name, wait_s=1):
            assert await client.get(name) != b"a-dead-holder"
    finally:
        await client.aclose()
        await locks.close()


def test_factory_picks_the_backend_from_the_url() -> None:
    """``memory`` and ``redis://`` select a backend; anything else is a configuration error."""
    assert isinstance(create_locks(Settings(lock_url="memory")), MemoryLocks)
    assert isinstance(create_locks(Settings(lock_url="redis://127.0.0.1:6379/0")), RedisLocks)
    with pytest.raises(ConfigError):
        create_locks(Settings(lock_url="zookeeper://x"))


async def test_hold_free_takes_only_the_free_names_and_releases_them(
    lock_space: LockSpace,
) -> None:
    """A batch takes its free locks in one call: a name held elsewhere is not taken (and not
    waited for), a name listed twice is taken once; after the block every name is free."""
    busy, free_a, free_b = unique_name(), unique_name(), unique_name()
    other = lock_space()
    batch = lock_space().hold_free([free_a, busy, free_b, free_a], ttl_s=5)
    async with other.hold(busy, ttl_s=5, wait_s=1), batch as taken:
        assert taken == {free_a, free_b}
        with pytest.raises(LockTimeout):
            async with other.hold(free_a, ttl_s=5, wait_s=0.05):
                pass
    for name in (busy, free_a, free_b):
        async with other.hold(name, ttl_s=5, wait_s=0.05):
            pass
