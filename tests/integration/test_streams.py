"""The streams layer against a real simulator: listenKeys, sockets, reconnects, the bus.

A ``SimulatorServer`` on a free port runs on a ``ManualClock`` shared with the exchange clients,
so listenKey lifetimes are driven by ``/sim/clock/advance`` rather than by waiting. Every stream
publishes to a real ``EmbeddedBus``; what the bus holds is compared with what a second,
independent socket on the same listenKey saw the simulator send.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.polling import until
from websockets.asyncio.client import ClientConnection, connect

from tradewire.bus.base import Envelope, Message
from tradewire.bus.embedded import EmbeddedBus
from tradewire.clock import ManualClock
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.event_ids import event_id
from tradewire.exchange.wire_rest import OrderResponse
from tradewire.simulator import Engine, SimulatorServer
from tradewire.streams.account_stream import AccountStream, Publisher
from tradewire.streams.directory import AccountSpec
from tradewire.streams.manager import StreamsManager
from tradewire.streams.options import StreamOptions
from tradewire.streams.publisher import BatchPublisher
from tradewire.streams.session import AccountRef

pytestmark = pytest.mark.timeout(20)

BTC = "BTCUSDT"
HOUR_MS = 60 * 60 * 1000
ORDER_EVENTS = ["ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "TRADE_LITE", "ORDER_TRADE_UPDATE"]
ALICE = AccountRef(account_id=7, user_id=42)
BOB = AccountRef(account_id=8, user_id=43)


class Requests:
    """Requests the shared HTTP client got an answer to (method, path), in order."""

    def __init__(self) -> None:
        self.answered: list[tuple[str, str]] = []

    async def record(self, response: httpx.Response) -> None:
        self.answered.append((response.request.method, response.request.url.path))

    def count(self, method: str, path: str) -> int:
        return self.answered.count((method, path))


class Trader:
    """One simulator account and its real ``ExchangeClient``."""

    _ids = itertools.count(1)

    def __init__(self, api_key: str, client: ExchangeClient) -> None:
        self.api_key = api_key
        self.client = client

    async def market_buy(self) -> OrderResponse:
        return await self.client.place_order(
            BTC, "BUY", "MARKET", Decimal("0.010"), client_order_id=f"t-{next(self._ids)}"
        )


class Exchange:
    """The running simulator, its admin surface, and the HTTP client every trader shares."""

    def __init__(self, sim: SimulatorServer, http: httpx.AsyncClient, clock: ManualClock,
                 requests: Requests) -> None:
        self.sim, self.http, self.clock, self.requests = sim, http, clock, requests

    async def admin(self, path: str, **body: Any) -> Any:
        response = await self.http.post(f"{self.sim.base_url}{path}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def new_trader(self) -> Trader:
        creds = await self.admin("/sim/accounts", balance="10000")
        client = ExchangeClient(self.sim.base_url, creds["api_key"], creds["api_secret"],
                                http=self.http, clock=self.clock)
        return Trader(creds["api_key"], client)

    async def account(self, trader: Trader) -> dict[str, Any]:
        response = await self.http.get(f"{self.sim.base_url}/sim/accounts/{trader.api_key}")
        body: dict[str, Any] = response.json()
        return body

    async def listen_key(self, trader: Trader) -> str:
        key = (await self.account(trader))["listen_key"]
        assert key, "the account has no active listenKey"
        return str(key)

    async def listening(self, trader: Trader) -> int:
        return int((await self.account(trader))["listening"])

    async def advance(self, ms: int) -> None:
        await self.admin("/sim/clock/advance", ms=ms)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def exchange(clock: ManualClock) -> AsyncIterator[Exchange]:
    requests = Requests()
    sim = SimulatorServer(engine=Engine(clock))
    async with (
        sim,
        httpx.AsyncClient(timeout=5, event_hooks={"response": [requests.record]}) as http,
    ):
        exchange = Exchange(sim, http, clock, requests)
        await exchange.admin("/sim/mark-price", symbol=BTC, price="60000")
        yield exchange


@pytest.fixture
async def alice(exchange: Exchange) -> Trader:
    return await exchange.new_trader()


@pytest.fixture
def bus() -> EmbeddedBus:
    return EmbeddedBus()


def stream_of(exchange: Exchange, trader: Trader, publish: Publisher,
              account: AccountRef = ALICE, **options: Any) -> AccountStream:
    return AccountStream(account, trader.client, exchange.sim.ws_url, publish, exchange.clock,
                         **options)


@contextlib.asynccontextmanager
async def running(stream: AccountStream) -> AsyncIterator[asyncio.Task[None]]:
    """Run the stream until the block ends; entered once its socket is connected."""
    task = asyncio.create_task(stream.run())
    try:
        async with asyncio.timeout(5):
            await stream.connected.wait()
        yield task
    finally:
        stream.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Witness:
    """An independent socket on a listenKey: what the simulator sent, frame by frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def take(self, count: int) -> list[dict[str, Any]]:
        return [json.loads(await asyncio.wait_for(self.ws.recv(), 5)) for _ in range(count)]


