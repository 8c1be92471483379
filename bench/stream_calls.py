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
  (Redis DB ``--redis-db``, flushed);
- messages: one ``MuxConnection`` carrying 200 listenKeys of the simulator, its sink only
  counting: client CPU per message from the socket to ``offer``, while the simulator paces
  ``--messages`` events at 1,000/s (each arrives alone: the publish latency case) and while
  it emits them in bursts of 500 (the ingest case).

Writes bench/results/stream_calls.json; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import uvloop
from streams import Processes, Sim, fresh_database, seed_accounts

from tradewire.bus.base import Envelope
from tradewire.bus.ownership_redis import RedisOwnership
from tradewire.clock import SystemClock
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.lean_http import LeanHttp
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions
from tradewire.streams.connection import MuxConnection
from tradewire.streams.directory import StoreDirectory
from tradewire.streams.session import AccountRef
from tradewire.streams.shards_redis import SHARD_LEASES
from tradewire.trading.clients import ClientPool

RESULTS = Path(__file__).parent / "results"


async def cpu_us_per_call(call: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(min(50, n)):  # warm-up: connections, caches, prepared statements
        await call()
    started = time.process_time()
    for _ in range(n):
        await call()
    return round((time.process_time() - started) * 1e6 / n, 1)


async def keepalive(sim: Sim, calls: int) -> dict[str, float]:
    creds = (await sim.http.post("/sim/accounts", json={})).json()
    out: dict[str, float] = {}
    for name in ("httpx", "lean"):
        lean = LeanHttp(sim.url) if name == "lean" else None
        async with httpx.AsyncClient(timeout=10) as http:
            client = ExchangeClient(sim.url, creds["api_key"], creds["api_secret"], http=http,
                                    lean=lean)
            await client.new_listen_key()
            out[f"keepalive_put_cpu_us_{name}"] = await cpu_us_per_call(
                client.keepalive_listen_key, calls)
        if lean is not None:
            await lean.aclose()
    return out


class Counted:
    """A connection's sink that counts messages and notes the CPU clock at the first and at
    the ``target``-th."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.first_cpu = self.last_cpu = 0.0
        self.reached = asyncio.Event()

    def start(self, target: int) -> None:
        self.count, self.target = 0, target
        self.reached.clear()

    def offer(self, envelope: Envelope) -> bool:
        self.count += 1
        if self.count == 1:
            self.first_cpu = time.process_time()
        if self.count == self.target:
            self.last_cpu = time.process_time()
            self.reached.set()
        return True

    async def room(self) -> None:
        return None

    @property
    def cpu_us_per_message(self) -> float:
        return round((self.last_cpu - self.first_cpu) * 1e6 / (self.target - 1), 1)


async def messages(sim: Sim, n: int, keys: int = 200) -> dict[str, float]:
    """Client CPU per message on one connection: paced (1,000/s) and in bursts of 500. Runs
    first on its simulator: events go round-robin to every live listenKey, all of them ours."""
    sink = Counted()
    conn = MuxConnection(1, "ws" + sim.url[4:], sink, SystemClock(), subscribe_batch=50,
                         control_msgs_per_s=9)
    await conn.open()
    out: dict[str, float] = {}
    try:
        confirmed: list[asyncio.Future[None]] = []
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(keys):
                creds = (await sim.http.post("/sim/accounts", json={})).json()
                client = ExchangeClient(sim.url, creds["api_key"], creds["api_secret"],
                                        http=http)
                key = await client.new_listen_key()
                confirmed.append(conn.subscribe(key, AccountRef(i + 1, i + 1)))
        await asyncio.wait_for(asyncio.gather(*confirmed), 60)
        sink.start(n)
        await sim.pace(n, 1000)
        await asyncio.wait_for(sink.reached.wait(), n / 1000 + 30)
        out["message_cpu_us_paced"] = sink.cpu_us_per_message
        sink.start(n)
        for _ in range(0, n, 500):
            await sim.emit(500)
        await asyncio.wait_for(sink.reached.wait(), 60)
        out["message_cpu_us_burst"] = sink.cpu_us_per_message
    finally:
        await conn.close()
    return out


async def refresh(procs: Processes, sim: Sim, calls: int, accounts: int) -> dict[str, float]:
    key = os.urandom(32)
    out: dict[str, float] = {}
    async with fresh_database(procs) as url:
        await seed_accounts(sim, url, key, accounts)
        engine, sessions = create_engine_and_sessions(url)
        try:
            async with httpx.AsyncClient() as http:
                for kind in ("session", "held"):
                    directory = StoreDirectory(sessions, SecretBox(key),
                                               ClientPool(sim.url, http),
                                               engine=engine if kind == "held" else None)
                    out[f"refresh_cpu_us_{kind}"] = await cpu_us_per_call(
                        directory.listing, calls)
                    await directory.aclose()
        finally:
            await engine.dispose()
    return out


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
    procs = Processes(Path(tempfile.mkdtemp(prefix="tw-bench-stream-calls-")))
    try:
        sim = await Sim.start(procs, "simulator", ip_weight=10_000_000)
        try:
            figures.update(await messages(sim, args.messages))
            figures.update(await keepalive(sim, args.calls))
            figures.update(await refresh(procs, sim, args.calls, args.accounts))
        finally:
            await sim.close()
    finally:
        await procs.stop_all()
    figures.update(await lease_round(args.calls, args.redis_db))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--redis-db", type=int, default=2, help="flushed (scratch)")
    result = uvloop.run(main(parser.parse_args()))
    for key, value in result.items():
        print(f"  {key:32} {value}", file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream_calls.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
