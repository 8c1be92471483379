"""The streams pod's steady background calls, client CPU per call (issue 5's publish tail).

A streams pod holding 5,000 accounts makes two calls all day besides its sockets: a listenKey
keepalive PUT every ~0.36 s (every key once per 30 min) and the account listing's digest every
``refresh_s`` (2 s). Each runs on the event loop that reads the sockets, so its client CPU is
time the readers wait. Measured here on uvloop (the CLI's loop), ``process_time`` around
``--calls`` sequential calls:

- keepalive: ``ExchangeClient.keepalive_listen_key`` against a ``tradewire simulator``
  subprocess (its CPU not counted), through httpx and through ``exchange.lean_http.LeanHttp``;
- refresh: ``StoreDirectory.listing`` of an unchanged listing of ``--accounts`` accounts on a
  fresh PostgreSQL database, through a session and over the directory's held driver connection;
- lease round: ``RedisOwnership.round`` of one pod holding all 256 shards (heartbeat, one
  renewal script call for all of them), the renewal through redis-py and over the lean pipe
  (Redis DB ``--redis-db``, flushed).

Writes bench/results/stream_calls.json; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop
from sqlalchemy import insert

from tradewire.bus.ownership_redis import RedisOwnership
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.lean_http import LeanHttp
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.store.tables import ExchangeAccount, User
from tradewire.streams.directory import StoreDirectory
from tradewire.streams.shards_redis import SHARD_LEASES
from tradewire.trading.clients import ClientPool

RESULTS = Path(__file__).parent / "results"
PG = "127.0.0.1"


async def cpu_us_per_call(call: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(min(50, n)):  # warm-up: connections, caches, prepared statements
        await call()
    started = time.process_time()
    for _ in range(n):
        await call()
    return round((time.process_time() - started) * 1e6 / n, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def keepalive(calls: int) -> dict[str, float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tradewire.cli.main", "simulator", "--port", str(port),
        "--ip-weight-per-minute", "10000000",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=base) as admin:
            for _ in range(200):
                try:
                    await admin.get("/fapi/v1/time")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            creds = (await admin.post("/sim/accounts", json={})).json()
        out: dict[str, float] = {}
        for name in ("httpx", "lean"):
            lean = LeanHttp(base) if name == "lean" else None
            async with httpx.AsyncClient(timeout=10) as http:
                client = ExchangeClient(base, creds["api_key"], creds["api_secret"], http=http,
                                        lean=lean)
                await client.new_listen_key()
                out[f"keepalive_put_cpu_us_{name}"] = await cpu_us_per_call(
                    client.keepalive_listen_key, calls)
            if lean is not None:
                await lean.aclose()
        return out
    finally:
        sim.terminate()
        await sim.wait()


async def refresh(calls: int, accounts: int) -> dict[str, float]:
    name = f"tw_bench_calls_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(host=PG, user="postgres", database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@{PG}:5432/{name}"
    try:
        await upgrade(url)
        engine, sessions = create_engine_and_sessions(url)
        box = SecretBox(os.urandom(32))
        now = int(time.time() * 1000)
        async with sessions.begin() as session:
            user_ids = list(await session.scalars(
                insert(User).returning(User.id, sort_by_parameter_order=True),
                [{"name": f"u{i}", "active": True, "created_at": now} for i in range(accounts)]))
            await session.execute(insert(ExchangeAccount), [
                {"user_id": uid, "label": "default", "api_key": f"key-{uid:012d}",
                 "api_secret_enc": box.encrypt(f"secret-{uid}"), "active": True,
                 "created_at": now} for uid in user_ids])
        out: dict[str, float] = {}
        async with httpx.AsyncClient() as http:
            for kind in ("session", "held"):
                directory = StoreDirectory(sessions, box, ClientPool("http://sim", http),
                                           engine=engine if kind == "held" else None)
                out[f"refresh_cpu_us_{kind}"] = await cpu_us_per_call(directory.listing, calls)
                await directory.aclose()
        await engine.dispose()
        return out
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def lease_round(calls: int, db: int) -> dict[str, float]:
    from redis.asyncio import Redis

    url = f"redis://127.0.0.1:6379/{db}"
    out: dict[str, float] = {}
    for kind in ("redis_py", "pipe"):
        flush = Redis.from_url(url)
        await flush.flushdb()
        await flush.aclose()
        own = RedisOwnership(url, "bench-pod", 256, space=SHARD_LEASES)
        if kind == "redis_py":
            own._pipe = None  # the renewal through redis-py's script call
        try:
            out[f"lease_round_cpu_us_{kind}"] = await cpu_us_per_call(own.round, calls // 4)
            assert len(own.owned()) == 256
        finally:
            await own.close()
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"calls": args.calls, "accounts": args.accounts}
    figures.update(await keepalive(args.calls))
    figures.update(await refresh(args.calls, args.accounts))
    figures.update(await lease_round(args.calls, args.redis_db))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--redis-db", type=int, default=2, help="flushed (scratch)")
    result = uvloop.run(main(parser.parse_args()))
    for key, value in result.items():
        print(f"  {key:32} {value}", file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream_calls.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