@contextlib.asynccontextmanager
async def witness(exchange: Exchange, listen_key: str) -> AsyncIterator[Witness]:
    async with connect(f"{exchange.sim.ws_url}/private/ws/{listen_key}") as ws:
        yield Witness(ws)


async def take(bus: EmbeddedBus, count: int, timeout_s: float = 5.0) -> list[Envelope]:
    """The next ``count`` envelopes on the bus, in publication order (all partitions)."""
    messages: list[Message] = []
    async with asyncio.timeout(timeout_s):
        while len(messages) < count:
            messages += await bus.fetch("test", count - len(messages), 50)
    for message in messages:
        await bus.ack(message)
    messages.sort(key=lambda message: int(message.id.split("-")[0]))
    return [Envelope.decode(message.body) for message in messages]


async def assert_nothing_more(bus: EmbeddedBus) -> None:
    """No further envelope shows up on the bus."""
    assert await bus.fetch("test", 1, 100) == []


def kinds(envelopes: list[Envelope]) -> list[str]:
    return [str(envelope.event["e"]) for envelope in envelopes]


# --- publishing --------------------------------------------------------------------------------


async def test_every_event_of_an_order_reaches_the_bus_as_an_envelope(
    exchange: Exchange, alice: Trader, bus: EmbeddedBus
) -> None:
    """Each event the simulator sends for a market order is published once, verbatim and in
    order, in an envelope naming the account, the user and the symbol, with an event id derived
    from the exchange's own ids."""
    stream = stream_of(exchange, alice, bus.publish)
    async with running(stream):
        async with witness(exchange, await exchange.listen_key(alice)) as sent:
            order = await alice.market_buy()
            frames = await sent.take(4)
        envelopes = await take(bus, 4)
        await assert_nothing_more(bus)

    assert [e.event for e in envelopes] == frames
    assert kinds(envelopes) == ORDER_EVENTS
    assert {(e.account_id, e.user_id, e.symbol) for e in envelopes} == {(7, 42, BTC)}
    assert {e.received_ms for e in envelopes} == {exchange.clock.now_ms()}
    ids = [e.event_id for e in envelopes]
    assert ids == [event_id(ALICE.account_id, frame) for frame in frames]
    assert len(set(ids)) == 4
    assert ids[0].startswith(f"7:otu:{BTC}:{order.orderId}:NEW:NEW:")
    assert ids[3].startswith(f"7:otu:{BTC}:{order.orderId}:TRADE:FILLED:")
    assert stream.published == 4 and stream.reconnects == 0


async def test_a_publish_failure_delays_the_event_but_never_loses_or_repeats_it(
    exchange: Exchange, alice: Trader, bus: EmbeddedBus
) -> None:
    """When publishing fails twice and then succeeds, the event is published once, after the
    failures, and the events behind it follow in order."""
    attempts: list[str] = []
    failures = 2

    async def flaky_publish(envelope: Envelope) -> str:
        nonlocal failures
        attempts.append(envelope.event_id)
        if failures:
            failures -= 1
            raise ConnectionError("bus briefly unavailable")
        return await bus.publish(envelope)

    stream = stream_of(exchange, alice, flaky_publish)
    async with running(stream):
        async with witness(exchange, await exchange.listen_key(alice)) as sent:
            await alice.market_buy()
            frames = await sent.take(4)
        envelopes = await take(bus, 4)
        await assert_nothing_more(bus)

    assert [e.event for e in envelopes] == frames
    ids = [e.event_id for e in envelopes]
    assert attempts == [ids[0], ids[0], ids[0], ids[1], ids[2], ids[3]]
    assert stream.published == 4 and stream.reconnects == 0


