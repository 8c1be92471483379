"""Bus benchmark (issue 4): publish latency, and end-to-end events/s through TWO worker processes.

For each backend — Redis Streams (db 9, flushed), RabbitMQ (a vhost made for the run and
deleted after it) and the embedded SQLite-file bus (``sqlite:///…``):

1. publish latency: 2,000 small envelopes at 1,000 msg/s, latency of each ``bus.publish``;
2. end to end: a fresh PostgreSQL database with N open trades over many accounts; two
   ``tradewire worker`` processes (the production CLI, default settings: batch path on) consume
   the bus; after a warm-up, N entry-fill ``ORDER_TRADE_UPDATE`` events (as bench/pipeline.py
   builds them) are published at full speed the way the streams layer publishes (``publish_many``
   batches of up to 500, one in flight; ``--batch 0``: one ``publish`` per event, ``--parallel``
   in flight); sustained events/s = N / (last commit - first publish), and event-to-commit
   latency = ``processed_events.processed_at`` - publish time
   (both wall-clock epoch ms on this host; ``processed_at`` is stamped just before the batch's
   commit). Then 2,000 more events at 1,000/s: commit latency below capacity (``paced_…``).
   CPU per event over the full-speed phase: the workers, their PostgreSQL backends, the broker
   (redis-server / beam.smp; none for the embedded bus), this publishing process; and how busy
   the whole host was (``host_busy_pct``: near 100 means the two cores, not latency, set the
   figure).

Prints a table to stderr, writes bench/results/bus.json, and prints one JSON object as its
last line: ``{"redis": {"publish_p99_ms", "events_per_s", "commit_p99_ms", ...}, ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert

from tradewire.bus.base import Bus, Envelope
from tradewire.config import Settings
from tradewire.domain import Leg, Side, TradeStatus, client_order_id
from tradewire.store import users
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.store.tables import Order, Trade

sys.path.insert(0, str(Path(__file__).parent))
from pipeline import fill_event, measure_publish, pct

REDIS_LOCKS = "redis://127.0.0.1:6379/9"
RESULTS = Path(__file__).parent / "results"
REDIS_URL = "redis://127.0.0.1:6379/9"
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
PG_ADMIN = {"host": "127.0.0.1", "user": "postgres", "database": "postgres"}
WORKERS = 2
PACED, PACED_RATE = 2000, 1000  # then 2,000 more events at 1,000/s: latency below capacity
LOGS = Path(tempfile.gettempdir()) / "tw-bench-logs"  # the worker processes' output


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await proc.wait()


def wall_ms() -> float:
    return time.time() * 1000  # the clock of processed_events.processed_at (epoch ms)


async def seed(db_url: str, key: bytes, n: int, n_accounts: int) -> list[tuple[int, int, str]]:
    """``n`` OPEN trades (entry order PLACED) over ``n_accounts`` users, bulk inserted."""
    engine, sessions = create_engine_and_sessions(db_url)
    box = SecretBox(key)
    out: list[tuple[int, int, str]] = []
    async with sessions.begin() as session:
        owners = [
            await users.create_user(
                session, box, name=f"bench-{uuid.uuid4().hex[:10]}", api_key=uuid.uuid4().hex,
                api_secret="s" * 64, discord_webhook_url="http://127.0.0.1:9/hooks/bench")
            for _ in range(n_accounts)
        ]
        now = int(wall_ms())
        rows, cids = [], []
        for i in range(n):
            user, account = owners[i % n_accounts]
            signal = f"bench-{uuid.uuid4().hex}"
            rows.append({"signal_id": signal, "user_id": user.id, "account_id": account.id,
                         "symbol": "BTCUSDT", "side": Side.LONG, "status": TradeStatus.OPEN,
                         "quantity": Decimal("0.01"), "stop_loss": Decimal(58000),
                         "take_profit": Decimal(62000), "leverage": 10,
                         "realized_pnl": Decimal(0), "commission": Decimal(0),
                         "created_at": now, "updated_at": now})
            cids.append((user.id, account.id, client_order_id(signal, account.id, Leg.ENTRY)))
        returning = insert(Trade).returning(Trade.id, sort_by_parameter_order=True)
        ids = list(await session.scalars(returning, rows))
        await session.execute(insert(Order), [
            {"trade_id": trade_id, "leg": Leg.ENTRY, "client_order_id": cid,
             "order_type": "MARKET", "side": "BUY", "quantity": Decimal("0.01"),
             "status": "PLACED", "created_at": now, "updated_at": now}
            for trade_id, (_, _, cid) in zip(ids, cids, strict=True)
        ])
        out = cids
    await engine.dispose()
    return out


def envelope_of(seeded: tuple[int, int, str], i: int) -> Envelope:
    user_id, account_id, cid = seeded
    return Envelope(event_id=f"{account_id}:bench:{cid}", account_id=account_id,
                    user_id=user_id, symbol="BTCUSDT", received_ms=int(wall_ms()),
                    event=fill_event(cid, 10_000 + i, 1_767_000_000_000))


async def publish_all(
    bus: Bus, envs: list[Envelope], parallel: int, batch: int = 0
) -> dict[str, float]:
    """Publish at full speed; publish wall time per event. ``batch`` > 0: as the streams layer
    publishes (``streams.publisher.BatchPublisher``), ``publish_many`` of up to ``batch``
    envelopes, one call in flight, each envelope stamped when its call starts; 0: one
    ``publish`` per event, ``parallel`` in flight."""
    stamps: dict[str, float] = {}
    if batch > 0:
        for start in range(0, len(envs), batch):
            chunk = envs[start:start + batch]
            now = wall_ms()
            stamps.update((env.event_id, now) for env in chunk)
            await bus.publish_many(chunk)
        return stamps
    queue = iter(envs)

    async def publisher() -> None:
        for env in queue:
            stamps[env.event_id] = wall_ms()
            await bus.publish(env)

    await asyncio.gather(*(publisher() for _ in range(parallel)))
    return stamps


async def publish_paced(bus: Bus, envs: list[Envelope], rate: int) -> dict[str, float]:
    """Publish at ``rate``/s (below capacity: commit latency without queueing)."""
    stamps: dict[str, float] = {}
    start = time.perf_counter()
    for i, env in enumerate(envs):
        stamps[env.event_id] = wall_ms()
        await bus.publish(env)
        delay = start + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return stamps


async def wait_processed(conn: asyncpg.Connection, target: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        done = await conn.fetchval("SELECT count(*) FROM processed_events")
        if done >= target:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {target} events committed in {timeout_s} s")
        await asyncio.sleep(0.2)


async def commits(conn: asyncpg.Connection, database: str) -> int:
    """Committed transactions of the database so far (the workers' write transactions; their
    read-only sessions end in a rollback)."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    value = await conn.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", database)
    return int(value)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pids(bus_url: str) -> list[int]:
    """The broker's server processes on this host (none for the embedded bus)."""
    name = "redis-server" if bus_url.startswith("redis") else (
        "beam.smp" if bus_url.startswith("amqp") else "")
    if not name:
        return []
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole host, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def start_workers(env: dict[str, str], logdir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    logdir.mkdir(parents=True, exist_ok=True)
    for n in range(WORKERS):
        log = (logdir / f"worker-{n}.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tradewire.cli.main", "worker"],
            env={**os.environ, **env, "TRADEWIRE_WORKER_NAME": f"bench-worker-{n}"},
            stdout=log, stderr=subprocess.STDOUT,
        ))
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def end_to_end(
    bus_url: str, make_bus: Callable[[], Bus], tmp: Path, events: int, n_accounts: int,
    warmup: int, parallel: int, batch: int,
) -> dict[str, Any]:
    name = f"tw_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(**PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    key = os.urandom(32)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await upgrade(db_url)
        seeded = await seed(db_url, key, events + warmup + PACED, n_accounts)
        conn = await asyncpg.connect(**{**PG_ADMIN, "database": name})
        procs = start_workers({
            "TRADEWIRE_DATABASE_URL": db_url, "TRADEWIRE_BUS_URL": bus_url,
            # RabbitMQ needs Redis to coordinate partition ownership (bus.ownership); the others
            # coordinate through their own backend, so their key locks stay in process
            "TRADEWIRE_LOCK_URL": REDIS_LOCKS if bus_url.startswith("amqp") else "memory",
            "TRADEWIRE_EXCHANGE_URL": "http://127.0.0.1:9",
            "TRADEWIRE_MASTER_KEY": base64.urlsafe_b64encode(key).decode(),
            "TRADEWIRE_DATA_DIR": str(tmp / "data"),
        }, LOGS)
        bus = make_bus()
        envs = [envelope_of(s, i) for i, s in enumerate(seeded)]
        await publish_all(bus, envs[:warmup], parallel, batch)  # workers start, warm up
        await wait_processed(conn, warmup, 120)
        cpu0 = [cpu_s(p.pid) for p in procs]
        commits0 = await commits(conn, name)
        backends = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        pg0 = {r["pid"]: cpu_s(r["pid"]) for r in backends}
        broker0 = {pid: cpu_s(pid) for pid in broker_pids(bus_url)}
        host0, own0 = host_cpu(), time.process_time()
        t0 = wall_ms()
        stamps = await publish_all(bus, envs[warmup:warmup + events], parallel, batch)
        published_s = (wall_ms() - t0) / 1000
        await wait_processed(conn, warmup + events, 600)
        cpu = sum(cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
        own_cpu = time.process_time() - own0
        host1 = host_cpu()
        transactions = await commits(conn, name) - commits0
        pg_cpu = sum(cpu_s(pid) - before for pid, before in pg0.items())
        broker_cpu = sum(cpu_s(pid) - before for pid, before in broker0.items())
        paced = await publish_paced(bus, envs[warmup + events:], PACED_RATE)
        await wait_processed(conn, warmup + events + PACED, 120)
        rows = await conn.fetch("SELECT event_id, processed_at FROM processed_events")
        committed = {r["event_id"]: r["processed_at"] for r in rows}
        await conn.close()
        await bus.close()
        lat = [committed[e] - t for e, t in stamps.items()]
        paced_lat = [committed[e] - t for e, t in paced.items()]
        last = max(committed[e] for e in stamps)
        elapsed_s = (last - t0) / 1000
        return {
            "events": events, "accounts": n_accounts, "workers": WORKERS,
            "events_per_s": round(events / elapsed_s, 1),
            "publish_all_s": round(published_s, 3),
            "commit_p50_ms": pct(lat, 0.5), "commit_p99_ms": pct(lat, 0.99),
            "paced_commit_p50_ms": pct(paced_lat, 0.5), "paced_commit_p99_ms": pct(paced_lat, 0.99),
            "worker_cpu_ms_per_event": round(cpu * 1000 / events, 3),
            "pg_cpu_ms_per_event": round(pg_cpu * 1000 / events, 3),
            "events_per_write_tx": round(events / max(1, transactions), 1),
            "broker_cpu_ms_per_event": round(broker_cpu * 1000 / events, 3),
            "publisher_cpu_ms_per_event": round(own_cpu * 1000 / events, 3),
            "host_busy_pct": round(
                100 * (host1[0] - host0[0]) / max(1, host1[1] - host0[1]), 1),
        }
    finally:
        stop_workers(procs)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run_backend(
    backend: str, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from tradewire.bus.factory import create_bus

    cleanup: Callable[[], Awaitable[None]] | None = None
    if backend == "redis":
        from redis.asyncio import Redis

        async def flush() -> None:
            client = Redis.from_url(REDIS_URL)
            await client.flushdb()
            await client.aclose()

        bus_url, cleanup = REDIS_URL, flush
    elif backend == "rabbitmq":
        vhost = f"tw_bench_{uuid.uuid4().hex[:8]}"
        await rabbitmqctl("add_vhost", vhost)
        await rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

        async def drop_vhost() -> None:
            await rabbitmqctl("delete_vhost", vhost)

        bus_url, cleanup = AMQP + vhost, drop_vhost
    else:
        bus_url = f"sqlite:///{tmp}/bus.db"
    settings = Settings(bus_url=bus_url, data_dir=tmp / "data")
    try:
        if cleanup is not None and backend == "redis":
            await cleanup()
        latency_settings = settings
        if backend == "embedded":
            latency_settings = Settings(bus_url=f"sqlite:///{tmp}/latency.db", data_dir=tmp)
        bus = create_bus(latency_settings)
        if hasattr(bus, "setup"):
            await bus.setup()
        publish = await measure_publish(bus, rate=1000, count=2000)
        await bus.close()
        if backend == "redis":
            await flush()
        elif backend == "rabbitmq":
            from tradewire.bus.rabbitmq import delete_namespace

            await delete_namespace(bus_url, "", settings.bus_partitions)
        row = {"publish_p50_ms": pct(publish, 0.5), "publish_p99_ms": pct(publish, 0.99)}
        row.update(await end_to_end(bus_url, lambda: create_bus(settings), tmp, args.events,
                                    args.accounts, args.warmup, args.parallel, args.batch))
        return row
    finally:
        if cleanup is not None:
            await cleanup()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            results[backend] = await run_backend(backend, Path(tmp), args)
        row = results[backend]
        sys.stderr.write(f"{backend:<9} " + "  ".join(f"{k}={v}" for k, v in row.items()) + "\n")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=32,
                        help="publishes in flight (with --batch 0)")
    parser.add_argument("--batch", type=int, default=500,
                        help="full-speed phase: publish_many batches of this size, as the streams "
                        "layer's BatchPublisher (max_batch 500); 0: one publish per event")
    parser.add_argument("--backends", default="redis,rabbitmq,embedded")
    figures = asyncio.run(main(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bus.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
