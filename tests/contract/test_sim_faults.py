"""Fault injection (reference §5.1, §11.8) through the admin endpoints ``/sim/faults/*``.

REST faults run in-process (``httpx.ASGITransport``); stream faults on a ``SimulatorServer``
(port 0). Time runs on a ``ManualClock``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.contract.test_simulator import (
    BTC,
    ENTRY_SEQUENCE,
    Trader,
    assert_nothing_pending,
    kinds,
    new_trader,
    receive,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimulatorServer, create_app

UNKNOWN = "Unknown error, please check your request or try again later."
THROTTLED = ("Request throttled by system-level protection. Reduce-only/close-position orders "
             "are exempt. Please try again.")
NOTHING_ARMED = {"silenced": {"api_keys": [], "listen_keys": []}, "unknown_outcome": {},
                 "throttle": {}, "slow_ms": {}, "hide_algos": {}, "hidden_algo_ids": []}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def http(clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Engine(clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://sim") as client:
        yield client


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[SimulatorServer]:
    server = SimulatorServer(engine=Engine(clock))
    async with server:
        yield server


@pytest.fixture
async def wire(sim: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as client:
        yield client


async def arm(http: httpx.AsyncClient, fault: str, **body: Any) -> dict[str, Any]:
    response = await http.post(f"/sim/faults/{fault}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def limit_buy(trader: Trader, client_id: str, **extra: str) -> httpx.Response:
    return await trader.signed("POST", "/fapi/v1/order", symbol=BTC, side="BUY", type="LIMIT",
                               timeInForce="GTC", quantity="0.010", price="59000",
                               newClientOrderId=client_id, **extra)


async def stop_sell(trader: Trader, client_id: str) -> httpx.Response:
    return await trader.signed("POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=BTC,
                               side="SELL", type="STOP_MARKET", triggerPrice="58000",
                               quantity="0.010", clientAlgoId=client_id)


async def find_order(trader: Trader, client_id: str) -> httpx.Response:
    return await trader.signed("GET", "/fapi/v1/order", symbol=BTC, origClientOrderId=client_id)


def answer(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json()


# -- REST faults ------------------------------------------------------------------------------


async def test_unknown_outcome_places_the_order_but_answers_503(
    http: httpx.AsyncClient, clock: ManualClock
) -> None:
    """The next N placements of the account land in the engine yet are answered 503 "Unknown
    error" (counted on the order counters); the orders are found by client id afterwards, and
    other accounts are not affected."""
    alice, bob = await new_trader(http, clock), await new_trader(http, clock)
    await arm(http, "unknown-outcome", api_key=alice.api_key, count=2)
    bobs = await limit_buy(bob, "bob-1")
    order = await limit_buy(alice, "alice-1")
    algo = await stop_sell(alice, "alice-sl-1")
    after = await limit_buy(alice, "alice-2")
    found_order = await find_order(alice, "alice-1")
    found_algo = await alice.signed("GET", "/fapi/v1/algoOrder", clientAlgoId="alice-sl-1")
    assert bobs.status_code == 200
    assert answer(order) == answer(algo) == (503, {"code": -1000, "msg": UNKNOWN})
    assert order.headers["X-MBX-ORDER-COUNT-10S"] == "1"
    assert after.status_code == 200
    assert (found_order.status_code, found_order.json()["status"]) == (200, "NEW")
    assert (found_algo.status_code, found_algo.json()["algoStatus"]) == (200, "NEW")


async def test_throttle_refuses_placements_but_not_reduce_only(
    http: httpx.AsyncClient, clock: ManualClock
) -> None:
    """-1008 (HTTP 503) refuses the next N placements without placing or counting them;
    reduce-only orders pass and leave the fault armed."""
    trader = await new_trader(http, clock)
    assert (await trader.market("BUY", "0.010")).status_code == 200
    await arm(http, "throttle", api_key=trader.api_key, count=1)
    reduce_only = await trader.signed("POST", "/fapi/v1/order", symbol=BTC, side="SELL",
                                      type="LIMIT", timeInForce="GTC", quantity="0.010",
                                      price="61000", reduceOnly="true")
    throttled = await limit_buy(trader, "t-1")
    missing = await find_order(trader, "t-1")
    placed = await limit_buy(trader, "t-2")
    assert reduce_only.status_code == 200, reduce_only.text
    assert answer(throttled) == (503, {"code": -1008, "msg": THROTTLED})
    assert "X-MBX-ORDER-COUNT-10S" not in throttled.headers
    assert missing.json()["code"] == -2013
    assert (placed.status_code, placed.headers["X-MBX-ORDER-COUNT-10S"]) == (200, "3")


async def test_slow_responses_are_delayed(http: httpx.AsyncClient, clock: ManualClock) -> None:
    """A per-account delay slows that account's answers only; a global one slows every answer;
    clearing removes it."""
    alice, bob = await new_trader(http, clock), await new_trader(http, clock)

    async def seconds(trader: Trader) -> float:
        started = time.perf_counter()
        assert (await trader.signed("GET", "/fapi/v3/balance")).status_code == 200
        return time.perf_counter() - started

    await arm(http, "slow", api_key=alice.api_key, ms=200)
    assert await seconds(alice) >= 0.2
    assert await seconds(bob) < 0.2
    await arm(http, "slow", ms=100)
    started = time.perf_counter()
    await http.get("/fapi/v1/time")
    assert time.perf_counter() - started >= 0.1
    await arm(http, "clear")
    assert await seconds(alice) < 0.1


async def test_algo_order_is_not_queryable_until_the_delay_passes(
    http: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Right after placement the algo order answers -2013 and is missing from openAlgoOrders;
    once the delay has passed (engine clock) it is found; count=1 hides only the next one."""
    trader = await new_trader(http, clock)
    await arm(http, "hide-algos", api_key=trader.api_key, ms=500, count=1)
    algo_id = (await stop_sell(trader, "sl-1")).json()["algoId"]
    visible_id = (await stop_sell(trader, "sl-2")).json()["algoId"]

    async def state() -> tuple[Any, list[int]]:
        one = (await trader.signed("GET", "/fapi/v1/algoOrder", algoId=algo_id)).json()
        listed = await trader.signed("GET", "/fapi/v1/openAlgoOrders", symbol=BTC)
        return one.get("code", one.get("algoStatus")), [a["algoId"] for a in listed.json()]

    assert await state() == (-2013, [visible_id])
    await http.post("/sim/clock/advance", json={"ms": 499})
    assert await state() == (-2013, [visible_id])
    await http.post("/sim/clock/advance", json={"ms": 1})
    assert await state() == ("NEW", [algo_id, visible_id])


