"""Streams benchmark (issue 5): the ``streams`` role holding thousands of accounts, and pods dying.

Every figure is measured from outside tradewire where it can be: at the exchange (the
simulator's ``/sim/stats/*``: listenKey calls with their times, sockets, accounts listening), in
Redis (entries arriving) and in PostgreSQL (fills recorded). Processes are the production CLI
(``tradewire simulator``, ``tradewire db upgrade``, ``tradewire streams``, ``tradewire worker``)
on a fresh PostgreSQL database per part and Redis DB 3 (``--redis-db``; flushed at start and
end: nothing else may use it).

Part 1 — one ``streams`` process, ``--accounts`` (5,000) accounts. The simulator and the
process spend 10x the exchange's IP request weight (24,000/min instead of 2,400), so 5,000
listenKey POSTs take ~16 s instead of ~125 s; nothing else measured depends on it. Process A
runs with the production keepalive interval (30 min: ~2.8 PUT/s for 5,000 keys):

a. memory: VmRSS of the process idle with 0 accounts, then with every account listening (the
   accounts are inserted into the database while it runs; it picks them up) ->
   ``kb_per_account`` = (RSS listening - RSS empty) / accounts. The time from insertion to
   every account listening is reported too.
c. publish latency at 1,000 events/s: the simulator emits one event every millisecond for
   ``--paced-s`` seconds (``/sim/bench/pace``, paced on its own loop: events arrive one by one,
   as from an exchange serving thousands of accounts; ``paced_source_late_max_ms`` says how far
   the source itself ran late, ``simulator_cpu_pct_paced`` how much of the 2 vCPUs the source
   took from the process measured and Redis); p99 of the process's
   ``tradewire_stream_publish_seconds`` histogram (bucket deltas over the phase; the figure is
   the upper bound of the bucket holding the 99th percentile; ``publish_over_{0.5,1}ms_pct`` say
   how far inside or outside the bucket it sits). Cross-check from Redis: entry id time (Redis
   clock) - the envelope's ``received_ms`` and - the event's ``E`` (simulator time), 1 ms
   resolution. The machine's own share in the tail is reported beside it:
   ``host_steal_pct_paced`` (CPU time the hypervisor gave elsewhere during the phase,
   /proc/stat) and, measured just before the phase with every process idle,
   ``host_stall_*_idle`` (a busy loop's gaps over 0.2 ms: time lost, gaps over 1 ms per second,
   longest gap). On a host that stops a vCPU for a millisecond or more several times a second,
   the p99 measures the host more than the process.
b. ingest: ``POST /sim/bench/emit`` bursts (synthetic ACCOUNT_UPDATEs round-robin over the
   accounts), closed loop with at most ``--inflight`` events emitted and not yet in Redis (the
   simulator closes a socket whose send queue passes 10,000 frames); ``ingest_events_per_s`` =
   events / (last entry in Redis - first emit), counted by XLEN over ``ws-events.<p>``; the
   rate between 10 % and 90 % of the events is reported as ``steady``.

Process A stops; process B takes the same accounts over (new listenKeys) with the keepalive
interval ``TRADEWIRE_KEEPALIVE_INTERVAL_S`` = ``--keepalive-s`` (180 instead of 1,800: time
scaled by 10, so the acceptance's 10 s window becomes 1 s and the PUT cap
``TRADEWIRE_KEEPALIVE_MAX_PER_S`` 10/s becomes 100/s; the 10x IP weight keeps the PUTs at their
real share of it):

d. keepalives: from the simulator's PUT log over the two intervals after every account listens
   on B: ``keepalive_peak_ratio`` = most PUTs in any sliding scaled window / the even rate's
   count for that window (accounts x window / interval); also the peak in the second interval
   only, the PUTs per window (results file) and the longest time between two extensions of a
   key / interval. Inside the span, c once more: ``publish_p99_ms_keepalive_x10`` is the
   publish latency under ten times the production keepalive load (28 PUT/s).

Part 2 — two pods (``TRADEWIRE_STREAM_NAME=pod-a/pod-b``, shard leases in Redis),
``--failover-accounts`` (2,000) accounts, one ``tradewire worker``; trades are opened the way
the product does (``trading.Executor``, 50 accounts per signal: entry MARKET, stop-loss and
take-profit algo orders at the simulator) from this process, its REST weight counted on its own
client IP (``X-Sim-Client-Ip``), and each must be ACTIVE (entry fill recorded) before the phase
starts; an account whose placement failed is left out of the phase (counted, reason noted).

e. failover: 200 accounts with an open LONG; SIGKILL pod-a, at once the mark moves below every
   stop-loss (fills happen while pod-a's accounts stream nowhere); ``failover_s`` = kill -> the
   simulator shows every account listening again; ``lost_fills`` = accounts whose position was
   closed at the simulator - trades CLOSED by STOP_LOSS in PostgreSQL after settling
   (``--settle-s``). The kill is made in a REST-weight minute after the setup's listenKey POSTs
   (pods share the simulator's per-IP weight, as pods behind one egress IP do).
f. rolling restart: 200 more accounts in 4 groups with staggered stop-losses; SIGTERM pod-a
   (mark crosses group 1), restart it (group 2), wait until it holds shards again and every
   account listens; the same for pod-b (groups 3, 4); ``rolling_restart_lost_fills`` as in e.

Logs of every process are kept in a temp folder (printed). Prints a table to stderr, writes
bench/results/streams.json (every figure and note), and prints one JSON object as its last line.
Exit status 1 when a phase could not be measured (its figure is null, the error is in the file).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import itertools
import json
import os
import re
import secrets
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis
from sqlalchemy import insert

from tradewire.domain import Side, Signal, Target
from tradewire.names import partition_name
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions
from tradewire.store.tables import ExchangeAccount, User
from tradewire.trading.clients import ClientPool
from tradewire.trading.execute import Executor

HOST = "127.0.0.1"
REDIS_URL = "redis://127.0.0.1:6379/3"  # this benchmark's own DB (--redis-db): flushed at start
PG_ADMIN = {"host": HOST, "user": "postgres", "database": "postgres"}
RESULTS = Path(__file__).parent / "results"
PARTITIONS = 16
SYMBOL = "BTCUSDT"
START_PRICE = Decimal(60000)
REAL_KEEPALIVE_S = 1800.0  # production interval; the acceptance's window is 10 s of it
REAL_WINDOW_S = 10.0
REAL_KEEPALIVE_CAP = 10.0  # TRADEWIRE_KEEPALIVE_MAX_PER_S default
REAL_IP_WEIGHT = 2400  # the exchange's request weight per IP and minute
BENCH_IP = "10.99.0.1"  # this process's REST calls count on their own IP at the simulator
HISTOGRAM = "tradewire_stream_publish_seconds"


def say(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


class PhaseError(Exception):
    """A phase could not be measured; the message says what was seen."""


# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def tail(self, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


class Processes:
    """Every process this benchmark starts; all of them are stopped on the way out."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.all: list[Proc] = []

    async def start(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        log = self.logdir / f"{name}-{len(self.all)}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tradewire.cli.main", *args, env={**os.environ, **env},
                cwd=self.logdir, stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL)
        started = Proc(name, proc, log)
        self.all.append(started)
        return started

    @staticmethod
    async def stop(proc: Proc, timeout_s: float = 30.0) -> float:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); seconds it took."""
        began = time.monotonic()
        if proc.alive:
            proc.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.proc.wait(), timeout_s)
            except TimeoutError:
                say(f"{proc.name} did not stop within {timeout_s:g} s of SIGTERM; killing it")
                proc.proc.kill()
                await proc.proc.wait()
        return time.monotonic() - began

    async def stop_all(self) -> None:
        live = [p for p in self.all if p.alive]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.proc.send_signal(signal.SIGTERM)
        for p in live:
            try:
                await asyncio.wait_for(p.proc.wait(), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.kill()
                await p.proc.wait()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise PhaseError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_jiffies() -> list[int]:
    """The machine's CPU time so far by kind (the ``cpu`` line of /proc/stat: user, nice,
    system, idle, iowait, irq, softirq, steal, ...)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def steal_pct(before: list[int], after: list[int]) -> float:
    """Share of the machine's CPU time the hypervisor gave to others (steal) between two
    ``cpu_jiffies`` reads: a vCPU stolen while an event is on it delays that event."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta[:8])  # guest time is also counted in user and nice
    return round(delta[7] / total * 100, 1) if total else 0.0


_STALL_PROBE = """
import json, sys, time
clock, seconds, floor = time.perf_counter, float(sys.argv[1]), 0.0002
start = last = clock()
gaps = []
while last - start < seconds:
    now = clock()
    if now - last > floor:
        gaps.append(now - last)
    last = now
