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
