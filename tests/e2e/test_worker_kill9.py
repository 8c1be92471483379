"""A worker killed with SIGKILL mid-message: another worker processes the message within 15 s,
exactly once in effect.

Two ``tradewire worker`` processes on PostgreSQL + Redis Streams + Redis locks (Redis db 10).
The message is kept in flight honestly: the test holds the event's ``userId:symbol`` lock (as a
slow worker would), so the worker that fetched it waits inside the handler. The test finds that
worker (the message is pending and the partition's lease names its owner), SIGKILLs it,
releases the lock and measures how long the surviving worker takes to apply the event. The
survivor takes the partition over when the lease lapses (≤ 8 s: TTL 6 s + one renew round) and
reads the dead owner's pending entries first; the reclaim of idle messages (10 s + 3.3 s) is the
safety net behind it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis
from tests.conftest import fresh_postgres_database, require_service
from tests.e2e.conftest import flush_redis

from tradewire import names
from tradewire.bus.base import Envelope, partition_for
from tradewire.bus.redis_streams import RedisStreamsBus
from tradewire.processor.normalize import normalize
from tradewire.store.db import upgrade

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

REDIS = "redis://127.0.0.1:6379/10"
PARTITIONS = 16
WIRE = Path(__file__).parents[1] / "fixtures" / "wire" / "ws_algo_canceled.json"
BOUND_S = 15.0


def the_event() -> Envelope:
    payload = json.loads(WIRE.read_text())["events"][0]
    env = Envelope(event_id="kill9-ev-1", account_id=1, user_id=1, symbol="BTCUSDT",
                   received_ms=1_767_000_500_005, event=payload)
    assert normalize(env).kind.value != "IGNORED"  # it reaches the processor's lock
    return env


async def processed_rows(database_url: str, event_id: str) -> int:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE event_id = $1", event_id)
        return count
    finally:
        await conn.close()


async def holder_of(redis: Redis, partition: int) -> str | None:
    """The worker that fetched the partition's message: the message is pending, and the
    partition's lease (``<member>:<epoch>``) names its owner."""
    stream = names.partition_name(partition)
    rows = await redis.xpending_range(stream, names.WORKER_GROUP, min="-", max="+", count=10)
    lease = await redis.get(names.lease_name(partition))
    if not rows or lease is None:
        return None
    owner = lease.decode() if isinstance(lease, bytes) else str(lease)
    return owner.rsplit(":", 1)[0]


async def start_workers(
    tmp_path: Path, database_url: str, bus_url: str
) -> dict[str, asyncio.subprocess.Process]:
    """Two ``tradewire worker`` processes (k0, k1) on the bus, Redis locks and ownership (db
    10), logging into ``tmp_path``."""
    base = {
        **os.environ, "TRADEWIRE_DATABASE_URL": database_url, "TRADEWIRE_BUS_URL": bus_url,
        "TRADEWIRE_LOCK_URL": REDIS, "TRADEWIRE_EXCHANGE_URL": "http://127.0.0.1:9",
        "TRADEWIRE_DATA_DIR": str(tmp_path / "data"), "TRADEWIRE_LOG_LEVEL": "INFO",
        "TRADEWIRE_MASTER_KEY": "q6E0JQn3zXh8bH0r9a3tQ2cH7f1mV5yW4uK8pL0sD2E=",
        "TRADEWIRE_BUS_PARTITIONS": str(PARTITIONS),
    }
    procs = {}
    for name in ("k0", "k1"):
        with (tmp_path / f"{name}.log").open("wb") as log:
            procs[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tradewire.cli.main", "worker",
                env={**base, "TRADEWIRE_WORKER_NAME": name}, stdout=log, stderr=log,
            )
    return procs


async def stop_all(procs: dict[str, asyncio.subprocess.Process]) -> None:
    """SIGTERM the workers still running; SIGKILL one that has not exited 15 s later."""
    for proc in procs.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()


def print_logs(folder: Path) -> None:
    for log_file in folder.glob("*.log"):
        print(log_file.name, log_file.read_text(errors="replace")[-3000:])


async def test_a_sigkilled_workers_message_is_processed_by_another_within_15_s(
    tmp_path: Path,
) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    await flush_redis(REDIS)
    env = the_event()
    event_id = normalize(env).event_id
    partition = partition_for(env.key, PARTITIONS)
    redis = Redis.from_url(REDIS)
    procs: dict[str, asyncio.subprocess.Process] = {}
    async with fresh_postgres_database() as database_url:
        await upgrade(database_url)
        bus = RedisStreamsBus(REDIS, PARTITIONS)
        try:
            await bus.pending()  # creates the streams and the group before workers read
            procs.update(await start_workers(tmp_path, database_url, REDIS))
            lock = names.lock_name(env.user_id, env.symbol)
            await redis.set(lock, "held-by-the-test", px=60_000)
            await bus.publish(env)
            async with asyncio.timeout(20):
                while (holder := await holder_of(redis, partition)) is None:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # the holder is inside the handler, waiting for the lock
            assert await processed_rows(database_url, event_id) == 0
            procs[holder].send_signal(signal.SIGKILL)
            await procs[holder].wait()
            killed_at = time.monotonic()
            await redis.delete(lock)
            async with asyncio.timeout(BOUND_S + 2):
                while await processed_rows(database_url, event_id) == 0:
                    await asyncio.sleep(0.1)
            took = time.monotonic() - killed_at
            print(f"redelivered and applied {took:.2f} s after the SIGKILL of {holder}")
            assert took <= BOUND_S
            await asyncio.sleep(1.0)
            assert await processed_rows(database_url, event_id) == 1  # exactly once in effect
            assert await bus.pending() == 0 and await bus.dlq_size() == 0
        except BaseException:
            print_logs(tmp_path)
            raise
        finally:
            await stop_all(procs)
            await bus.close()
            await redis.aclose()


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, f"rabbitmqctl {args}: {err.decode(errors='replace')}"