print(json.dumps({"lost_pct": round(sum(gaps) / seconds * 100, 2),
                  "over_1ms_per_s": round(sum(g > 0.001 for g in gaps) / seconds, 1),
                  "max_ms": round(max(gaps, default=0.0) * 1000, 2)}))
"""


async def host_stalls(seconds: float) -> dict[str, Any]:
    """How often this machine stops a running thread by itself (the hypervisor, interrupts,
    other tenants): a busy loop in a child process notes every gap of more than 0.2 ms between
    two clock reads, like ``redis-cli --intrinsic-latency``. Run while the benchmark's
    processes are idle; it occupies one CPU for ``seconds``. An event arriving in a gap
    waits it out, so a p99 of 1 ms at 1,000 events/s needs gaps over 1 ms to be rare."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _STALL_PROBE, str(seconds), stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    figures: dict[str, Any] = json.loads(out)
    return {f"host_stall_{k}_idle": v for k, v in figures.items()}


async def wait_http(url: str, proc: Proc | None, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code < 500:
                    return
            if proc is not None and not proc.alive:
                raise PhaseError(f"{proc.name} exited ({proc.proc.returncode}) before {url} "
                                 f"answered:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise PhaseError(f"{url} did not answer within {timeout_s:g} s")
            await asyncio.sleep(0.1)


# --- simulator, database, Redis ---------------------------------------------------------------


class Sim:
    """The simulator process and an admin client for it."""

    def __init__(self, proc: Proc, port: int) -> None:
        self.proc, self.port = proc, port
        self.url = f"http://{HOST}:{port}"
        self.http = httpx.AsyncClient(base_url=self.url, timeout=30)

    @classmethod
    async def start(cls, procs: Processes, name: str, ip_weight: int = 2400) -> Sim:
        port = free_port()
        proc = await procs.start(name, ["simulator", "--port", str(port),
                                        "--ip-weight-per-minute", str(ip_weight)],
                                 {"TRADEWIRE_LOG_LEVEL": "WARNING"})
        await wait_http(f"http://{HOST}:{port}/fapi/v1/ping", proc)
        sim = cls(proc, port)
        await sim.mark(START_PRICE)
        return sim

    async def mark(self, price: Decimal) -> None:
        answer = await self.http.post("/sim/mark-price",
                                      json={"symbol": SYMBOL, "price": str(price)})
        answer.raise_for_status()

    async def streams(self) -> dict[str, Any]:
        answer = await self.http.get("/sim/stats/streams")
        if answer.status_code == 404:
            raise PhaseError("the simulator has no /sim/stats/streams")
        body: dict[str, Any] = answer.json()
        return body

    async def listen_key_calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []
        since = 0
        while True:
            body = (await self.http.get("/sim/stats/listen-keys",
                                        params={"since": since, "limit": 50_000})).json()
            if body["first"] > since:
                raise PhaseError(f"listenKey log overwritten: calls {since}..{body['first']} "
                                 "are gone")
            calls += [dict(zip(body["fields"], row, strict=True)) for row in body["calls"]]
            if not body["calls"]:
                return calls
            since = body["next"]

    async def emit(self, count: int) -> int:
        answer = await self.http.post("/sim/bench/emit", json={"count": count})
        answer.raise_for_status()
        emitted: int = answer.json()["emitted"]
        return emitted

    async def pace(self, count: int, rate: int) -> None:
        """Start the simulator's own paced emission (``/sim/bench/pace``)."""
        answer = await self.http.post("/sim/bench/pace", json={"count": count, "rate": rate})
        if answer.status_code == 404:
            raise PhaseError("the simulator has no /sim/bench/pace")
        answer.raise_for_status()

    async def pace_status(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.http.get("/sim/bench/pace")).json()
        return body

    async def flat(self, api_keys: list[str]) -> int:
        """How many of the accounts have no position (their stop-loss filled)."""
        async def one(key: str) -> bool:
            body = (await self.http.get(f"/sim/accounts/{key}")).json()
            return not body["positions"]

        flags = await gather_limited([lambda k=k: one(k) for k in api_keys], 16)
        return sum(flags)

    async def close(self) -> None:
        await self.http.aclose()


async def gather_limited(jobs: list[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(j) for j in jobs)))


@contextlib.asynccontextmanager
async def fresh_database(procs: Processes) -> AsyncIterator[str]:
    """A new PostgreSQL database migrated by ``tradewire db upgrade``; dropped afterwards."""
    name = f"tw_bench_streams_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(**PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@{HOST}:5432/{name}"
    try:
        migrate = await procs.start("db-upgrade", ["db", "upgrade"],
                                    {"TRADEWIRE_DATABASE_URL": url})
        if await asyncio.wait_for(migrate.proc.wait(), 120) != 0:
            raise PhaseError(f"tradewire db upgrade failed:\n{migrate.tail()}")
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def pg_conn_args(db_url: str) -> dict[str, str]:
    return {**PG_ADMIN, "database": db_url.rsplit("/", 1)[1]}


async def flush_redis() -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@dataclass
class Account:
    user_id: int
    account_id: int
    api_key: str


async def seed_accounts(sim: Sim, db_url: str, key: bytes, n: int) -> list[Account]:
    """``n`` users with one account each: at the simulator (given keys) and in the database
    (two bulk INSERTs; secrets encrypted as the product stores them)."""
    creds = [(secrets.token_hex(32), secrets.token_hex(32)) for _ in range(n)]

    async def at_sim(api_key: str, api_secret: str) -> None:
        answer = await sim.http.post("/sim/accounts", json={"api_key": api_key,
                                                            "api_secret": api_secret})
        answer.raise_for_status()

    await gather_limited([lambda c=c: at_sim(*c) for c in creds], 16)
    box = SecretBox(key)
    engine, sessions = create_engine_and_sessions(db_url)
    now = int(time.time() * 1000)
    try:
        async with sessions.begin() as session:
            tag = uuid.uuid4().hex[:6]
            user_ids = list(await session.scalars(
                insert(User).returning(User.id, sort_by_parameter_order=True),
                [{"name": f"bench-{tag}-{i}", "active": True, "created_at": now}
                 for i in range(n)]))
            account_ids = list(await session.scalars(
                insert(ExchangeAccount).returning(ExchangeAccount.id,
                                                  sort_by_parameter_order=True),
                [{"user_id": uid, "label": "default", "api_key": api_key,
                  "api_secret_enc": box.encrypt(secret), "active": True, "created_at": now}
                 for uid, (api_key, secret) in zip(user_ids, creds, strict=True)]))
    finally:
        await engine.dispose()
    return [Account(u, a, c[0]) for u, a, c in zip(user_ids, account_ids, creds, strict=True)]


def role_env(db_url: str, sim: Sim, key: bytes, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "TRADEWIRE_DATABASE_URL": db_url, "TRADEWIRE_BUS_URL": REDIS_URL,
        "TRADEWIRE_LOCK_URL": REDIS_URL, "TRADEWIRE_EXCHANGE_URL": sim.url,
        "TRADEWIRE_MASTER_KEY": base64.urlsafe_b64encode(key).decode(),
        "TRADEWIRE_DATA_DIR": str(tmp / "data"), "TRADEWIRE_LOG_LEVEL": "INFO",
        "TRADEWIRE_LOG_FORMAT": "json", "TRADEWIRE_BUS_PARTITIONS": str(PARTITIONS),
        **extra,
    }


async def start_streams(procs: Processes, name: str, env: dict[str, str]) -> tuple[Proc, int]:
    port = free_port()
    proc = await procs.start(name, ["streams"], {
        **env, "TRADEWIRE_STREAM_NAME": name, "TRADEWIRE_METRICS_PORT": str(port)})
    await wait_http(f"http://{HOST}:{port}/metrics", proc)
    return proc, port


async def wait_listening(sim: Sim, n: int, timeout_s: float, procs: list[Proc],
                         what: str) -> float:
    """Seconds until the simulator shows ``n`` accounts listening."""
    began = time.monotonic()
    last: dict[str, Any] = {}
    while True:
        last = await sim.streams()
        if last["listening"] >= n:
            return time.monotonic() - began
        for p in procs:
            if not p.alive:
                raise PhaseError(f"{p.name} exited ({p.proc.returncode}) while waiting for "
                                 f"{what}:\n{p.tail()}")
        if time.monotonic() - began > timeout_s:
            raise PhaseError(f"{what}: only {last['listening']} of {n} accounts listening after "
                             f"{timeout_s:g} s (simulator: {last})")
        await asyncio.sleep(0.1)


async def redis_len(redis: Redis) -> int:
    pipe = redis.pipeline(transaction=False)
    for p in range(PARTITIONS):
        pipe.xlen(partition_name(p))
    return sum(int(n) for n in await pipe.execute())


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(f"http://{HOST}:{port}/metrics")).text