async def test_a_frame_that_is_not_json_is_published_as_malformed(
    exchange: Exchange, alice: Trader, bus: EmbeddedBus
) -> None:
    """A text frame that is not JSON becomes a ``MALFORMED`` event carrying the raw text, and
    the socket goes on delivering the events after it."""
    stream = stream_of(exchange, alice, bus.publish)
    async with running(stream):
        key = await exchange.listen_key(alice)
        [socket] = [s for s in exchange.sim.runtime.hub.sessions if key in s.filters]
        socket.queue.put_nowait("this is {not json")
        [malformed] = await take(bus, 1)
        await alice.market_buy()
        later = await take(bus, 4)

    assert malformed.event == {"e": "MALFORMED", "reason": "not JSON", "raw": "this is {not json"}
    assert (malformed.account_id, malformed.user_id, malformed.symbol) == (7, 42, "")
    assert malformed.event_id == event_id(ALICE.account_id, malformed.event)
    assert kinds(later) == ORDER_EVENTS
    assert stream.reconnects == 0


async def test_a_json_frame_that_is_not_an_event_is_published_and_the_stream_goes_on(
    exchange: Exchange, alice: Trader, bus: EmbeddedBus
) -> None:
    """A JSON object that is not a user-stream event (no ``e``) still reaches the bus (for the
    dead-letter queue), and the events after it are delivered."""
    stream = stream_of(exchange, alice, bus.publish)
    async with running(stream) as task:
        key = await exchange.listen_key(alice)
        [socket] = [s for s in exchange.sim.runtime.hub.sessions if key in s.filters]
        socket.queue.put_nowait('{"unexpected":"shape"}')
        await until(lambda: stream.published >= 1 or task.done(), timeout_s=2)
        assert not task.done(), "the stream task ended"
        [odd] = await take(bus, 1)
        await alice.market_buy()
        later = await take(bus, 4)

    assert "unexpected" in json.dumps(odd.event)
    assert kinds(later) == ORDER_EVENTS


# --- connection lifecycle ----------------------------------------------------------------------


async def test_the_stream_reconnects_after_the_exchange_drops_its_socket(
    exchange: Exchange, alice: Trader, bus: EmbeddedBus
) -> None:
    """When the exchange closes the socket, the stream opens a new one and the events of a
    later order still reach the bus."""
    hub = exchange.sim.runtime.hub
    stream = stream_of(exchange, alice, bus.publish)
    async with running(stream):
        old_sockets = set(hub.sessions)
        dropped = await exchange.admin("/sim/faults/drop-connections", api_key=alice.api_key)
        assert dropped == {"dropped": 1}

        async def reconnected() -> bool:
            current = set(hub.sessions)
            new = current - old_sockets
            return bool(new) and not current & old_sockets and await exchange.listening(alice) == 1

        await until(reconnected)
        await until(stream.connected.is_set)
        await alice.market_buy()
        envelopes = await take(bus, 4)
        await assert_nothing_more(bus)

    assert kinds(envelopes) == ORDER_EVENTS
    assert {(e.account_id, e.symbol) for e in envelopes} == {(7, BTC)}
    assert stream.reconnects == 1


