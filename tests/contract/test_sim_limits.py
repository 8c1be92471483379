"""The simulator's limits (reference §3.3, §8): IP weight, order counters, 429 → 418 bans, and
the WebSocket connection rules. In-process (``httpx.ASGITransport``) where no socket is needed,
a real ``SimulatorServer`` on port 0 where one is; time runs on a ``ManualClock``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.contract.test_simulator import BTC, Trader, new_trader
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimulatorServer, create_app
from tradewire.simulator.limits import LimitConfig, Limits
from tradewire.simulator.streams import StreamConfig

IP_HEADER = "X-Sim-Client-Ip"
WS_HINT = "Please use WebSocket Streams for live updates"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()  # starts on a minute boundary: windows reset 60 s later


@contextlib.asynccontextmanager
async def in_process(clock: ManualClock, **limits: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Engine(clock), limits=LimitConfig(**limits))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://sim") as http:
        yield http


@contextlib.asynccontextmanager
async def served(clock: ManualClock, streams: StreamConfig | None = None,
                 limits: LimitConfig | None = None,
                 **options: Any) -> AsyncIterator[SimulatorServer]:
    """A simulator on port 0; ``options`` go to uvicorn (e.g. ``ws_ping_interval``)."""
    server = SimulatorServer(app=create_app(Engine(clock), limits=limits, streams=streams))
    server.options.update(options)
    async with server:
        yield server


def weight(response: httpx.Response) -> int:
    return int(response.headers["X-MBX-USED-WEIGHT-1M"])


def order_counts(response: httpx.Response) -> tuple[str, str]:
    return response.headers["X-MBX-ORDER-COUNT-10S"], response.headers["X-MBX-ORDER-COUNT-1M"]


def error(response: httpx.Response) -> tuple[int, int, str]:
    body = response.json()
    return response.status_code, body["code"], body["msg"]


async def limit_buy(trader: Trader, client_id: str | None = None) -> httpx.Response:
    extra = {"newClientOrderId": client_id} if client_id else {}
    return await trader.signed("POST", "/fapi/v1/order", symbol=BTC, side="BUY", type="LIMIT",
                               timeInForce="GTC", quantity="0.010", price="59000", **extra)


async def stop_sell(trader: Trader) -> httpx.Response:
    return await trader.signed("POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=BTC,
                               side="SELL", type="STOP_MARKET", triggerPrice="58000",
                               quantity="0.010")


# -- REST: weight and order counters ----------------------------------------------------------


async def test_weights_per_endpoint_and_order_counters_in_headers(clock: ManualClock) -> None:
    """Every answer reports the IP's weight (exchange weights: time 1, openOrders without symbol
    40, balance 5, placements 0, errors too); placements report the account's order counters,
    algo orders included."""
    async with in_process(clock) as http:
        trader = await new_trader(http, clock)
        seen = [weight(await http.get("/fapi/v1/time")),
                weight(await trader.signed("GET", "/fapi/v1/openOrders")),
                weight(await trader.signed("GET", "/fapi/v3/balance"))]
        order = await limit_buy(trader)
        algo = await stop_sell(trader)
        missing = await trader.signed("GET", "/fapi/v1/order", symbol=BTC, orderId=1)
    assert seen == [1, 41, 46]
    assert (order.status_code, weight(order), order_counts(order)) == (200, 46, ("1", "1"))
    assert (algo.status_code, weight(algo), order_counts(algo)) == (200, 46, ("2", "2"))
    assert (missing.status_code, weight(missing)) == (400, 47)


def test_batch_cost_is_five_on_the_ten_second_counter_and_one_on_the_minute() -> None:
    """A batch placement costs (5, 1): it fills the 10 s counter five times faster."""
    limits = Limits(LimitConfig(orders_per_10s=9))
    assert limits.charge_order("acct", 0, cost=(5, 1)) == (5, 1)
    assert limits.charge_order("acct", 0) == (6, 2)
    with pytest.raises(Exception, match="9 orders per TEN_SECONDS"):
        limits.charge_order("acct", 0, cost=(5, 1))


async def test_weight_over_the_limit_is_429_then_418_and_the_ban_lifts(
    clock: ManualClock,
) -> None:
    """Over the minute's weight: 429 -1003 with Retry-After; sending again while refused bans
    the IP (418 "banned until"), the ban lifts after its duration, and a repeat offence is
    banned twice as long (capped)."""
    async with in_process(clock, ip_weight_per_minute=3, refusals_before_ban=1, ban_ms=1_000,
                          max_ban_ms=1_500) as http:
        assert [(await http.get("/fapi/v1/time")).status_code for _ in range(3)] == [200] * 3
        refused = await http.get("/fapi/v1/time")
        assert error(refused) == (429, -1003, "Too many requests; current limit of IP(127.0.0.1) "
                                              f"is 3 requests per minute. {WS_HINT} to avoid "
                                              "polling the API.")
        assert (refused.headers["Retry-After"], weight(refused)) == ("60", 4)
        banned = await http.get("/fapi/v1/time")
        until = clock.now_ms() + 1_000
        assert error(banned) == (418, -1003, f"Way too many requests; IP(127.0.0.1) banned "
                                             f"until {until}. {WS_HINT} to avoid bans.")
        assert banned.headers["Retry-After"] == "1"
        clock.advance(999)
        assert (await http.get("/fapi/v1/time")).status_code == 418
        clock.advance(1)
        assert (await http.get("/fapi/v1/time")).status_code == 429  # same minute, still over
        again = await http.get("/fapi/v1/time")
        assert error(again)[:2] == (418, -1003)
        assert f"banned until {clock.now_ms() + 1_500}." in error(again)[2]
        clock.advance(60_000)
        fresh = await http.get("/fapi/v1/time")
    assert (fresh.status_code, weight(fresh)) == (200, 1)


async def test_retry_after_can_be_switched_off(clock: ManualClock) -> None:
    """With ``retry_after_header=False`` a 429 carries no Retry-After (fapi does not document
    one)."""
    async with in_process(clock, ip_weight_per_minute=1, retry_after_header=False) as http:
        await http.get("/fapi/v1/time")
        refused = await http.get("/fapi/v1/time")
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers


async def test_client_ips_have_separate_weight_budgets(clock: ManualClock) -> None:
    """Two egress IPs (simulator-only X-Sim-Client-Ip header) do not share the weight budget."""
    async with in_process(clock, ip_weight_per_minute=2) as http:
        first = {IP_HEADER: "10.0.0.1"}
        for _ in range(2):
            await http.get("/fapi/v1/time", headers=first)
        refused = await http.get("/fapi/v1/time", headers=first)
        other = await http.get("/fapi/v1/time", headers={IP_HEADER: "10.0.0.2"})
    assert error(refused)[:2] == (429, -1003)
    assert "IP(10.0.0.1)" in error(refused)[2]
    assert (other.status_code, weight(other)) == (200, 1)


async def test_order_counters_are_per_account(clock: ManualClock) -> None:
    """Orders and algo orders fill the account's 10 s and 1 min counters (429 -1015 over
    either); another account on the same IP places freely."""
    async with in_process(clock, orders_per_10s=2, orders_per_minute=3) as http:
        alice, bob = await new_trader(http, clock), await new_trader(http, clock)
        assert (await limit_buy(alice)).status_code == 200
        assert (await stop_sell(alice)).status_code == 200
        ten_s = await limit_buy(alice)
        bobs = await limit_buy(bob)
        clock.advance(10_000)
        minute = await limit_buy(alice)
    assert error(ten_s) == (429, -1015, "Too many new orders; current limit is 2 orders per "
                                        "TEN_SECONDS.")
    assert (order_counts(ten_s), ten_s.headers["Retry-After"]) == (("3", "3"), "10")
    assert (bobs.status_code, order_counts(bobs)) == (200, ("1", "1"))
    assert error(minute) == (429, -1015, "Too many new orders; current limit is 3 orders per "
                                         "MINUTE.")
    assert order_counts(minute) == ("1", "4")


async def test_ignored_order_limit_refusals_ban_the_ip(clock: ManualClock) -> None:
    """An account that keeps placing after -1015 gets its IP banned: 418 on every endpoint
    until the admin resets the limits."""
    async with in_process(clock, orders_per_10s=1, refusals_before_ban=1) as http:
        trader = await new_trader(http, clock)
        answers = [(await limit_buy(trader)).status_code for _ in range(3)]
        public = await http.get("/fapi/v1/time")
        assert (await http.post("/sim/limits/reset")).json() == {"reset": True}
        answers.append((await limit_buy(trader)).status_code)
    assert answers == [200, 429, 418, 200]
    assert error(public)[:2] == (418, -1003)
    assert int(public.headers["Retry-After"]) == 120  # the 2-minute first ban


# -- WebSocket rules --------------------------------------------------------------------------


async def test_connection_attempts_beyond_the_budget_are_refused(clock: ManualClock) -> None:
    """Handshakes per IP are budgeted (300 / 5 min by default): beyond it HTTP 429; another IP
    still connects; the budget frees up as the window slides."""
    streams = StreamConfig(connection_attempts_per_ip=2, connection_window_s=60)
    async with served(clock, streams) as sim:
        url = f"{sim.ws_url}/private/ws/{'k' * 64}"
        for _ in range(2):
            async with connect(url):
                pass
        with pytest.raises(InvalidStatus) as refused:
            await connect(url)
        async with connect(url, additional_headers={IP_HEADER: "10.0.0.2"}):
            pass
        clock.advance(60_000)
        async with connect(url):
            pass
    response = refused.value.response
    assert (response.status_code, response.headers["Retry-After"]) == (429, "60")
    assert json.loads(response.body)["code"] == -1003


async def test_a_banned_ip_cannot_open_sockets(clock: ManualClock) -> None:
    """An IP banned on REST is refused at the WebSocket handshake with 418."""
    limits = LimitConfig(ip_weight_per_minute=1, refusals_before_ban=0)
    async with served(clock, limits=limits) as sim, httpx.AsyncClient(
        base_url=sim.base_url
    ) as http:
        await http.get("/fapi/v1/time")
        assert (await http.get("/fapi/v1/time")).status_code == 418
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{sim.ws_url}/private/ws/{'k' * 64}")
    assert refused.value.response.status_code == 418


async def test_streams_per_connection_are_capped(clock: ManualClock) -> None:
    """A SUBSCRIBE past the per-connection stream cap is refused with code 2 and the socket
    keeps its streams; a URL naming more streams than the cap is refused at the handshake."""
    async with served(clock, StreamConfig(max_streams_per_connection=2)) as sim:
        async with connect(f"{sim.ws_url}/private/stream?listenKey=a&listenKey=b") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["c"], "id": 1}))
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["a@ORDER_TRADE_UPDATE"],
                                      "id": 2}))
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
            replies = [json.loads(await asyncio.wait_for(ws.recv(), 2)) for _ in range(3)]
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"{sim.ws_url}/private/stream?listenKey=a&listenKey=b&listenKey=c")
    assert replies == [
        {"code": 2, "msg": "Invalid request: too many streams; at most 2 per connection",
         "id": 1},
        {"result": None, "id": 2}, {"result": ["a", "b"], "id": 3}]
    assert refused.value.response.status_code == 400


async def test_too_many_incoming_messages_close_the_socket(clock: ManualClock) -> None:
    """More inbound messages per second than allowed closes the connection (1008)."""
    async with served(clock, StreamConfig(max_incoming_per_second=3)) as sim, connect(
        f"{sim.ws_url}/private/stream"
    ) as ws:
        for n in range(10):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": n}))
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 2)
    assert ws.close_code == 1008


async def test_connections_are_cut_at_the_end_of_their_lifetime(clock: ManualClock) -> None:
    """A socket is closed (1001) once it reaches the configured lifetime (24 h by default)."""
    async with served(clock, StreamConfig(max_lifetime_s=0.2)) as sim, connect(
        f"{sim.ws_url}/private/ws/{'k' * 64}"
    ) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)
    assert ws.close_code == 1001


async def _frames_until_closed(host: str, port: int, path: str) -> list[tuple[int, bytes]]:
    """A hand-made WebSocket peer that never answers pings: the frames it gets until EOF."""
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    frames = []
    with contextlib.suppress(asyncio.IncompleteReadError):
        while True:
            head = await reader.readexactly(2)
            frames.append((head[0] & 0x0F, await reader.readexactly(head[1] & 0x7F)))
    writer.close()
    return frames


async def test_a_peer_that_does_not_answer_pings_is_disconnected(clock: ManualClock) -> None:
    """The server pings (every 3 min by default) and closes (1011) a socket whose pong has not
    come within the timeout (10 min by default)."""
    async with served(clock, ws_ping_interval=0.1, ws_ping_timeout=0.2) as sim:
        started = time.perf_counter()
        frames = await asyncio.wait_for(
            _frames_until_closed(sim.host, sim.port, f"/private/ws/{'k' * 64}"), 5)
        elapsed = time.perf_counter() - started
    assert [opcode for opcode, _ in frames] == [0x9, 0x8]  # ping, then close
    assert struct.unpack("!H", frames[1][1][:2]) == (1011,)
    assert elapsed >= 0.3


async def test_a_peer_that_answers_pings_stays_connected(clock: ManualClock) -> None:
    """A client answering the server's pings keeps its socket across many ping intervals."""
    async with served(clock, ws_ping_interval=0.05, ws_ping_timeout=0.1) as sim, connect(
        f"{sim.ws_url}/private/stream", ping_interval=None
    ) as ws:
        await asyncio.sleep(0.4)
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 2)) == {"result": [], "id": 7}