_BUCKET = re.compile(r'^' + HISTOGRAM + r'_bucket\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)')
_LE = re.compile(r'le="([^"]+)"')


def buckets(text: str) -> dict[float, float]:
    """Cumulative bucket counts of the publish histogram, summed over label sets."""
    found: dict[float, float] = defaultdict(float)
    for line in text.splitlines():
        match = _BUCKET.match(line)
        if match:
            le = _LE.search(match["labels"])
            if le:
                found[float(le.group(1))] += float(match["value"])
    return dict(found)


def histogram_quantile(before: dict[float, float], after: dict[float, float],
                       q: float) -> tuple[float | None, int]:
    """Upper bound (s) of the bucket holding the q-quantile of the observations between two
    scrapes, and how many there were."""
    bounds = sorted(after)
    if not bounds:
        return None, 0
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0)
    if total <= 0:
        return None, 0
    for bound in bounds:
        if after[bound] - before.get(bound, 0.0) >= q * total:
            return bound, int(total)
    return float("inf"), int(total)


def share_over(before: dict[float, float], after: dict[float, float], bound: float) -> float | None:
    """Per cent of the observations between two scrapes above a bucket bound (s): the margin
    a bucket-bound p99 hides (p99 1 ms is as true at 0.1 % over 1 ms as at 0.99 %)."""
    top = max(after, default=None)
    if top is None or bound not in after:
        return None
    total = after[top] - before.get(top, 0.0)
    if total <= 0:
        return None
    within = after[bound] - before.get(bound, 0.0)
    return round(100 * (total - within) / total, 3)


# --- part 1: one process, many accounts -------------------------------------------------------