async def test_an_expired_listen_key_is_published_and_replaced(
    exchange: Exchange, alice: Trader, bus: EmbeddedBus
) -> None:
    """Sixty minutes without keepalive expire the listenKey: the ``listenKeyExpired`` event is
    published, the stream takes a new key and subscribes to it, and a later order's events
    reach the bus."""
    stream = stream_of(exchange, alice, bus.publish)
    async with running(stream):
        old_key = await exchange.listen_key(alice)
        await exchange.advance(HOUR_MS + 1)
        [expired] = await take(bus, 1)

        async def rekeyed() -> bool:
            account = await exchange.account(alice)
            return account["listen_key"] not in (None, old_key) and account["listening"] == 1

        await until(rekeyed)
        new_key = await exchange.listen_key(alice)
        await alice.market_buy()
        envelopes = await take(bus, 4)
        await assert_nothing_more(bus)

    now = exchange.clock.now_ms()
    assert expired.event == {"e": "listenKeyExpired", "E": now, "listenKey": old_key}
    assert expired.event_id == f"7:lke:{old_key}:{now}"
    assert (expired.account_id, expired.user_id) == (7, 42)
    assert new_key != old_key
    assert exchange.requests.count("POST", "/fapi/v1/listenKey") == 2
    assert kinds(envelopes) == ORDER_EVENTS


async def test_keepalives_extend_the_listen_key_past_its_first_hour(
    exchange: Exchange, alice: Trader, bus: EmbeddedBus
) -> None:
    """With keepalives running, the listenKey outlives the hour after its creation: no
    ``listenKeyExpired`` arrives, the key is unchanged, and events keep flowing on it."""
    stream = stream_of(exchange, alice, bus.publish, keepalive_s=0.1)
    async with running(stream):
        key = await exchange.listen_key(alice)
        await exchange.advance(50 * 60 * 1000)
        seen = exchange.requests.count("PUT", "/fapi/v1/listenKey")
        await until(lambda: exchange.requests.count("PUT", "/fapi/v1/listenKey") > seen)
        await exchange.advance(20 * 60 * 1000)  # 70 minutes after the key was created
        await alice.market_buy()
        envelopes = await take(bus, 4)
        await assert_nothing_more(bus)
        account = await exchange.account(alice)

    assert kinds(envelopes) == ORDER_EVENTS, "no listenKeyExpired before the order's events"
    assert (account["listen_key"], account["listening"]) == (key, 1)
    assert exchange.requests.count("POST", "/fapi/v1/listenKey") == 1
    assert stream.reconnects == 0


# --- the manager -------------------------------------------------------------------------------


class Listed:
    """An in-memory ``AccountDirectory`` listing some of the traders."""

    def __init__(self) -> None:
        self.accounts: list[tuple[AccountRef, ExchangeClient]] = []

    async def listing(self) -> list[AccountSpec]:
        return [AccountSpec(ref.account_id, ref.user_id, "v1") for ref, _ in self.accounts]

    async def aclose(self) -> None:
        return None

    def client(self, spec: AccountSpec) -> ExchangeClient:
        return next(client for ref, client in self.accounts if ref.account_id == spec.account_id)


@pytest.mark.parametrize("keys_per_connection", [1, 200])
async def test_the_manager_starts_streams_for_new_accounts_and_stops_removed_ones(
    exchange: Exchange, alice: Trader, bus: EmbeddedBus, keys_per_connection: int
) -> None:
    """An account that appears in the listing starts streaming, one no longer listed stops
    (in both modes: one socket per account, and many keys per ``/private/stream`` socket)."""
    bob = await exchange.new_trader()
    listed = Listed()
    listed.accounts = [(ALICE, alice.client)]
    options = StreamOptions(keys_per_connection=keys_per_connection, refresh_s=0.05,
                            tick_s=0.02)
    manager = StreamsManager(listed, BatchPublisher(bus.publish_many), exchange.sim.ws_url,
                             exchange.clock, options=options)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        await manager.wait_streaming(timeout_s=5, at_least=1)
        assert await exchange.listening(alice) == 1

        listed.accounts = [(BOB, bob.client)]
        await until(lambda: _listening_is(exchange, alice, 0))
        await until(lambda: _listening_is(exchange, bob, 1))
        status = await manager.wait_streaming(timeout_s=5, at_least=1)
        assert status["wanted"] == 1

        await bob.market_buy()
        envelopes = await take(bus, 4)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    assert kinds(envelopes) == ORDER_EVENTS
    assert {(e.account_id, e.user_id) for e in envelopes} == {(8, 43)}
    assert manager.status()["wanted"] == 0


async def _listening_is(exchange: Exchange, trader: Trader, count: int) -> bool:
    return await exchange.listening(trader) == count
