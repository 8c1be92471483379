"""Rate budgets: many accounts' clients behind one IP never send into a known exchange limit.

Against the in-process simulator with small limits and a clock running ``SPEED`` times faster
than real time (the exchange's one-minute windows pass in about a second and a half), and
against a scripted transport for the header and ban details the simulator cannot vary.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tradewire.clock import ManualClock
from tradewire.errors import RateLimited
from tradewire.exchange.budget import BudgetConfig, Limit, ip_budget
from tradewire.exchange.client import ExchangeClient
from tradewire.trading.clients import ClientPool

simulator_app = pytest.importorskip("tradewire.simulator.app")
LimitConfig = pytest.importorskip("tradewire.simulator.limits").LimitConfig

BASE = "http://sim.test"
START_MS = 1_767_000_000_000
SPEED = 40


class FastClock:
    """Exchange time running ``speed`` times faster than real time; ``sleep`` matches it."""

    def __init__(self, speed: float, start_ms: int = START_MS) -> None:
        self.speed, self.start_ms, self._t0 = speed, start_ms, time.monotonic()

    def now_ms(self) -> int:
        return self.start_ms + int((time.monotonic() - self._t0) * 1000 * self.speed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)


@dataclass
class Sent:
    """One request as it left a client, and its answer."""

    at_ms: int
    route: str
    status: int = 0
    retry_after_ms: int = 0


class Recorder(httpx.AsyncBaseTransport):
    """Records when each request leaves (by ``clock``) and how it was answered."""

    def __init__(self, inner: httpx.AsyncBaseTransport, clock: Any) -> None:
        self.inner, self.clock = inner, clock
        self.sent: list[Sent] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        entry = Sent(self.clock.now_ms(), f"{request.method} {request.url.path}")
        self.sent.append(entry)
        response = await self.inner.handle_async_request(request)
        entry.status = response.status_code
        entry.retry_after_ms = int(response.headers.get("retry-after", "0")) * 1000
        return response

    def statuses(self) -> set[int]:
        return {s.status for s in self.sent}


@dataclass
class Rig:
    """A simulator with small limits, a pool of budgeted clients, and a rogue without one."""

    app: Any
    clock: FastClock
    recorder: Recorder
    pool: ClientPool
    rogue: httpx.AsyncClient
    clients: list[ExchangeClient] = field(default_factory=list)

    async def accounts(self, n: int) -> list[ExchangeClient]:
        for _ in range(n):
            creds = (await self.rogue.post("/sim/accounts", json={})).json()
            account_id = len(self.clients) + 1
            self.clients.append(self.pool.get(account_id, creds["api_key"], creds["api_secret"]))
        return self.clients[-n:]

    async def burn(self, weight: int) -> None:
        """Spend ``weight`` of the IP's budget behind the clients' backs (10 per request)."""
        for _ in range(weight // 10):
            answer = await self.rogue.get("/fapi/v1/premiumIndex")
            assert answer.status_code == 200, answer.text


async def _rig(limits: Any, budget: BudgetConfig) -> AsyncIterator[Rig]:
    clock = FastClock(SPEED)
    app = simulator_app.create_app(clock=clock, limits=limits)
    recorder = Recorder(httpx.ASGITransport(app=app), clock)
    async with (
        httpx.AsyncClient(transport=recorder, base_url=BASE) as http,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as rogue,
    ):
        pool = ClientPool(BASE, http, clock, budget=budget, sleep=clock.sleep)
        answer = await rogue.post("/sim/mark-price", json={"symbol": "BTCUSDT", "price": "60000"})
        assert answer.status_code == 200
        yield Rig(app, clock, recorder, pool, rogue)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    """IP weight limited to 100 per minute, on the simulator and in the clients' budget."""
    async for made in _rig(LimitConfig(ip_weight_per_minute=100),
                           BudgetConfig(ip_weight=Limit(100, 60_000))):
        yield made