async def test_faults_are_listed_and_cleared(http: httpx.AsyncClient, clock: ManualClock) -> None:
    """GET /sim/faults shows what is armed; POST /sim/faults/clear disarms everything."""
    trader = await new_trader(http, clock)
    await arm(http, "throttle", count=2)
    await arm(http, "silence", api_key=trader.api_key)
    armed = await arm(http, "slow", api_key=trader.api_key, ms=5)
    assert armed["throttle"] == {"*": {"count": 2, "endpoints": ["order"]}}
    assert armed["silenced"]["api_keys"] == [trader.api_key]
    assert armed["slow_ms"] == {trader.api_key: 5}
    assert await arm(http, "clear") == NOTHING_ARMED
    assert (await http.get("/sim/faults")).json() == NOTHING_ARMED
    assert (await limit_buy(trader, "after-clear")).status_code == 200


@pytest.mark.parametrize(("fault", "body", "status"), [
    ("throttle", {"api_key": "nobody"}, 404),
    ("throttle", {"count": 0}, 400),
    ("unknown-outcome", {"endpoints": ["cancel"]}, 400),
    ("slow", {}, 400),
    ("silence", {}, 400),
])
async def test_fault_bodies_are_checked(http: httpx.AsyncClient, fault: str,
                                        body: dict[str, Any], status: int) -> None:
    """Unknown accounts, counts below 1, unknown endpoints and missing fields are refused."""
    response = await http.post(f"/sim/faults/{fault}", json=body)
    assert response.status_code == status
    assert "error" in response.json()


# -- stream faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["api_key", "listen_key"])
async def test_silence_swallows_events_while_the_socket_stays_open(
    sim: SimulatorServer, wire: httpx.AsyncClient, clock: ManualClock, by: str
) -> None:
    """A silenced account (or listenKey) gets no events though its socket answers control
    messages; after unsilence only new events arrive: the swallowed ones are gone."""
    trader = await new_trader(wire, clock)
    key = await trader.listen_key()
    target = {"api_key": trader.api_key, "listen_key": key}[by]
    async with connect(f"{sim.ws_url}/private/ws/{key}") as ws:
        await arm(wire, "silence", **{by: target})
        await trader.market("BUY", "0.010")
        await assert_nothing_pending(ws)
        await arm(wire, "unsilence", **{by: target})
        order_id = (await trader.market("BUY", "0.010")).json()["orderId"]
        events = await receive(ws, 4)
    assert kinds(events) == ENTRY_SEQUENCE
    assert events[0]["o"]["i"] == order_id


async def test_events_during_a_gap_are_lost(sim: SimulatorServer, wire: httpx.AsyncClient,
                                            clock: ManualClock) -> None:
    """Events produced while the account has no socket are not replayed on reconnect."""
    trader = await new_trader(wire, clock)
    key = await trader.listen_key()
    async with connect(f"{sim.ws_url}/private/ws/{key}") as ws:
        assert await arm(wire, "drop-connections", api_key=trader.api_key) == {"dropped": 1}
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    await trader.market("BUY", "0.010")
    async with connect(f"{sim.ws_url}/private/ws/{key}") as ws:
        await assert_nothing_pending(ws)
        order_id = (await trader.market("BUY", "0.010")).json()["orderId"]
        events = await receive(ws, 4)
    assert events[0]["o"]["i"] == order_id


async def test_drop_one_listen_key_leaves_other_sockets(
    sim: SimulatorServer, wire: httpx.AsyncClient, clock: ManualClock
) -> None:
    """drop-connections with a listen_key closes only that key's sockets."""
    alice, bob = await new_trader(wire, clock), await new_trader(wire, clock)
    alice_key, bob_key = await alice.listen_key(), await bob.listen_key()
    async with connect(f"{sim.ws_url}/private/ws/{alice_key}") as alice_ws, connect(
        f"{sim.ws_url}/private/ws/{bob_key}"
    ) as bob_ws:
        dropped = await arm(wire, "drop-connections", listen_key=alice_key, code=1012)
        with pytest.raises(ConnectionClosed):
            await alice_ws.recv()
        await bob.market("BUY", "0.010")
        assert kinds(await receive(bob_ws, 4)) == ENTRY_SEQUENCE
    assert dropped == {"dropped": 1}
    assert alice_ws.close_code == 1012


async def test_faults_are_armed_from_python(clock: ManualClock) -> None:
    """``runtime.faults`` arms the same faults without HTTP (here: one -1008 throttle)."""
    app = create_app(Engine(clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://sim") as http:
        trader = await new_trader(http, clock)
        app.state.runtime.faults.throttle(trader.api_key)
        throttled = await limit_buy(trader, "py-1")
        placed = await limit_buy(trader, "py-2")
    assert (throttled.json()["code"], placed.status_code) == (-1008, 200)