@dataclass
class Report:
    figures: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def phase(self, name: str) -> AsyncIterator[None]:
        say(f"phase {name} ...")
        began = time.monotonic()
        try:
            yield
        except (PhaseError, TimeoutError, httpx.HTTPError, OSError, KeyError,
                asyncpg.PostgresError) as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            say(f"phase {name} FAILED: {self.errors[name]}")
        finally:
            self.figures.setdefault("phase_s", {})[name] = round(time.monotonic() - began, 1)


def foreign(arrived: int, emitted: int, previous: int) -> None:
    """Refuse figures when another process writes to (or flushes) this benchmark's Redis DB."""
    if arrived > emitted or arrived < previous:
        raise PhaseError(f"Redis DB {REDIS_URL.rsplit('/', 1)[1]} is used by another process "
                         f"({arrived} entries counted, {emitted} emitted, {previous} before): "
                         "rerun with --redis-db of a free DB")


async def ingest(sim: Sim, redis: Redis, proc: Proc, events: int,
                 inflight: int) -> dict[str, Any]:
    base = await redis_len(redis)
    emitted = arrived = 0
    cpu0 = cpu_s(proc.pid)
    began = time.monotonic()
    last_change, seen = began, 0
    samples: list[tuple[float, int]] = []
    while arrived < events:
        previous, arrived = arrived, await redis_len(redis) - base
        foreign(arrived, emitted, previous)
        now = time.monotonic()
        if arrived != seen:
            seen, last_change = arrived, now
            samples.append((now - began, arrived))
        if now - last_change > 20:
            raise PhaseError(f"ingest stalled: {arrived} of {emitted} emitted events in Redis "
                             f"(simulator: {await sim.streams()})")
        if emitted < events and emitted - arrived < inflight:
            chunk = min(5000, events - emitted, inflight - (emitted - arrived))
            got = await sim.emit(chunk)
            if got != chunk:
                raise PhaseError(f"/sim/bench/emit emitted {got} of {chunk}")
            emitted += chunk
        else:
            await asyncio.sleep(0.005)
    elapsed = time.monotonic() - began
    # steady rate: between 10 % and 90 % of the events (without the ramp and the tail)
    lo = next(s for s in samples if s[1] >= events * 0.1)
    hi = next(s for s in samples if s[1] >= events * 0.9)
    steady = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else None
    return {"events": events, "ingest_s": round(elapsed, 2),
            "ingest_events_per_s": round(events / elapsed),
            "ingest_steady_events_per_s": round(steady) if steady else None,
            "streams_cpu_us_per_event": round((cpu_s(proc.pid) - cpu0) / events * 1e6, 1)}


async def paced(sim: Sim, redis: Redis, proc: Proc, metrics_port: int, seconds: float,
                mine: set[int], rate: int = 1000) -> dict[str, Any]:
    start_ids = {}
    for p in range(PARTITIONS):
        last = await redis.xrevrange(partition_name(p), count=1)
        start_ids[p] = last[0][0].decode() if last else "0-0"
    before = buckets(await scrape(metrics_port))
    base = await redis_len(redis)
    cpu0, sim_cpu0 = cpu_s(proc.pid), cpu_s(sim.proc.pid)
    host0 = cpu_jiffies()
    began = time.perf_counter()
    target = int(seconds * rate)
    await sim.pace(target, rate)
    status = await sim.pace_status()
    while status["running"]:
        await asyncio.sleep(0.2)
        status = await sim.pace_status()
    elapsed = time.perf_counter() - began
    host_steal = steal_pct(host0, cpu_jiffies())
    if status["emitted"] != target:
        raise PhaseError(f"the simulator paced {status['emitted']} of {target} events")
    achieved = target / status["elapsed_s"]
    cpu_pct = (cpu_s(proc.pid) - cpu0) / elapsed * 100
    sim_cpu_pct = (cpu_s(sim.proc.pid) - sim_cpu0) / elapsed * 100
    deadline = time.monotonic() + 30
    while (arrived := await redis_len(redis) - base) < target:
        foreign(arrived, target, 0)
        if time.monotonic() > deadline:
            raise PhaseError(f"paced: only {await redis_len(redis) - base} of {target} "
                             "events reached Redis")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    after = buckets(await scrape(metrics_port))
    p99, count = histogram_quantile(before, after, 0.99)
    p50, _ = histogram_quantile(before, after, 0.50)
    socket_lat: list[float] = []
    exchange_lat: list[float] = []
    for p in range(PARTITIONS):
        for entry_id, fields in await redis.xrange(partition_name(p), min=f"({start_ids[p]}"):
            redis_ms = int(entry_id.decode().split("-")[0])
            body = json.loads(fields[b"body"])
            if body["account_id"] not in mine:
                raise PhaseError("an entry of another process in this benchmark's Redis DB")
            socket_lat.append(redis_ms - body["received_ms"])
            exchange_lat.append(redis_ms - body["event"]["E"])
    if p99 == float("inf"):  # beyond the last finite bucket: no number (JSON has no inf)
        p99 = None
        top = max((b for b in after if b != float("inf")), default=0.0)
        out_note = f"p99 above the histogram's last finite bucket ({top * 1000:g} ms)"
    else:
        out_note = "" if p99 is not None else (f"{HISTOGRAM} not exposed by this streams "
                                                "process (or no observations)")
    out: dict[str, Any] = {
        "paced_events": target, "paced_rate": round(achieved),
        "paced_source_late_max_ms": status["late_max_ms"],
        "paced_source_turns": status.get("turns"),
        "simulator_cpu_pct_paced": round(sim_cpu_pct, 1),
        "streams_cpu_pct_paced": round(cpu_pct, 1),
        "host_steal_pct_paced": host_steal,
        "publish_histogram_count": count,
        "publish_p50_ms": None if p50 in (None, float("inf")) else round(p50 * 1000, 3),
        "publish_p99_ms": None if p99 is None else round(p99 * 1000, 3),
        "publish_over_0.5ms_pct": share_over(before, after, 0.0005),
        "publish_over_1ms_pct": share_over(before, after, 0.001),
        "redis_minus_received_p50_ms": pct(socket_lat, 0.5),
        "redis_minus_received_p99_ms": pct(socket_lat, 0.99),
        "redis_minus_exchange_p99_ms": pct(exchange_lat, 0.99),
    }
    if out_note:
        out["publish_note"] = out_note
    return out