def _minutes(sent: list[Sent]) -> set[int]:
    return {s.at_ms // 60_000 for s in sent}


async def test_a_burst_from_many_accounts_stays_under_the_ip_limit(rig: Rig) -> None:
    """Eight accounts asking for 120 weight at once on a 100/min IP: everything succeeds, the
    clients wait for the next minute instead of drawing a 429."""
    clients = await rig.accounts(8)
    results = await asyncio.gather(*(c.balance() for c in clients for _ in range(3)))
    assert all(rows and rows[0].asset == "USDT" for rows in results)
    assert rig.recorder.statuses() == {200}
    assert len(_minutes(rig.recorder.sent)) >= 2
    assert rig.pool.ip_budget.used()[0] <= 90


async def test_a_429_stops_every_account_until_it_passes_and_no_418_follows(rig: Rig) -> None:
    """When the IP is exhausted behind the clients' backs, the first 429 blocks the shared
    budget: no account sends anything until Retry-After has passed, the refused request is sent
    once more after it, and the exchange never has a reason to answer 418."""
    clients = await rig.accounts(6)
    await rig.burn(100)
    results = await asyncio.gather(*(c.balance() for c in clients))
    assert all(rows for rows in results)
    sent = rig.recorder.sent
    assert 418 not in rig.recorder.statuses()
    refused = [s for s in sent if s.status == 429]
    assert len(refused) == 1 and refused[0].retry_after_ms > 0
    first = refused[0]
    later = sent[sent.index(first) + 1:]
    assert len(later) == 6 and all(s.status == 200 for s in later)
    assert min(s.at_ms for s in later) >= first.at_ms + first.retry_after_ms
    limits = rig.app.state.runtime.limits
    assert limits.banned_until("127.0.0.1", rig.clock.now_ms()) is None


async def test_usage_headers_resync_the_shared_budget(rig: Rig) -> None:
    """Weight spent by someone else shows in X-MBX-USED-WEIGHT-1M; the budget takes it in, so
    a following burst waits for the next minute rather than running into a 429."""
    (first, *others) = await rig.accounts(8)
    await rig.burn(60)
    await first.server_time()
    assert rig.pool.ip_budget.used() == [61]
    await asyncio.gather(*(c.balance() for c in others))
    assert rig.recorder.statuses() == {200}
    assert len(_minutes(rig.recorder.sent)) >= 2


async def test_each_account_spends_its_own_order_budget() -> None:
    """Orders count per account (5 per 10 s here): a busy account is paced across windows
    without a -1015, and another account's orders are not held up behind it."""
    budget = BudgetConfig(orders=(Limit(5, 10_000), Limit(1000, 60_000)))
    async for rig in _rig(LimitConfig(orders_per_10s=5, orders_per_minute=1000), budget):
        busy, quiet = await rig.accounts(2)

        async def place(client: ExchangeClient, name: str, n: int) -> None:
            for i in range(n):
                await client.place_order("BTCUSDT", "BUY", "LIMIT", Decimal("0.010"),
                                         Decimal("59000"), client_order_id=f"{name}-{i}")

        await asyncio.gather(place(busy, "busy", 9), place(quiet, "quiet", 2))
        orders = [s for s in rig.recorder.sent if s.route == "POST /fapi/v1/order"]
        assert {s.status for s in orders} == {200}
        assert orders[-1].at_ms - orders[0].at_ms >= 20_000  # 4 per 10 s (90 %): 3 windows
        assert busy.order_budget.used()[0] <= 4 and quiet.order_budget.used()[0] <= 2
        open_orders = await quiet.open_orders("BTCUSDT")
        assert len(open_orders) == 2


# --- scripted exchange: headers, bans and priority in detail ------------------------------------


@dataclass
class Script:
    """Answers per route (the last one repeats); records the clock at each request."""

    clock: ManualClock
    replies: dict[str, list[httpx.Response]] = field(default_factory=dict)
    log: list[tuple[int, str]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        route = f"{request.method} {request.url.path}"
        self.log.append((self.clock.now_ms(), route))
        queue = self.replies[route]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def sent_at(self, route: str) -> list[int]:
        return [at for at, r in self.log if r == route]


def _ok(body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers)


def _refused(status: int, code: int, msg: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "msg": msg}, headers=headers)


ORDER = {"orderId": 1, "clientOrderId": "c", "symbol": "BTCUSDT", "status": "NEW",
         "type": "LIMIT", "side": "BUY", "origQty": "0.010", "price": "59000"}


@pytest.fixture
def script() -> Script:
    return Script(ManualClock(START_MS))


@pytest.fixture
async def pair(script: Script) -> AsyncIterator[tuple[ExchangeClient, ExchangeClient]]:
    """Two accounts' clients sharing one IP budget; waiting advances the manual clock."""

    async def sleep(seconds: float) -> None:
        script.clock.advance(max(1, round(seconds * 1000)))

    shared = ip_budget(BudgetConfig(), script.clock, sleep)
    transport = httpx.MockTransport(script.handle)
    async with httpx.AsyncClient(transport=transport) as http:
        yield tuple(  # type: ignore[misc]
            ExchangeClient(BASE, f"key-{n}", "secret", http=http, clock=script.clock,
                           sleep=sleep, ip_budget=shared) for n in (1, 2))


async def test_retry_after_blocks_every_client_behind_the_ip(
    script: Script, pair: tuple[ExchangeClient, ExchangeClient]
) -> None:
    """A 429 -1003 with Retry-After: 7 is retried once after 7 s; a second 429 is raised, and
    the other account's next request also leaves only once the new Retry-After has passed."""
    first, second = pair
    limited = _refused(429, -1003, "Too many requests.", **{"Retry-After": "7"})
    script.replies["GET /fapi/v3/balance"] = [limited, limited, _ok([])]
    start = script.clock.now_ms()
    with pytest.raises(RateLimited):
        await first.balance()
    assert script.sent_at("GET /fapi/v3/balance") == [start, start + 7000]
    assert second.ip_budget is first.ip_budget and second.ip_budget.blocked_for_ms() == 7000
    await second.balance()
    assert script.sent_at("GET /fapi/v3/balance")[-1] == start + 14_000


async def test_a_418_ban_is_raised_and_respected_until_its_end(
    script: Script, pair: tuple[ExchangeClient, ExchangeClient]
) -> None:
    """418 "banned until <ms>" is not retried; nothing is sent from the IP until then."""
    first, second = pair
    until = script.clock.now_ms() + 125_000
    script.replies["GET /fapi/v3/balance"] = [
        _refused(418, -1003, f"Way too many requests; IP(1.2.3.4) banned until {until}."),
        _ok([])]
    with pytest.raises(RateLimited) as caught:
        await first.balance()
    assert caught.value.status == 418 and caught.value.retry_after_s == 125.0
    await second.balance()
    assert script.sent_at("GET /fapi/v3/balance")[-1] >= until


async def test_an_order_rate_429_blocks_only_that_account(
    script: Script, pair: tuple[ExchangeClient, ExchangeClient]
) -> None:
    """-1015 "... per TEN_SECONDS" (no Retry-After) pauses that account's orders for 10 s and
    retries; the IP and the other account's orders are not held up."""
    first, second = pair
    script.replies["POST /fapi/v1/order"] = [
        _refused(429, -1015, "Too many new orders; current limit is 300 orders per TEN_SECONDS."),
        _ok(ORDER)]
    start = script.clock.now_ms()
    await first.place_order("BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("59000"),
                            client_order_id="c")
    assert script.sent_at("POST /fapi/v1/order") == [start, start + 10_000]
    assert first.ip_budget.blocked_for_ms() == 0
    assert first.order_budget.blocked_for_ms() == 0  # the 10 s have passed
    script.clock.set(start)
    first.order_budget.block(10)
    await second.place_order("BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("59000"),
                             client_order_id="c")
    assert script.sent_at("POST /fapi/v1/order")[-1] == start


async def test_order_count_headers_resync_the_account_budget(
    script: Script, pair: tuple[ExchangeClient, ExchangeClient]
) -> None:
    """X-MBX-ORDER-COUNT-10S: 290 (of 300) fills this account's 10 s budget: its next order waits
    for the exchange's next 10 s window."""
    first, _ = pair
    start = script.clock.now_ms()
    script.replies["POST /fapi/v1/order"] = [_ok(ORDER, **{"X-MBX-ORDER-COUNT-10S": "290"})]
    for _ in range(2):
        await first.place_order("BTCUSDT", "BUY", "LIMIT", Decimal("0.01"), Decimal("59000"),
                                client_order_id="c")
    first_at, second_at = script.sent_at("POST /fapi/v1/order")
    assert first_at == start and second_at == (start // 10_000 + 1) * 10_000
    assert first.order_counts == (290, None)


async def test_cancels_may_use_the_reserve_ordinary_requests_wait(
    script: Script, pair: tuple[ExchangeClient, ExchangeClient]
) -> None:
    """At 2200 of 2400 weight (over the 90 % for ordinary requests, under the 95 % for
    priority ones) a cancel leaves at once while a balance query waits for the next minute."""
    first, second = pair
    start = script.clock.now_ms()
    script.replies["GET /fapi/v1/time"] = [
        _ok({"serverTime": start}, **{"X-MBX-USED-WEIGHT-1M": "2200"})]
    script.replies["DELETE /fapi/v1/order"] = [_ok({**ORDER, "status": "CANCELED"})]
    script.replies["GET /fapi/v3/balance"] = [_ok([])]
    await first.server_time()
    await second.cancel_order("BTCUSDT", client_order_id="c")
    assert script.sent_at("DELETE /fapi/v1/order") == [start]
    await second.balance()
    assert script.sent_at("GET /fapi/v3/balance") == [(start // 60_000 + 1) * 60_000]


async def test_a_time_resync_aligns_the_budget_windows_with_the_exchange(
    script: Script, pair: tuple[ExchangeClient, ExchangeClient]
) -> None:
    """After -1021 the measured server-time offset also places the budgets' fixed windows on
    the exchange's clock."""
    first, _ = pair
    server_now = script.clock.now_ms() + 7000
    script.replies["GET /fapi/v3/balance"] = [
        _refused(400, -1021, "Timestamp for this request is outside of the recvWindow."), _ok([])]
    script.replies["GET /fapi/v1/time"] = [_ok({"serverTime": server_now})]
    assert await first.balance() == []
    assert first.time_offset_ms == 7000
    assert first.ip_budget.offset_ms == first.order_budget.offset_ms == 7000


async def test_a_wait_longer_than_max_wait_is_refused_at_once() -> None:
    """With ``max_wait_s`` the budget raises RateLimited (saying how long) instead of waiting."""
    clock = ManualClock(START_MS)
    budget = ip_budget(BudgetConfig(ip_weight=Limit(10, 60_000), max_wait_s=5), clock)
    await budget.acquire((9,))
    with pytest.raises(RateLimited) as caught:
        await budget.acquire((1,))
    assert caught.value.retry_after_s == 60.0


async def test_weightless_requests_are_not_queued_behind_heavy_ones() -> None:
    """An order (0 IP weight) leaves at once while a heavy query waits for the IP's window;
    only a ban holds it back."""
    clock = FastClock(SPEED)
    budget = ip_budget(BudgetConfig(ip_weight=Limit(100, 60_000)), clock, clock.sleep)
    await budget.acquire((90,))
    heavy = asyncio.create_task(budget.acquire((40,)))
    await asyncio.sleep(0)
    await asyncio.wait_for(budget.acquire((0,)), timeout=0.05)
    assert not heavy.done()
    heavy.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await heavy
    budget.block(10)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(budget.acquire((0,)), timeout=0.005)
