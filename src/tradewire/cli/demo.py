"""The demo scenario: demo users, signals, and a price path that hits one user's stop-loss and
another's take-profit — watched through the public API, the simulator's admin surface and a
local webhook sink standing in for Discord.

``run_scenario`` only speaks HTTP, so it drives a one-process ``Stack`` and a set of separate
processes alike.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from tradewire.errors import TradewireError


@dataclass
class DemoPlan:
    """Who trades what, and the marks that follow."""

    users: tuple[str, ...] = ("alice", "bob")
    start_marks: dict[str, str] = field(
        default_factory=lambda: {"BTCUSDT": "60000", "ETHUSDT": "3000"})
    # one signal per user: alice goes LONG BTC, bob goes SHORT ETH
    signals: tuple[dict[str, Any], ...] = (
        {"user": "alice", "symbol": "BTCUSDT", "side": "LONG", "stop_loss": "58800",
         "take_profit": "61800", "leverage": 10, "size_usdt": "600"},
        {"user": "bob", "symbol": "ETHUSDT", "side": "SHORT", "stop_loss": "3090",
         "take_profit": "2910", "leverage": 5, "size_usdt": "300"},
    )
    # BTC falls through alice's stop; ETH falls through bob's target
    path: tuple[tuple[str, str], ...] = (
        ("BTCUSDT", "59500"), ("ETHUSDT", "2960"), ("BTCUSDT", "59000"),
        ("ETHUSDT", "2930"), ("BTCUSDT", "58700"), ("ETHUSDT", "2900"),
    )


@dataclass
class Endpoints:
    api_url: str
    token: str
    sim_url: str
    webhook_base: str  # e.g. http://127.0.0.1:PORT/hooks


class DemoFailed(TradewireError):
    pass


async def run_scenario(
    ends: Endpoints, plan: DemoPlan | None = None, *, timeout_s: float = 30.0,
    step_pause_s: float = 0.2, announce: Any = None,
) -> dict[str, Any]:
    """Run the scenario to completion; returns trades by user and the order counts."""
    plan = plan or DemoPlan()
    say = announce or (lambda text: None)
    headers = {"Authorization": f"Bearer {ends.token}"}
    async with httpx.AsyncClient(base_url=ends.api_url, headers=headers, timeout=30) as api, \
            httpx.AsyncClient(base_url=ends.sim_url, timeout=30) as sim:
        for symbol, price in plan.start_marks.items():
            await _ok(sim.post("/sim/mark-price", json={"symbol": symbol, "price": price}))
        ids, keys = await _create_users(api, sim, ends, plan, say)
        await wait_streams(sim, keys, timeout_s)
        trade_ids = await _send_signals(api, plan, ids, say)
        await _wait_open(api, trade_ids, timeout_s)
        for symbol, price in plan.path:
            say(f"mark price {symbol} -> {price}")
            await _ok(sim.post("/sim/mark-price", json={"symbol": symbol, "price": price}))
            await asyncio.sleep(step_pause_s)
        closed = await _wait_closed(api, trade_ids, timeout_s)
    return {"user_ids": ids, "api_keys": keys, "trades": closed, "signals": len(plan.signals)}


async def _ok(call: Any) -> Any:
    response: httpx.Response = await call
    if response.status_code >= 300:
        raise DemoFailed(f"{response.request.method} {response.request.url.path} answered "
                         f"{response.status_code}: {response.text}")
    return response.json()


async def _create_users(
    api: httpx.AsyncClient, sim: httpx.AsyncClient, ends: Endpoints, plan: DemoPlan, say: Any
) -> tuple[dict[str, int], list[str]]:
    ids: dict[str, int] = {}
    api_keys: list[str] = []
    suffix = uuid.uuid4().hex[:6]
    for name in plan.users:
        keys = await _ok(sim.post("/sim/accounts", json={}))
        user = await _ok(api.post("/api/users", json={
            "name": f"demo-{name}-{suffix}", "api_key": keys["api_key"],
            "api_secret": keys["api_secret"],
            "discord_webhook_url": f"{ends.webhook_base}/{name}",
        }))
        ids[name] = int(user["id"])
        api_keys.append(keys["api_key"])
        say(f"user {name} created (id {user['id']})")
    return ids, api_keys


async def wait_streams(sim: httpx.AsyncClient, api_keys: list[str], timeout_s: float) -> None:
    """Until the simulator has a user-data socket listening for every account."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = [await _ok(sim.get(f"/sim/accounts/{key}")) for key in api_keys]
        if all(int(state.get("listening", 0)) > 0 for state in states):
            return
        await asyncio.sleep(0.1)
    raise DemoFailed("user-data streams did not connect in time")


async def _send_signals(
    api: httpx.AsyncClient, plan: DemoPlan, ids: dict[str, int], say: Any
) -> dict[str, int]:
    trade_ids: dict[str, int] = {}
    for spec in plan.signals:
        body = {k: v for k, v in spec.items() if k != "user"}
        body["signal_id"] = f"demo-{spec['user']}-{uuid.uuid4().hex[:8]}"
        body["users"] = [ids[spec["user"]]]
        report = await _ok(api.post("/api/execute-trade", json=body))
        [trade] = report["trades"]
        if trade["status"] != "OPEN":
            raise DemoFailed(f"signal for {spec['user']} was not placed: {trade}")
        trade_ids[spec["user"]] = int(trade["trade_id"])
        say(f"signal {body['signal_id']}: {spec['side']} {spec['symbol']} for {spec['user']}")
    return trade_ids


async def _wait_open(api: httpx.AsyncClient, trade_ids: dict[str, int], timeout_s: float) -> None:
    await _wait_status(api, trade_ids, {"ACTIVE", "CLOSED"}, timeout_s)


async def _wait_closed(
    api: httpx.AsyncClient, trade_ids: dict[str, int], timeout_s: float
) -> dict[str, dict[str, Any]]:
    return await _wait_status(api, trade_ids, {"CLOSED", "FAILED", "CANCELED"}, timeout_s)


async def _wait_status(
    api: httpx.AsyncClient, trade_ids: dict[str, int], wanted: set[str], timeout_s: float
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        trades = {u: await _ok(api.get(f"/api/trades/{t}")) for u, t in trade_ids.items()}
        if all(t["status"] in wanted for t in trades.values()):
            return trades
        if time.monotonic() > deadline:
            states = {u: t["status"] for u, t in trades.items()}
            raise DemoFailed(f"trades did not reach {sorted(wanted)} in time: {states}")
        await asyncio.sleep(0.1)


def orders_placed(trades: dict[str, dict[str, Any]]) -> int:
    """Orders the exchange accepted across the demo's trades."""
    return sum(
        1 for t in trades.values() for o in t["orders"]
        if o["exchange_order_id"] is not None or o["algo_id"] is not None
    )


def closed_by(trades: dict[str, dict[str, Any]], reason: str) -> int:
    return sum(1 for t in trades.values() if t["close_reason"] == reason)