def same_partition_symbol(env: Envelope) -> str:
    """A symbol whose key (same account) lands in ``env``'s partition."""
    target = partition_for(env.key, PARTITIONS)
    return next(s for i in range(10_000) if (s := f"K{i}USDT") != env.symbol
                and partition_for(f"{env.account_id}:{s}", PARTITIONS) == target)


@pytest.mark.rabbitmq
async def test_a_sigkilled_workers_rabbitmq_pack_is_processed_by_another_exactly_once(
    tmp_path: Path, rabbitmq_url: str,
) -> None:
    """RabbitMQ packs (``bus.rabbitmq``): two events of one partition published as ONE AMQP
    message; the worker that got it applies the second at once and waits for the first's lock;
    SIGKILL. The broker requeues the whole pack; the survivor (owner once the partition lease
    lapses) applies the first within 15 s and meets the second again as a duplicate: each
    applied exactly once, nothing pending, nothing dead-lettered."""
    require_service("Redis", "127.0.0.1", 6379)
    from tradewire.bus.rabbitmq import RabbitMQBus

    await flush_redis(REDIS)
    first = the_event()
    symbol = same_partition_symbol(first)
    payload = json.loads(json.dumps(first.event))
    payload["o"]["s"] = symbol
    second = Envelope(event_id="kill9-ev-2", account_id=1, user_id=1, symbol=symbol,
                      received_ms=first.received_ms + 1, event=payload)
    partition = partition_for(first.key, PARTITIONS)
    vhost = f"tw_kill9_{os.getpid()}_{time.monotonic_ns()}"
    await rabbitmqctl("add_vhost", vhost)
    await rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    amqp = f"{rabbitmq_url.rstrip('/')}/{vhost}"
    redis = Redis.from_url(REDIS)
    bus = RabbitMQBus(amqp, PARTITIONS)
    procs: dict[str, asyncio.subprocess.Process] = {}
    try:
        async with fresh_postgres_database() as database_url:
            await upgrade(database_url)
            await bus.setup()  # the topology exists before the workers consume
            try:
                procs.update(await start_workers(tmp_path, database_url, amqp))
                lock = names.lock_name(first.user_id, first.symbol)
                await redis.set(lock, "held-by-the-test", px=60_000)
                ids = await bus.publish_many([first, second])
                assert ids[0].endswith(".0") and ids[1].endswith(".1")  # one AMQP message
                async with asyncio.timeout(20):  # the holder applied the second event
                    while await processed_rows(database_url, second.event_id) == 0:
                        await asyncio.sleep(0.05)
                lease = await redis.get(names.lease_name(partition))
                assert lease is not None
                owner = lease.decode() if isinstance(lease, bytes) else str(lease)
                holder = owner.rsplit(":", 1)[0]
                await asyncio.sleep(0.5)  # the first event waits for its lock in the holder
                assert await processed_rows(database_url, first.event_id) == 0
                procs[holder].send_signal(signal.SIGKILL)
                await procs[holder].wait()
                killed_at = time.monotonic()
                await redis.delete(lock)
                async with asyncio.timeout(BOUND_S + 2):
                    while await processed_rows(database_url, first.event_id) == 0:
                        await asyncio.sleep(0.1)
                took = time.monotonic() - killed_at
                print(f"pack redelivered, first event applied {took:.2f} s after the SIGKILL")
                assert took <= BOUND_S
                await asyncio.sleep(1.0)
                assert await processed_rows(database_url, first.event_id) == 1
                assert await processed_rows(database_url, second.event_id) == 1
                procs["survivor"] = procs.pop("k1" if holder == "k0" else "k0")
                procs["survivor"].send_signal(signal.SIGTERM)
                await asyncio.wait_for(procs["survivor"].wait(), 15)
                # with no consumer left, an unacked message would be ready again
                depths = await bus.partition_depths()
                assert depths[partition].lag == 0 and await bus.dlq_size() == 0
            except BaseException:
                print_logs(tmp_path)
                raise
            finally:
                await stop_all(procs)
    finally:
        await bus.close()
        await redis.aclose()
        await rabbitmqctl("delete_vhost", vhost)
