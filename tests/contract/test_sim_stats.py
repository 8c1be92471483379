"""The simulator's measurement endpoints (``/sim/stats/*``): the exchange's own view of what a
user-data client does — listenKey calls in order, sockets and accounts listening."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tradewire.clock import ManualClock
from tradewire.simulator import SimulatorServer
from tradewire.simulator.app import create_app

START_MS = 1_767_000_000_000


@pytest.fixture
async def admin() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(clock=ManualClock(START_MS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://sim") as client:
        yield client


async def new_account(admin: httpx.AsyncClient) -> str:
    api_key: str = (await admin.post("/sim/accounts", json={})).json()["api_key"]
    return api_key


def rows(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(zip(body["fields"], call, strict=True)) for call in body["calls"]]


async def test_listen_key_calls_are_logged_in_order_with_both_clocks(
    admin: httpx.AsyncClient,
) -> None:
    """POST, PUT and DELETE of listenKeys are logged in call order with the engine clock and
    the host's monotonic clock; a refused PUT is logged as failed."""
    one, two = await new_account(admin), await new_account(admin)
    before = time.monotonic() * 1000
    await admin.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": one})
    await admin.post("/sim/clock/advance", json={"ms": 1000})
    await admin.put("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": one})
    refused = await admin.put("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": two})
    assert refused.status_code == 400  # -1125: no live key
    await admin.delete("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": one})
    body = (await admin.get("/sim/stats/listen-keys")).json()
    calls = rows(body)
    assert [(c["method"], c["api_key"], c["ok"]) for c in calls] == [
        ("POST", one, True), ("PUT", one, True), ("PUT", two, False), ("DELETE", one, True)]
    assert [c["seq"] for c in calls] == [0, 1, 2, 3]
    assert [c["sim_ms"] for c in calls] == [START_MS, START_MS + 1000, START_MS + 1000,
                                            START_MS + 1000]
    assert all(before <= c["mono_ms"] <= time.monotonic() * 1000 for c in calls)
    assert body["totals"] == {"POST": 1, "PUT": 2, "DELETE": 1}
    assert body["failed"] == {"POST": 0, "PUT": 1, "DELETE": 0}
    assert body["first"] == 0 and body["next"] == 4


async def test_since_returns_only_newer_calls(admin: httpx.AsyncClient) -> None:
    """``next`` passed back as ``since`` pages through the log; ``limit`` caps a page; a bad
    parameter is a 400."""
    api_key = await new_account(admin)
    for _ in range(3):
        await admin.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": api_key})
    page = (await admin.get("/sim/stats/listen-keys", params={"limit": 2})).json()
    assert [c[0] for c in page["calls"]] == [0, 1] and page["next"] == 2
    await admin.put("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": api_key})
    rest = (await admin.get("/sim/stats/listen-keys", params={"since": page["next"]})).json()
    assert [(c[0], c[1]) for c in rest["calls"]] == [(2, "POST"), (3, "PUT")]
    empty = (await admin.get("/sim/stats/listen-keys", params={"since": rest["next"]})).json()
    assert empty["calls"] == [] and empty["next"] == 4
    bad = await admin.get("/sim/stats/listen-keys", params={"since": "x"})
    assert bad.status_code == 400


async def stream_stats(http: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get("/sim/stats/streams", params=params)).json()
    return body


async def until(http: httpx.AsyncClient, field: str, value: int) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while (body := await stream_stats(http))[field] != value:
            await asyncio.sleep(0.02)
    return body


async def test_streams_counts_sockets_and_accounts_listening_on_their_live_key() -> None:
    """An account counts as listening while its live listenKey is subscribed on an open
    socket; a key that was replaced, or a closed socket, does not count."""
    async with SimulatorServer() as sim, httpx.AsyncClient(base_url=sim.base_url) as http:
        keys = [await new_account(http) for _ in range(3)]
        listen = [(await http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": k})).json()
                  ["listenKey"] for k in keys]
        assert await stream_stats(http) == {
            "connections": 0, "subscribed_connections": 0, "subscriptions": 0, "accounts": 3,
            "listening": 0, "live_keys": 3, "connection_attempts": 0, "connections_refused": 0}
        async with connect(f"{sim.ws_url}/private/stream?listenKey={listen[0]}") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [listen[1]], "id": 1}))
            assert json.loads(await ws.recv()) == {"result": None, "id": 1}
            body = await stream_stats(http, not_listening="1")
            assert body["connections"] == 1 and body["subscribed_connections"] == 1
            assert body["subscriptions"] == 2 and body["listening"] == 2
            assert body["connection_attempts"] == 1
            assert body["not_listening"] == [keys[2]]
            await http.delete("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": keys[1]})
            body = await stream_stats(http)
            assert body["listening"] == 1 and body["live_keys"] == 2
        body = await until(http, "connections", 0)
        assert body["listening"] == 0 and body["subscriptions"] == 0
