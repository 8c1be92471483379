"""The simulator's market and time controls over its admin surface (wired to the engine)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tradewire.clock import ManualClock
from tradewire.simulator.app import create_app

START_MS = 1_767_000_000_000


@pytest.fixture
async def admin() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(clock=ManualClock(START_MS))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://sim") as client:
        yield client


async def mark(admin: httpx.AsyncClient, symbol: str) -> str:
    body = (await admin.get("/fapi/v1/premiumIndex", params={"symbol": symbol})).json()
    return str(body["markPrice"])


async def test_a_scripted_path_plays_as_the_clock_advances(admin: httpx.AsyncClient) -> None:
    """Steps of a scripted path apply when simulated time reaches them, not before."""
    await admin.post("/sim/mark-price", json={"symbol": "BTCUSDT", "price": "60000"})
    attached = await admin.post("/sim/paths", json={
        "symbol": "BTCUSDT", "kind": "scripted", "steps": [[60_000, "59000"], [120_000, "58000"]]})
    assert attached.status_code == 200, attached.text
    assert (await mark(admin, "BTCUSDT")).startswith("60000")
    await admin.post("/sim/clock/advance", json={"ms": 60_000})
    assert (await mark(admin, "BTCUSDT")).startswith("59000")
    await admin.post("/sim/clock/advance", json={"ms": 3_600_000})  # cross an hour at once
    assert (await mark(admin, "BTCUSDT")).startswith("58000")


async def test_a_seeded_random_walk_is_reproducible(admin: httpx.AsyncClient) -> None:
    """The same seed gives the same prices."""
    walk = {"symbol": "ETHUSDT", "kind": "random_walk", "seed": 7, "volatility": 0.01,
            "step_ms": 1000, "count": 5}
    seen = []
    for _ in range(2):
        await admin.post("/sim/mark-price", json={"symbol": "ETHUSDT", "price": "3000"})
        await admin.post("/sim/paths", json=walk)
        await admin.post("/sim/clock/advance", json={"ms": 5000})
        seen.append(await mark(admin, "ETHUSDT"))
        await admin.delete("/sim/paths/ETHUSDT")
    assert seen[0] == seen[1] and not seen[0].startswith("3000.00")


@pytest.mark.parametrize(
    ("body", "says"),
    [({"symbol": "BTCUSDT", "kind": "zigzag"}, "kind must be"),
     ({"symbol": "BTCUSDT", "kind": "scripted"}, "bad scripted path")],
)
async def test_a_bad_path_is_a_clear_400(
    admin: httpx.AsyncClient, body: dict[str, object], says: str
) -> None:
    """An unknown kind or a missing field answers 400 saying what is wrong."""
    answer = await admin.post("/sim/paths", json=body)
    assert answer.status_code == 400 and says in answer.json()["error"]


async def test_bench_emit_sends_synthetic_events_round_robin_to_listening_accounts() -> None:
    """``/sim/bench/emit`` pushes valid ACCOUNT_UPDATE events to every account with a live
    listenKey, in turn, and emits nothing when nobody listens."""
    import json

    from websockets.asyncio.client import connect

    from tradewire.exchange.wire import AccountUpdate, parse_event
    from tradewire.simulator import SimulatorServer

    async with SimulatorServer() as sim, httpx.AsyncClient(base_url=sim.base_url) as admin:
        assert (await admin.post("/sim/bench/emit", json={"count": 5})).json() == {"emitted": 0}
        listen_keys = []
        for _ in range(2):
            api_key = (await admin.post("/sim/accounts", json={})).json()["api_key"]
            answer = await admin.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": api_key})
            listen_keys.append(answer.json()["listenKey"])
        query = "&".join(f"listenKey={k}" for k in listen_keys)
        async with connect(f"{sim.ws_url}/private/stream?{query}") as ws:
            emitted = await admin.post("/sim/bench/emit", json={"count": 4})
            assert emitted.json() == {"emitted": 4}
            frames = [json.loads(await ws.recv()) for _ in range(4)]
        assert [f["stream"] for f in frames] == [*listen_keys, *listen_keys]
        assert all(isinstance(parse_event(f["data"]), AccountUpdate) for f in frames)
        assert (await admin.post("/sim/bench/emit", json={"count": -1})).status_code == 400


async def test_bench_pace_spreads_events_evenly_at_the_rate() -> None:
    """``/sim/bench/pace`` emits the same events as ``/sim/bench/emit``, one by one at the
    given rate from the simulator's own loop: 40 events at 200/s take ~0.2 s and arrive
    spread out, not in one burst; a second run while one is going is refused (409); bad
    bodies answer 400; progress is readable."""
    import json
    import time

    from websockets.asyncio.client import connect

    from tradewire.simulator import SimulatorServer

    async with SimulatorServer() as sim, httpx.AsyncClient(base_url=sim.base_url) as admin:
        api_key = (await admin.post("/sim/accounts", json={})).json()["api_key"]
        answer = await admin.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": api_key})
        listen_key = answer.json()["listenKey"]
        async with connect(f"{sim.ws_url}/private/stream?listenKey={listen_key}") as ws:
            started = await admin.post("/sim/bench/pace", json={"count": 40, "rate": 200})
            assert started.json() == {"scheduled": 40, "rate": 200.0}
            again = await admin.post("/sim/bench/pace", json={"count": 1, "rate": 10})
            assert again.status_code == 409
            arrivals = []
            for _ in range(40):
                frame = json.loads(await ws.recv())
                assert frame["data"]["e"] == "ACCOUNT_UPDATE"
                arrivals.append(time.monotonic())
        span = arrivals[-1] - arrivals[0]
        assert 0.15 <= span <= 1.0, span  # 39 intervals of 5 ms, not one burst
        status = (await admin.get("/sim/bench/pace")).json()
        assert status["emitted"] == status["scheduled"] == 40 and not status["running"]
        for body in ({"count": 5}, {"count": 5, "rate": 0}, {"count": -1, "rate": 10},
                     {"count": "5", "rate": 10}):
            assert (await admin.post("/sim/bench/pace", json=body)).status_code == 400


def test_bench_pace_wakes_about_once_per_event_on_uvloop() -> None:
    """On uvloop (the CLI's loop: a clock in millisecond steps, and waits under half a
    millisecond run as ``call_soon``), 300 events at 1,000/s take about one wake-up each. The
    pacer once counted an event due at exactly the clock's reading as not yet due and spun
    until the next millisecond: hundreds of wake-ups per event, up to a whole CPU core taken
    from the processes a benchmark measures."""
    import asyncio

    import uvloop
    from websockets.asyncio.client import connect

    from tradewire.simulator import SimulatorServer

    async def scenario() -> dict[str, float]:
        async with SimulatorServer() as sim, httpx.AsyncClient(base_url=sim.base_url) as admin:
            api_key = (await admin.post("/sim/accounts", json={})).json()["api_key"]
            answer = await admin.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": api_key})
            listen_key = answer.json()["listenKey"]
            async with connect(f"{sim.ws_url}/private/stream?listenKey={listen_key}") as ws:
                await admin.post("/sim/bench/pace", json={"count": 300, "rate": 1000})
                for _ in range(300):
                    await ws.recv()
            status: dict[str, float] = (await admin.get("/sim/bench/pace")).json()
            return status

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        status = runner.run(scenario())
    assert status["emitted"] == 300
    assert status["turns"] <= 360, status  # spinning: tens of thousands
