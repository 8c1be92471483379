"""Pipeline benchmark: bus publish latency, and events/s through the real worker write path.

For each configured deployment (embedded bus + SQLite; Redis Streams + PostgreSQL when those
services answer) it creates N open trades, publishes one entry-fill ORDER_TRADE_UPDATE per
trade, and lets one worker (consumer + EventProcessor, the production classes) apply them:
each event is a dedupe check, a conditional trade update, an order update, a processed-event
row and an outbox row in one transaction.

Prints a table to stderr and, as its last line, one JSON object; also writes
bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tradewire.bus.base import Bus, Envelope
from tradewire.bus.consumer import Consumer
from tradewire.domain import Leg, Side, client_order_id
from tradewire.locks.memory import MemoryLocks
from tradewire.processor.worker import EventProcessor
from tradewire.store import trades, users
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.trading.clients import ClientPool

RESULTS = Path(__file__).parent / "results"


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def fill_event(cid: str, order_id: int, now_ms: int) -> dict[str, Any]:
    return {"e": "ORDER_TRADE_UPDATE", "E": now_ms, "T": now_ms, "o": {
        "s": "BTCUSDT", "c": cid, "S": "BUY", "o": "MARKET", "f": "GTC", "q": "0.010",
        "p": "0", "ap": "60000.00", "sp": "0", "x": "TRADE", "X": "FILLED", "i": order_id,
        "l": "0.010", "z": "0.010", "L": "60000.00", "N": "USDT", "n": "0.24", "T": now_ms,
        "t": order_id, "b": "0", "a": "0", "m": False, "R": False, "wt": "CONTRACT_PRICE",
        "ot": "MARKET", "ps": "BOTH", "cp": False, "rp": "0", "pP": False, "si": 0, "ss": 0,
        "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0, "er": "0"}}


async def seed(
    sessions: Any, box: SecretBox, n: int, n_accounts: int
) -> list[tuple[int, int, str]]:
    """``n`` open trades spread over ``n_accounts`` users; (user, account, entry client id)."""
    out = []
    async with sessions.begin() as session:
        owners = [
            await users.create_user(
                session, box, name=f"bench-{uuid.uuid4().hex[:8]}", api_key=uuid.uuid4().hex,
                api_secret="s" * 64, discord_webhook_url="http://127.0.0.1:9/hooks/bench")
            for _ in range(n_accounts)
        ]
        for i in range(n):
            user, account = owners[i % n_accounts]
            signal = f"bench-{uuid.uuid4().hex}"
            trade = await trades.create_trade(
                session, signal_id=signal, user_id=user.id, account_id=account.id,
                symbol="BTCUSDT", side=Side.LONG, quantity=Decimal("0.01"),
                stop_loss=Decimal(58000), take_profit=Decimal(62000), leverage=10)
            cid = client_order_id(signal, account.id, Leg.ENTRY)
            await trades.add_order(session, trade.id, Leg.ENTRY, cid, order_type="MARKET",
                                   side="BUY", quantity=Decimal("0.01"), status="PLACED")
            out.append((user.id, account.id, cid))
    return out


async def measure_publish(bus: Bus, rate: int, count: int) -> list[float]:
    """Publish ``count`` small envelopes at ``rate``/s; latency of each publish in ms."""
    latencies = []
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(count):
        env = Envelope(event_id=f"p:{uuid.uuid4().hex}", account_id=999_999, user_id=1,
                       symbol="ETHUSDT", received_ms=0,
                       event={"e": "ACCOUNT_CONFIG_UPDATE", "E": i, "T": i,
                              "ac": {"s": "ETHUSDT", "l": 10}})
        t0 = time.perf_counter()
        await bus.publish(env)
        latencies.append((time.perf_counter() - t0) * 1000)
        delay = start + (i + 1) * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return latencies


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 3) if ordered else 0.0


async def run_one(db_url: str, bus: Bus, events: int, n_accounts: int) -> dict[str, Any]:
    await upgrade(db_url)
    engine, sessions = create_engine_and_sessions(db_url)
    box = SecretBox(os.urandom(32))
    async with httpx.AsyncClient() as http:
        processor = EventProcessor(sessions, box, ClientPool("http://127.0.0.1:9", http),
                                   MemoryLocks())
        published: dict[str, float] = {}
        committed: list[float] = []

        async def handler(env: Envelope) -> None:
            await processor.handle(env)
            if env.event_id in published:
                committed.append((time.perf_counter() - published[env.event_id]) * 1000)

        publish = await measure_publish(bus, rate=1000, count=2000)
        seeded = await seed(sessions, box, events, n_accounts)
        consumer = Consumer(bus, handler, name="bench", retry_delays_s=(0.05,))
        await consumer.drain(60)  # the publish-latency envelopes (ignored events)
        t0 = time.perf_counter()
        for i, (user_id, account_id, cid) in enumerate(seeded):
            env = Envelope(event_id=f"{account_id}:bench:{cid}", account_id=account_id,
                           user_id=user_id, symbol="BTCUSDT", received_ms=0,
                           event=fill_event(cid, 10_000 + i, 1_767_000_000_000))
            published[env.event_id] = time.perf_counter()
            await bus.publish(env)
        await consumer.drain(300)
        elapsed = time.perf_counter() - t0
    await engine.dispose()
    await bus.close()
    assert processor.applied == events, f"applied {processor.applied} of {events}"
    return {
        "publish_p50_ms": pct(publish, 0.5), "publish_p99_ms": pct(publish, 0.99),
        "events": events, "accounts": n_accounts, "events_per_s": round(events / elapsed, 1),
        "commit_p50_ms": pct(committed, 0.5), "commit_p99_ms": pct(committed, 0.99),
        "mean_commit_ms": round(statistics.fmean(committed), 3),
    }


async def main(events: int, n_accounts: int) -> dict[str, Any]:
    from tradewire.bus.embedded import EmbeddedBus

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        results["embedded+sqlite"] = await run_one(url, EmbeddedBus(), events, n_accounts)
    if reachable(6379) and reachable(5432):
        import asyncpg
        from redis.asyncio import Redis

        from tradewire.bus.redis_streams import RedisStreamsBus

        redis_url = "redis://127.0.0.1:6379/11"
        client = Redis.from_url(redis_url)
        await client.flushdb()
        await client.aclose()
        name = f"tw_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            pg = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
            results["redis+postgres"] = await run_one(
                pg, RedisStreamsBus(redis_url), events, n_accounts)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=50)
    args = parser.parse_args()
    figures = asyncio.run(main(args.events, args.accounts))
    for deployment, row in figures.items():
        cells = "  ".join(f"{k}={v}" for k, v in row.items())
        sys.stderr.write(f"{deployment:<16} {cells}\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
