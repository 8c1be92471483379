"""Simulator benchmark: signed order requests/s, and user-data events/s over >= 5,000 listenKeys.

Starts ``tradewire simulator`` in its own process and drives it from this one:

- orders: accounts spread over several loopback source addresses (the simulator limits request
  weight per client IP, like the exchange per egress IP), each account alternating MARKET BUY /
  SELL with now and then a resting LIMIT and its cancel, over persistent HTTP/1.1 connections,
  for ``--seconds``. Every request waits for the account's order budget and its IP's weight
  budget (``tradewire.exchange.budget``), so nothing is refused for rate limits.
- events: ``--keys`` accounts and listenKeys, ``/private/stream`` connections SUBSCRIBEd to up to
  1000 keys each (200 per message, 4 messages/s), then events from ``POST /sim/bench/emit``
  when the simulator has it, else from REST MARKET orders round-robin over the accounts; events
  received per second on this side.
- client path: the same MARKET orders through ``ExchangeClient`` over httpx, to show what the
  production client costs per request.

The load generator is a minimal keep-alive HTTP/1.1 client signing exactly as ``ExchangeClient``
does: httpx spends about twice the simulator's CPU per request, so on 2 cores it could not load
the simulator. CPU seconds per request of both processes are reported next to the rates.
Prints a table to stderr, writes bench/results/sim.json; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from tradewire.clock import SystemClock
from tradewire.exchange.budget import BudgetConfig, RateBudget, ip_budget, order_budget
from tradewire.exchange.signing import signed_query
from tradewire.trading.clients import ClientPool

RESULTS = Path(__file__).parent / "results"
HOST = "127.0.0.1"
CLOCK = SystemClock()
BUDGET = BudgetConfig()
KEYS_PER_SOCKET = 1000
PARAMS_PER_SUBSCRIBE = 200


class Http1:
    """One keep-alive HTTP/1.1 connection from ``source``; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = HOST) -> Http1:
        reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, method: str, target: str, api_key: str = "",
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        key = f"X-MBX-APIKEY: {api_key}\r\n" if api_key else ""
        self.writer.write(f"{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n{key}"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                          .encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0][9:12]), headers, payload

    def close(self) -> None:
        self.writer.close()


@dataclass
class Account:
    key: str
    secret: str
    orders: RateBudget
    steps: int = 0


@dataclass
class Egress:
    """One source address: its weight budget, connections and accounts."""

    ip: str
    budget: RateBudget
    conns: list[Http1] = field(default_factory=list)
    accounts: list[Account] = field(default_factory=list)


@dataclass
class Stats:
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)


async def signed(conn: Http1, egress: Egress, account: Account, method: str, path: str,
                 params: dict[str, Any], *, orders: bool, weight: int) -> tuple[int, bytes]:
    if orders:
        await account.orders.acquire((1, 1))
    await egress.budget.acquire((weight,))
    sent_at = CLOCK.now_ms()
    query = signed_query(params, secret=account.secret, timestamp_ms=sent_at, recv_window_ms=5000)
    status, headers, body = await conn.request(method, f"{path}?{query}", account.key)
    used = headers.get("x-mbx-used-weight-1m")
    if used is not None:
        egress.budget.resync((int(used),), sent_at)
    return status, body


CYCLE = ("BUY", "SELL", "BUY", "SELL", "LIMIT", "CANCEL")


async def trade_step(conn: Http1, egress: Egress, account: Account, stats: Stats,
                     cycle: tuple[str, ...]) -> None:
    step = cycle[account.steps % len(cycle)]
    account.steps += 1
    cid = f"b{account.steps}"
    if step == "CANCEL":
        params: dict[str, Any] = {"symbol": "BTCUSDT", "origClientOrderId": f"b{account.steps - 1}"}
        status, body = await signed(conn, egress, account, "DELETE", "/fapi/v1/order", params,
                                    orders=False, weight=1)
    else:
        params = {"symbol": "BTCUSDT", "side": "BUY" if step == "LIMIT" else step,
                  "type": "LIMIT" if step == "LIMIT" else "MARKET", "quantity": Decimal("0.001"),
                  "newClientOrderId": cid}
        if step == "LIMIT":
            params.update(timeInForce="GTC", price=Decimal("59000"))
        status, body = await signed(conn, egress, account, "POST", "/fapi/v1/order", params,
                                    orders=True, weight=0)
    kind = "cancel" if step == "CANCEL" else "order"
    if status == 200:
        stats.ok[kind] += 1
    else:
        stats.failed[f"{kind} {status} {json.loads(body).get('code')}"] += 1


async def trade_loop(conn: Http1, egress: Egress, accounts: list[Account], stats: Stats,
                     deadline: float, cycle: tuple[str, ...] = CYCLE) -> None:
    i = 0
    while time.perf_counter() < deadline:
        await trade_step(conn, egress, accounts[i % len(accounts)], stats, cycle)
        i += 1