def keepalive_figures(calls: list[dict[str, Any]], api_keys: set[str], t0_ms: float,
                      t1_ms: float, interval_s: float) -> dict[str, Any]:
    """Peak PUTs in any sliding scaled window / the even rate's count, and per-account gaps."""
    window_ms = REAL_WINDOW_S * interval_s / REAL_KEEPALIVE_S * 1000
    puts = sorted(c["mono_ms"] for c in calls
                  if c["method"] == "PUT" and c["ok"] and c["api_key"] in api_keys
                  and t0_ms <= c["mono_ms"] < t1_ms)
    even = len(api_keys) * window_ms / (interval_s * 1000)
    peak = 0
    for i, t in enumerate(puts):  # windows starting at each PUT hold every maximum
        peak = max(peak, bisect.bisect_left(puts, t + window_ms) - i)
    extensions: dict[str, list[float]] = defaultdict(list)
    for c in calls:
        if c["ok"] and c["method"] in ("POST", "PUT") and c["api_key"] in api_keys \
                and c["mono_ms"] < t1_ms:
            extensions[c["api_key"]].append(c["mono_ms"])
    worst_gap = 0.0
    for key in api_keys:
        times = [*sorted(extensions.get(key, [])), t1_ms]
        gaps = [b - a for a, b in itertools.pairwise(times) if b > t0_ms]
        worst_gap = max(worst_gap, *gaps) if gaps else worst_gap
    failed = sum(1 for c in calls if c["method"] == "PUT" and not c["ok"]
                 and t0_ms <= c["mono_ms"] < t1_ms)
    span_s = (t1_ms - t0_ms) / 1000
    series = [0] * max(1, int((t1_ms - t0_ms) // window_ms) + 1)
    for t in puts:  # PUTs per fixed scaled window from t0 (diagnostics)
        series[int((t - t0_ms) // window_ms)] += 1
    half = t0_ms + interval_s * 1000  # the second interval: steady state after the cold start
    late = [t for t in puts if t >= half]
    late_peak = max((bisect.bisect_left(late, t + window_ms) - i for i, t in enumerate(late)),
                    default=0)
    return {
        "keepalive_peak_ratio_second_interval": round(late_peak / even, 2) if late else None,
        "keepalive_series_per_window": series,
        "keepalive_interval_s": interval_s, "keepalive_window_s": round(window_ms / 1000, 3),
        "keepalive_span_s": round(span_s, 1), "keepalive_puts": len(puts),
        "keepalive_puts_expected": round(len(api_keys) * span_s / interval_s),
        "keepalive_even_per_window": round(even, 2), "keepalive_peak_per_window": peak,
        "keepalive_peak_ratio": round(peak / even, 2) if puts else None,
        "keepalive_max_gap_ratio": round(worst_gap / (interval_s * 1000), 3),
        "keepalive_failed_puts": failed,
    }


async def part_one(args: argparse.Namespace, procs: Processes, tmp: Path,
                   report: Report) -> None:
    n = args.accounts
    key = os.urandom(32)
    figures = report.figures
    redis = Redis.from_url(REDIS_URL)
    scale = REAL_KEEPALIVE_S / args.keepalive_s  # time runs this much faster for keepalives
    ip_weight = round(REAL_IP_WEIGHT * scale)  # so the PUTs keep their real share of it
    figures["ip_weight_per_minute"] = ip_weight
    sim = await Sim.start(procs, "simulator-1", ip_weight)
    try:
        async with fresh_database(procs) as db_url:
            # process A: production keepalive interval (a-c, b); process B: time-scaled
            # keepalives (d). Both spend the scaled IP weight, so start-up takes ~16 s, not 125.
            env = role_env(db_url, sim, key, tmp, TRADEWIRE_IP_WEIGHT_PER_MINUTE=str(ip_weight))
            proc, metrics_port = await start_streams(procs, "streams-1", env)
            account_ids: set[int] = set()
            api_keys: set[str] = set()
            async with report.phase("memory"):
                await asyncio.sleep(args.idle_s)
                empty = rss_kb(proc.pid)
                say(f"streams RSS with 0 accounts: {empty} kB; seeding {n} accounts")
                seeded = await seed_accounts(sim, db_url, key, n)
                api_keys = {a.api_key for a in seeded}
                account_ids = {a.account_id for a in seeded}
                began = time.monotonic()
                figures["startup_all_listening_s"] = round(await wait_listening(
                    sim, n, args.listen_timeout_s, [proc], f"{n} accounts listening"), 1)
                figures["startup_settle_s"], figures["streams_cpu_pct_after_listening"] = (
                    await settle(proc, args.settle_max_s))
                cpu0 = cpu_s(proc.pid)
                await asyncio.sleep(args.idle_s)
                full = rss_kb(proc.pid)
                figures["streams_cpu_pct_listening_idle"] = round(
                    (cpu_s(proc.pid) - cpu0) / args.idle_s * 100, 1)
                stats = await sim.streams()
                figures.update({
                    "rss_empty_kb": empty, "rss_listening_kb": full,
                    "kb_per_account": round((full - empty) / n, 2),
                    "connections": stats["connections"],
                    "connection_attempts": stats["connection_attempts"],
                    "connections_refused": stats["connections_refused"],
                })
                say(f"{n} listening after {time.monotonic() - began:.1f} s over "
                    f"{stats['connections']} sockets; RSS {full} kB")
            if not account_ids:
                raise PhaseError("no account seeded: phases b-d skipped")
            async with report.phase("publish"):
                figures.update(await host_stalls(args.stall_probe_s))
                figures.update(await paced(sim, redis, proc, metrics_port, args.paced_s,
                                            account_ids))
            async with report.phase("ingest"):
                figures.update(await ingest(sim, redis, proc, args.events, args.inflight))
                figures["rss_after_ingest_kb"] = rss_kb(proc.pid)
            await procs.stop(proc)
            async with report.phase("keepalive"):
                figures.update(await keepalive_phase(args, procs, sim, redis, env, scale,
                                                     api_keys, account_ids))
    finally:
        await redis.aclose()
        await sim.close()
        await procs.stop(sim.proc)


async def settle(proc: Proc, max_s: float) -> tuple[float, list[float]]:
    """The work right after start-up (reconciling every new stream, first metrics) settles
    before the steady-state figures: until the process uses < 20 % CPU over 1 s."""
    began, busy = time.monotonic(), []
    while time.monotonic() - began < max_s:
        cpu0 = cpu_s(proc.pid)
        await asyncio.sleep(1)
        busy.append(round((cpu_s(proc.pid) - cpu0) * 100, 1))
        if busy[-1] < 20:
            break
    return round(time.monotonic() - began, 1), busy


async def keepalive_phase(args: argparse.Namespace, procs: Processes, sim: Sim, redis: Redis,
                          env: dict[str, str], scale: float, api_keys: set[str],
                          account_ids: set[int]) -> dict[str, Any]:
    """Process B (time-scaled keepalives) takes over the same accounts: the PUT spread over
    two scaled intervals, and the publish latency once more under this 10x keepalive load."""
    n = len(api_keys)
    proc, metrics_port = await start_streams(procs, "streams-2", {
        **env, "TRADEWIRE_KEEPALIVE_INTERVAL_S": str(args.keepalive_s),
        "TRADEWIRE_KEEPALIVE_MAX_PER_S": str(REAL_KEEPALIVE_CAP * scale)})
    started = (await sim.listen_key_calls())[-1:]
    since_seq = started[0]["seq"] + 1 if started else 0
    await wait_restreamed(sim, api_keys, since_seq, args.listen_timeout_s, proc)
    t0_ms = time.monotonic() * 1000
    t1_ms = t0_ms + 2 * args.keepalive_s * 1000
    out: dict[str, Any] = {}
    await settle(proc, args.settle_max_s)
    # order: the light paced load inside the span (a busy simulator answers PUTs in clumps)
    loaded = await paced(sim, redis, proc, metrics_port, args.paced_s, account_ids)
    out["publish_p99_ms_keepalive_x10"] = loaded["publish_p99_ms"]
    out["publish_p50_ms_keepalive_x10"] = loaded["publish_p50_ms"]
    out["publish_over_1ms_pct_keepalive_x10"] = loaded["publish_over_1ms_pct"]
    remaining = t1_ms / 1000 - time.monotonic()
    if remaining > 0:
        say(f"keepalive: {remaining:.0f} s more of the two scaled intervals")
        while time.monotonic() * 1000 < t1_ms:
            if not proc.alive:
                raise PhaseError(f"streams exited:\n{proc.tail()}")
            await asyncio.sleep(1)
    calls = await sim.listen_key_calls()
    out.update(keepalive_figures(calls, api_keys, t0_ms, t1_ms, args.keepalive_s))
    out["listening_at_end"] = (await sim.streams())["listening"]
    if out["listening_at_end"] < n:
        raise PhaseError(f"only {out['listening_at_end']} of {n} accounts listening at the end")
    await procs.stop(proc)
    return out


async def wait_restreamed(sim: Sim, api_keys: set[str], since_seq: int, timeout_s: float,
                          proc: Proc) -> None:
    """Until the new process holds a fresh listenKey (a POST after ``since_seq``) for every
    account and the simulator shows them all listening."""
    deadline = time.monotonic() + timeout_s
    keyed: set[str] = set()
    seq = since_seq
    while True:
        body = (await sim.http.get("/sim/stats/listen-keys",
                                   params={"since": seq, "limit": 50_000})).json()
        for row in body["calls"]:
            call = dict(zip(body["fields"], row, strict=True))
            if call["method"] == "POST" and call["ok"] and call["api_key"] in api_keys:
                keyed.add(call["api_key"])
        seq = body["next"]
        if len(keyed) == len(api_keys) and (await sim.streams())["listening"] >= len(api_keys):
            return
        if not proc.alive:
            raise PhaseError(f"{proc.name} exited while taking over:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise PhaseError(f"process B keyed {len(keyed)} of {len(api_keys)} accounts in "
                             f"{timeout_s:g} s")
        await asyncio.sleep(0.5)


# --- part 2: two pods, SIGKILL and a rolling restart -----------------------------------------


class Trades:
    """Opens trades through the product's ``Executor`` and counts their outcomes."""

    def __init__(self, sim: Sim, db_url: str, key: bytes) -> None:
        self.engine, sessions = create_engine_and_sessions(db_url)
        self.http = httpx.AsyncClient(timeout=60, headers={"X-Sim-Client-Ip": BENCH_IP},
                                      limits=httpx.Limits(max_connections=64))
        self.executor = Executor(sessions, SecretBox(key), ClientPool(sim.url, self.http))
        self.db = pg_conn_args(db_url)
        self.failures: dict[int, str | None] = {}

    async def open(self, signal_id: str, users: list[Account], stop_loss: Decimal,
                   per_signal: int = 50) -> list[Account]:
        """Open one LONG per account, ``per_signal`` accounts per signal (one signal after the
        other); the accounts whose placement succeeded (a failed one is counted in
        ``failures`` and left out of the phase)."""
        placed: list[Account] = []
        for at in range(0, len(users), per_signal):
            placed += await self._open(f"{signal_id}-{at // per_signal}",
                                       users[at:at + per_signal], stop_loss)
        return placed

    async def _open(self, signal_id: str, users: list[Account],
                    stop_loss: Decimal) -> list[Account]:
        signal_ = Signal(signal_id=signal_id, symbol=SYMBOL, side=Side.LONG,
                         stop_loss=stop_loss, targets=(Target(Decimal(63000), Decimal(1)),),
                         leverage=5, size_usdt=Decimal(200),
                         user_ids=tuple(a.user_id for a in users))
        report = await self.executor.execute(signal_, {"signal_id": signal_id})
        bad = {o.account_id: o.error for o in report.outcomes if o.error}
        self.failures.update(bad)
        if len(bad) > len(users) // 2:
            raise PhaseError(f"{len(bad)} of {len(users)} placements failed, e.g. "
                             f"{next(iter(bad.values()))}")
        return [a for a in users if a.account_id not in bad]

    async def count(self, signal_ids: list[str], where: str) -> int:
        conn = await asyncpg.connect(**self.db)
        try:
            value = await conn.fetchval(  # the signals ``open`` made for each id
                f"SELECT count(*) FROM trades WHERE signal_id LIKE ANY($1) AND {where}",
                [f"{sid}-%" for sid in signal_ids])
            return int(value)
        finally:
            await conn.close()

    async def wait(self, signal_ids: list[str], where: str, n: int, timeout_s: float,
                   what: str) -> float:
        began = time.monotonic()
        while True:
            found = await self.count(signal_ids, where)
            if found >= n:
                return time.monotonic() - began
            if time.monotonic() - began > timeout_s:
                raise PhaseError(f"{what}: {found} of {n} after {timeout_s:g} s")
            await asyncio.sleep(0.25)

    async def closed_by_stop(self, signal_ids: list[str]) -> int:
        return await self.count(signal_ids, "status = 'CLOSED' AND close_reason = 'STOP_LOSS'")

    async def close(self) -> None:
        await self.http.aclose()
        await self.engine.dispose()


async def lease_holders(redis: Redis) -> dict[str, int]:
    """Shards held per pod (``ws-streams:lease:<shard>`` = ``<member>:<epoch>``); empty when the
    streams role keeps no leases."""
    held: dict[str, int] = defaultdict(int)
    keys = [k async for k in redis.scan_iter(match="ws-streams:lease:*", count=1000)]
    keys = [k for k in keys if not k.endswith(b":epoch")]
    if keys:
        for value in await redis.mget(keys):
            if value:
                held[value.decode().rsplit(":", 1)[0]] += 1
    return dict(held)


async def wait_holds(redis: Redis, member: str, proc: Proc, timeout_s: float) -> float | None:
    """Seconds until ``member`` holds at least one shard (None: no leases in this build)."""
    began = time.monotonic()
    while True:
        held = await lease_holders(redis)
        if held.get(member, 0) > 0:
            return time.monotonic() - began
        if not held and time.monotonic() - began > 10:
            return None
        if not proc.alive:
            raise PhaseError(f"{proc.name} exited:\n{proc.tail()}")
        if time.monotonic() - began > timeout_s:
            raise PhaseError(f"{member} holds no shard after {timeout_s:g} s (leases: {held})")
        await asyncio.sleep(0.2)


async def next_weight_window(sim: Sim) -> None:
    """Wait for the simulator's next one-minute REST-weight window after the last listenKey
    POST (the setup's burst), so a failover starts from steady-state weight use."""
    calls = await sim.listen_key_calls()
    posts = [c["sim_ms"] for c in calls if c["method"] == "POST"]
    if not posts:
        return
    window_end = (max(posts) // 60_000 + 1) * 60_000
    wait_s = window_end / 1000 - time.time()
    if wait_s > 0:
        say(f"waiting {wait_s:.0f} s for the next REST-weight minute")
        await asyncio.sleep(wait_s + 0.2)


class ListeningWatch:
    """Samples the simulator's ``listening`` count every 0.1 s (its minimum over a phase)."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.minimum: int | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                n = (await self.sim.streams())["listening"]
                self.minimum = n if self.minimum is None else min(self.minimum, n)
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def part_two(args: argparse.Namespace, procs: Processes, tmp: Path,
                   report: Report) -> None:
    n = args.failover_accounts
    per = args.trades
    key = os.urandom(32)
    figures = report.figures
    await flush_redis()
    redis = Redis.from_url(REDIS_URL)
    sim = await Sim.start(procs, "simulator-2")
    trades: Trades | None = None
    try:
        async with fresh_database(procs) as db_url:
            env = role_env(db_url, sim, key, tmp)
            accounts = await seed_accounts(sim, db_url, key, n)
            worker = await procs.start("worker", ["worker"],
                                       {**env, "TRADEWIRE_WORKER_NAME": "bench-worker"})
            began = time.monotonic()
            pods = {name: (await start_streams(procs, name, env))[0]
                    for name in ("pod-a", "pod-b")}
            await wait_listening(sim, n, args.listen_timeout_s, [*pods.values(), worker],
                                 f"{n} accounts listening on two pods")
            figures["pods_all_listening_s"] = round(time.monotonic() - began, 1)
            figures["shards_held"] = await lease_holders(redis)
            trades = Trades(sim, db_url, key)
            fail_ids = [f"bench-failover-{uuid.uuid4().hex[:8]}"]
            async with report.phase("failover"):
                group = await trades.open(fail_ids[0], accounts[:per], Decimal(59000))
                figures["failover_trades"] = len(group)
                await trades.wait(fail_ids, "status = 'ACTIVE'", len(group), 120,
                                  "trades with their entry fill recorded")
                await next_weight_window(sim)
                pod_a = pods["pod-a"]
                pod_a.proc.kill()  # SIGKILL
                killed = time.monotonic()
                await sim.mark(Decimal(58900))  # below every stop-loss: all of them fill now
                figures["failover_sl_move_ms"] = round((time.monotonic() - killed) * 1000, 1)
                await pod_a.proc.wait()
                lowest = n
                while time.monotonic() - killed < 5:  # the kill shows at the exchange
                    lowest = min(lowest, (await sim.streams())["listening"])
                    if lowest < n:
                        break
                    await asyncio.sleep(0.01)
                if lowest < n:
                    watch = ListeningWatch(sim)  # the lowest count over the whole gap
                    try:
                        await wait_listening(sim, n, args.failover_timeout_s, [pods["pod-b"]],
                                             "failover")
                    finally:
                        await watch.stop()
                    figures["failover_s"] = round(time.monotonic() - killed, 2)
                    lowest = min(lowest, n if watch.minimum is None else watch.minimum)
                else:
                    figures["failover_s"] = 0.0
                    report.notes.append("failover: every account stayed listening after the "
                                        "kill (pod-a held no account alone)")
                figures["failover_listening_low"] = lowest
                made = await sim.flat([a.api_key for a in group])
                figures["failover_fills"] = made
                with contextlib.suppress(PhaseError):
                    await trades.wait(fail_ids, "status = 'CLOSED'", made, args.settle_s,
                                      "failover fills recorded")
                recorded = await trades.closed_by_stop(fail_ids)
                figures["failover_fills_recorded"] = recorded
                figures["failover_recorded_s"] = round(time.monotonic() - killed, 1)
                figures["lost_fills"] = made - recorded
            async with report.phase("rolling"):
                await sim.mark(START_PRICE)
                if not pods["pod-a"].alive:  # killed in e (else e failed before the kill)
                    pods["pod-a"] = (await start_streams(procs, "pod-a", env))[0]
                await wait_holds(redis, "pod-a", pods["pod-a"], args.failover_timeout_s)
                await wait_listening(sim, n, args.failover_timeout_s, list(pods.values()),
                                     "pod-a back")
                groups = [accounts[per + i * per // 4: per + (i + 1) * per // 4]
                          for i in range(4)]
                stops = [Decimal(59800), Decimal(59600), Decimal(59400), Decimal(59200)]
                roll_ids = [f"bench-rolling-{i}-{uuid.uuid4().hex[:8]}" for i in range(4)]
                groups = [await trades.open(sid, grp, sl)
                          for sid, grp, sl in zip(roll_ids, groups, stops, strict=True)]
                figures["rolling_trades"] = sum(map(len, groups))
                await trades.wait(roll_ids, "status = 'ACTIVE'", sum(map(len, groups)), 120,
                                  "rolling trades with their entry fill recorded")
                watch = ListeningWatch(sim)
                began = time.monotonic()
                step = iter(stops)
                restart: dict[str, float | None] = {}
                try:
                    for name in ("pod-a", "pod-b"):
                        stopping = asyncio.create_task(
                            procs.stop(pods[name], args.stop_timeout_s))
                        await asyncio.sleep(0.2)
                        await sim.mark(next(step) - 50)  # a group's stop-losses fill mid-handover
                        figures[f"rolling_{name}_stop_s"] = round(await stopping, 2)
                        pods[name] = (await start_streams(procs, name, env))[0]
                        await sim.mark(next(step) - 50)  # another while it starts
                        restart[name] = await wait_holds(redis, name, pods[name],
                                                         args.failover_timeout_s)
                        await wait_listening(sim, n, args.failover_timeout_s,
                                             list(pods.values()), f"{name} restarted")
                        figures[f"rolling_{name}_back_s"] = round(time.monotonic() - began, 1)
                finally:
                    await watch.stop()
                figures["rolling_s"] = round(time.monotonic() - began, 1)
                figures["rolling_min_listening"] = watch.minimum
                made = await sim.flat([a.api_key for grp in groups for a in grp])
                figures["rolling_fills"] = made
                with contextlib.suppress(PhaseError):
                    await trades.wait(roll_ids, "status = 'CLOSED'", made, args.settle_s,
                                      "rolling fills recorded")
                recorded = await trades.closed_by_stop(roll_ids)
                figures["rolling_fills_recorded"] = recorded
                figures["rolling_restart_lost_fills"] = made - recorded
                if any(v is None for v in restart.values()):
                    report.notes.append("rolling: no shard leases in Redis; waited for every "
                                        "account listening only")
            figures["shards_held_at_end"] = await lease_holders(redis)
            if trades.failures:
                figures["placement_failures"] = len(trades.failures)
                report.notes.append(f"{len(trades.failures)} trade placements failed and were "
                                    f"left out, e.g. {next(iter(trades.failures.values()))}")
            if trades is not None:
                await trades.close()
                trades = None
            for proc in [*pods.values(), worker]:
                await procs.stop(proc)
    finally:
        if trades is not None:
            await trades.close()
        await redis.aclose()
        await sim.close()
        await procs.stop(sim.proc)


SUMMARY = ("accounts", "kb_per_account", "ingest_events_per_s", "publish_p99_ms",
           "keepalive_peak_ratio", "failover_s", "lost_fills", "rolling_restart_lost_fills")


async def main(args: argparse.Namespace) -> tuple[dict[str, Any], Report]:
    logdir = Path(tempfile.mkdtemp(prefix="tw-bench-streams-"))
    say(f"logs in {logdir}")
    procs = Processes(logdir)
    report = Report()
    report.figures["accounts"] = args.accounts
    report.figures["failover_accounts"] = args.failover_accounts
    began = time.monotonic()
    try:
        await flush_redis()
        if "1" in args.parts:
            try:
                await part_one(args, procs, logdir, report)
            except Exception as exc:
                report.errors["part1"] = f"{type(exc).__name__}: {exc}"
                say(f"part 1 FAILED: {report.errors['part1']}")
        if "2" in args.parts:
            try:
                await part_two(args, procs, logdir, report)
            except Exception as exc:
                report.errors["part2"] = f"{type(exc).__name__}: {exc}"
                say(f"part 2 FAILED: {report.errors['part2']}")
    finally:
        await procs.stop_all()
        with contextlib.suppress(Exception):
            await flush_redis()
    report.figures["bench_s"] = round(time.monotonic() - began, 1)
    report.figures["logs"] = str(logdir)
    summary = {k: report.figures.get(k) for k in SUMMARY}
    return summary, report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--events", type=int, default=200_000, help="ingest burst")
    parser.add_argument("--inflight", type=int, default=20_000,
                        help="events emitted and not yet in Redis, at most")
    parser.add_argument("--paced-s", type=float, default=10.0)
    parser.add_argument("--stall-probe-s", type=float, default=5.0,
                        help="the machine's own stalls, measured before the publish phase")
    parser.add_argument("--keepalive-s", type=float, default=180.0,
                        help="scaled keepalive interval (production: 1800)")
    parser.add_argument("--idle-s", type=float, default=5.0, help="idle time before RSS reads")
    parser.add_argument("--settle-max-s", type=float, default=90.0,
                        help="after every account listens, wait (at most this long) until "
                             "the process uses < 20 %% CPU over 1 s")
    parser.add_argument("--listen-timeout-s", type=float, default=420.0)
    parser.add_argument("--failover-accounts", type=int, default=2000)
    parser.add_argument("--trades", type=int, default=200, help="open trades per phase e/f")
    parser.add_argument("--failover-timeout-s", type=float, default=120.0)
    parser.add_argument("--stop-timeout-s", type=float, default=100.0,
                        help="SIGTERM -> SIGKILL; a pod drains up to handoff_timeout_s (15) + "
                             "60 s per started 2,400 accounts")
    parser.add_argument("--settle-s", type=float, default=60.0)
    parser.add_argument("--parts", default="12", help="'1', '2' or '12'")
    parser.add_argument("--redis-db", type=int, default=3,
                        help="a Redis DB nothing else uses (flushed at start and end)")
    cli = parser.parse_args()
    REDIS_URL = f"redis://{HOST}:6379/{cli.redis_db}"
    result, rep = asyncio.run(main(cli))
    for name, value in rep.figures.items():
        if not isinstance(value, list):  # series: in the results file
            sys.stderr.write(f"  {name:<34} {value}\n")
    for name, error in rep.errors.items():
        sys.stderr.write(f"  ERROR {name}: {error}\n")
    for note in rep.notes:
        sys.stderr.write(f"  note: {note}\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "streams.json").write_text(json.dumps(
        {"summary": result, "figures": rep.figures, "errors": rep.errors, "notes": rep.notes,
         "args": vars(cli)}, indent=2) + "\n")
    print(json.dumps(result))
    sys.exit(1 if rep.errors else 0)