# --- setup ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def simulator() -> AsyncIterator[tuple[int, int]]:
    """``tradewire simulator`` on a free port in its own process; (port, pid)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tradewire.cli.main", "simulator", "--port", str(port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TRADEWIRE_LOG_LEVEL": "WARNING"})
    try:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as http:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    await http.post("/sim/mark-price", json={"symbol": "BTCUSDT", "price": "60000"})
                    break
                await asyncio.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def cpu_s(pid: int | None = None) -> float:
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def egresses(port: int, n_ips: int, conns_per_ip: int) -> list[Egress]:
    out = []
    for i in range(n_ips):
        egress = Egress(f"127.0.0.{i + 2}", ip_budget(BUDGET, CLOCK))
        egress.conns = [await Http1.open(port, egress.ip) for _ in range(conns_per_ip)]
        out.append(egress)
    return out


async def new_accounts(port: int, n: int, conns: int = 16) -> list[Account]:
    async def make(share: int) -> list[Account]:
        conn, made = await Http1.open(port), []
        for _ in range(share):
            _, _, body = await conn.request("POST", "/sim/accounts", body=b"{}")
            creds = json.loads(body)
            made.append(Account(creds["api_key"], creds["api_secret"], order_budget(BUDGET, CLOCK)))
        conn.close()
        return made

    shares = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    return [a for part in await asyncio.gather(*(make(s) for s in shares)) for a in part]


def deal(accounts: list[Account], egress_list: list[Egress]) -> Iterator[tuple[Http1, Egress,
                                                                              list[Account]]]:
    """Each account to one IP and one of its connections (its steps stay in order)."""
    for i, account in enumerate(accounts):
        egress_list[i % len(egress_list)].accounts.append(account)
    for egress in egress_list:
        for c, conn in enumerate(egress.conns):
            mine = egress.accounts[c::len(egress.conns)]
            if mine:
                yield conn, egress, mine


# --- (a) orders -------------------------------------------------------------------------------


async def bench_orders(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    egress_list = await egresses(port, args.ips, args.conns)
    accounts = await new_accounts(port, args.accounts)
    stats = Stats()
    cpu = cpu_s(pid), cpu_s()
    started = time.perf_counter()
    deadline = started + args.seconds
    await asyncio.gather(*(trade_loop(conn, egress, mine, stats, deadline)
                           for conn, egress, mine in deal(accounts, egress_list)))
    elapsed = time.perf_counter() - started
    done = sum(stats.ok.values())
    for egress in egress_list:
        for conn in egress.conns:
            conn.close()
    return {"orders_per_s": round(done / elapsed, 1), "placements": stats.ok["order"],
            "cancels": stats.ok["cancel"], "failed": dict(stats.failed), "accounts": len(accounts),
            "source_ips": len(egress_list), "connections": len(egress_list) * args.conns,
            **cpu_per_request(pid, cpu, done + sum(stats.failed.values()))}


def cpu_per_request(pid: int, before: tuple[float, float], requests: int,
                    unit: str = "req") -> dict[str, float]:
    """CPU microseconds of the simulator and of this process per request (or event)."""
    server, client = cpu_s(pid) - before[0], cpu_s() - before[1]
    n = max(1, requests)
    return {f"server_cpu_us_per_{unit}": round(server / n * 1e6),
            f"client_cpu_us_per_{unit}": round(client / n * 1e6)}


# --- (b) events -------------------------------------------------------------------------------


@dataclass
class Tally:
    count: int = 0
    last: float = 0.0


async def listen_keys(egress_list: list[Egress]) -> list[str]:
    async def start(conn: Http1, egress: Egress, mine: list[Account]) -> list[str]:
        keys = []
        for account in mine:
            await egress.budget.acquire((1,))
            status, _, body = await conn.request("POST", "/fapi/v1/listenKey", account.key)
            assert status == 200, body
            keys.append(json.loads(body)["listenKey"])
        return keys

    parts = [(e.conns[0], e, e.accounts) for e in egress_list]
    return [k for keys in await asyncio.gather(*(start(*p) for p in parts)) for k in keys]


async def subscribe(ws: ClientConnection, keys: list[str], first_id: int) -> None:
    """SUBSCRIBE in messages of 200 keys, 4 messages/s (the limit is 10 incoming msgs/s)."""
    for n, at in enumerate(range(0, len(keys), PARAMS_PER_SUBSCRIBE)):
        params = keys[at:at + PARAMS_PER_SUBSCRIBE]
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": params, "id": first_id + n}))
        reply = json.loads(await ws.recv())
        assert reply.get("id") == first_id + n and "code" not in reply, reply
        await asyncio.sleep(0.25)


async def receive(ws: ClientConnection, tally: Tally) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            tally.count += 1
            tally.last = time.perf_counter()


async def emit_supported(port: int) -> bool:
    conn = await Http1.open(port)
    status, _, _ = await conn.request("POST", "/sim/bench/emit", body=b'{"count": 0}')
    conn.close()
    return status == 200


async def generate(port: int, egress_list: list[Egress], seconds: float,
                   via_emit: bool) -> int:
    """Events from the admin bulk endpoint, else MARKET orders; REST requests sent."""
    deadline = time.perf_counter() + seconds
    if via_emit:
        conn, sent = await Http1.open(port), 0
        while time.perf_counter() < deadline:
            await conn.request("POST", "/sim/bench/emit", body=b'{"count": 1000}')
            sent += 1
        conn.close()
        return sent
    stats = Stats()
    accounts = [a for e in egress_list for a in e.accounts]
    for egress in egress_list:
        egress.accounts.clear()
    await asyncio.gather(*(trade_loop(conn, egress, mine, stats, deadline, ("BUY", "SELL"))
                           for conn, egress, mine in deal(accounts, egress_list)))
    return sum(stats.ok.values()) + sum(stats.failed.values())


async def bench_events(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    egress_list = await egresses(port, args.ips, args.conns)
    accounts = await new_accounts(port, args.keys)
    for i, account in enumerate(accounts):
        egress_list[i % len(egress_list)].accounts.append(account)
    keys = await listen_keys(egress_list)
    url = f"ws://{HOST}:{port}/private/stream"
    chunks = [keys[i:i + KEYS_PER_SOCKET] for i in range(0, len(keys), KEYS_PER_SOCKET)]
    sockets = [await connect(url, compression=None, max_size=None) for _ in chunks]
    await asyncio.gather(*(subscribe(ws, chunk, 1 + 100 * n)
                           for n, (ws, chunk) in enumerate(zip(sockets, chunks, strict=True))))
    tally = Tally()
    receivers = [asyncio.create_task(receive(ws, tally)) for ws in sockets]
    via_emit = await emit_supported(port)
    cpu = cpu_s(pid), cpu_s()
    started = time.perf_counter()
    requests = await generate(port, egress_list, args.seconds, via_emit)
    while time.perf_counter() - max(tally.last, started) < 1.0:  # drain
        await asyncio.sleep(0.1)
    elapsed = max(tally.last, started + 1e-3) - started
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*receivers)
    return {"events_per_s": round(tally.count / elapsed, 1), "events": tally.count,
            "listen_keys": len(keys), "sockets": len(sockets),
            "generator": "POST /sim/bench/emit" if via_emit else "REST MARKET orders",
            "generator_requests": requests,
            "events_per_request": round(tally.count / max(1, requests), 2),
            **cpu_per_request(pid, cpu, tally.count, "event")}


# --- (c) the production client path -------------------------------------------------------------


async def bench_client(port: int, pid: int, seconds: float) -> dict[str, Any]:
    """MARKET orders through ExchangeClient + httpx (4 source IPs, 32 workers)."""
    creds = await new_accounts(port, 64)
    https = [httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(
        local_address=f"127.0.0.{100 + i}")) for i in range(4)]
    pools = [ClientPool(f"http://{HOST}:{port}", http) for http in https]
    clients = [pools[i % 4].get(i, c.key, c.secret) for i, c in enumerate(creds)]
    done = 0
    cpu = cpu_s(pid), cpu_s()
    started = time.perf_counter()

    async def worker(n: int) -> None:
        nonlocal done
        for i in range(1_000_000):
            if time.perf_counter() - started > seconds:
                return
            client = clients[(n + 32 * i) % len(clients)]
            await client.place_order("BTCUSDT", "BUY" if i % 2 else "SELL", "MARKET",
                                     Decimal("0.001"), client_order_id=f"c{n}-{i}")
            done += 1

    await asyncio.gather(*(worker(n) for n in range(32)))
    elapsed = time.perf_counter() - started
    for http in https:
        await http.aclose()
    return {"orders_per_s": round(done / elapsed, 1), **cpu_per_request(pid, cpu, done)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    async with simulator() as (port, pid):
        orders = await bench_orders(port, pid, args)
        client = await bench_client(port, pid, min(args.seconds, 3.0))
    async with simulator() as (port, pid):  # a fresh simulator: no state from (a)
        events = await bench_events(port, pid, args)
    return {"orders": orders, "events": events, "exchange_client": client}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--accounts", type=int, default=288)
    parser.add_argument("--ips", type=int, default=24)
    parser.add_argument("--conns", type=int, default=3, help="connections per source IP")
    parser.add_argument("--keys", type=int, default=5000)
    cli_args = parser.parse_args()
    figures = asyncio.run(main(cli_args))
    for name, row in figures.items():
        cells = "  ".join(f"{k}={v}" for k, v in row.items())
        sys.stderr.write(f"{name:<16} {cells}\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sim.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({"orders_per_s": figures["orders"]["orders_per_s"],
                      "events_per_s": figures["events"]["events_per_s"],
                      "listen_keys": figures["events"]["listen_keys"]}))
