"""The official Binance SDK (``binance-sdk-derivatives-trading-usds-futures``, unmodified, only its
base URLs pointed at a real ``SimulatorServer``) trades, reads and streams against the simulator.

A third-party client checks the simulator's wire format independently of our own client: it
signs its own requests and parses every answer and event with its own models. Its REST client
is synchronous (``requests``), so calls run in a thread while the server runs in the loop.
"""

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

try:
    from binance_common.configuration import (
        ConfigurationRestAPI,
        ConfigurationWebSocketStreams,
    )
    from binance_sdk_derivatives_trading_usds_futures import DerivativesTradingUsdsFutures
    from binance_sdk_derivatives_trading_usds_futures.rest_api.models import (
        NewAlgoOrderAlgoTypeEnum,
        NewAlgoOrderSideEnum,
        NewAlgoOrderTypeEnum,
        NewOrderNewOrderRespTypeEnum,
        NewOrderSideEnum,
        NewOrderTypeEnum,
    )
except ImportError:  # not installed: a dev dependency, so CI must have it
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("binance-sdk-derivatives-trading-usds-futures is not installed",
                allow_module_level=True)

from tradewire.simulator import SimulatorServer

QTY = 0.01


class Venue:
    """A simulator server, one funded account on it, and the SDK configured for both."""

    def __init__(self, sim: SimulatorServer, api_key: str, api_secret: str) -> None:
        self.sim = sim
        self.api_key = api_key
        self.sdk = DerivativesTradingUsdsFutures(
            config_rest_api=ConfigurationRestAPI(
                api_key=api_key, api_secret=api_secret, base_path=sim.base_url, timeout=10_000,
                retries=0),
            config_ws_streams=ConfigurationWebSocketStreams(stream_url=sim.ws_url),
        )

    async def rest(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        """One SDK REST call (blocking) off the loop; its parsed answer."""
        response = await asyncio.to_thread(call, **kwargs)
        return response.data()

    async def account(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.sim.base_url) as admin:
            answer: dict[str, Any] = (await admin.get(f"/sim/accounts/{self.api_key}")).json()
        return answer


@pytest.fixture
async def venue() -> AsyncIterator[Venue]:
    async with SimulatorServer() as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as admin:
            creds = (await admin.post("/sim/accounts", json={"balance": "10000"})).json()
            mark = {"symbol": "BTCUSDT", "price": "60000"}
            assert (await admin.post("/sim/mark-price", json=mark)).status_code == 200
        yield Venue(sim, creds["api_key"], creds["api_secret"])


async def test_sdk_signs_and_places_a_market_order(venue: Venue) -> None:
    """The SDK's HMAC signature is accepted and the MARKET order fills into a position."""
    rest = venue.sdk.rest_api
    order = await venue.rest(
        rest.new_order, symbol="BTCUSDT", side=NewOrderSideEnum.BUY.value,
        type=NewOrderTypeEnum.MARKET.value, quantity=QTY,
        new_order_resp_type=NewOrderNewOrderRespTypeEnum.RESULT.value)
    assert (order.status, order.symbol, order.executed_qty) == ("FILLED", "BTCUSDT", "0.010")
    positions = (await venue.account())["positions"]
    assert [p["positionAmt"] for p in positions] == ["0.010"]


async def test_sdk_places_and_cancels_a_stop_market_algo_order(venue: Venue) -> None:
    """STOP_MARKET goes through the algo endpoints; the SDK parses placement, cancel and query."""
    rest = venue.sdk.rest_api
    placed = await venue.rest(
        rest.new_algo_order, algo_type=NewAlgoOrderAlgoTypeEnum.CONDITIONAL.value,
        symbol="BTCUSDT", side=NewAlgoOrderSideEnum.SELL.value,
        type=NewAlgoOrderTypeEnum.STOP_MARKET.value, quantity=QTY, trigger_price=58000,
        client_algo_id="sdk-sl")
    assert (placed.algo_status, placed.order_type, placed.client_algo_id) == (
        "NEW", "STOP_MARKET", "sdk-sl")
    assert len((await venue.account())["open_algo_orders"]) == 1
    canceled = await venue.rest(rest.cancel_algo_order, client_algo_id="sdk-sl")
    assert canceled.algo_id == placed.algo_id and canceled.code == "200"
    queried = await venue.rest(rest.query_algo_order, algo_id=placed.algo_id)
    assert queried.algo_status == "CANCELED"
    assert (await venue.account())["open_algo_orders"] == []


async def test_sdk_reads_positions_and_balances(venue: Venue) -> None:
    """v3 positionRisk and v3 balance parse into the SDK's models."""
    rest = venue.sdk.rest_api
    await venue.rest(rest.new_order, symbol="BTCUSDT", side=NewOrderSideEnum.BUY.value,
                     type=NewOrderTypeEnum.MARKET.value, quantity=QTY)
    (position,) = await venue.rest(rest.position_information_v3)
    assert (position.symbol, position.position_amt, position.position_side) == (
        "BTCUSDT", "0.010", "BOTH")
    (usdt,) = await venue.rest(rest.futures_account_balance_v3)
    assert usdt.asset == "USDT" and float(usdt.available_balance) < float(usdt.balance)


async def test_sdk_creates_and_keeps_alive_a_listen_key(venue: Venue) -> None:
    """USER_STREAM calls (key header, no signature): start returns the key, keepalive extends it."""
    rest = venue.sdk.rest_api
    started = await venue.rest(rest.start_user_data_stream)
    assert len(started.listen_key) == 64
    kept = await venue.rest(rest.keepalive_user_data_stream)
    assert kept.listen_key == started.listen_key
    assert (await venue.account())["listen_key"] == started.listen_key


async def test_sdk_receives_user_data_over_its_private_stream(venue: Venue) -> None:
    """The SDK subscribes the listenKey on /private/stream (SUBSCRIBE) and gets the order's
    ORDER_TRADE_UPDATE and ACCOUNT_UPDATE as parsed events."""
    rest, streams = venue.sdk.rest_api, venue.sdk.websocket_streams
    key = (await venue.rest(rest.start_user_data_stream)).listen_key
    received: list[str] = []

    async def subscribed() -> bool:
        return bool((await venue.account())["listening"] == 1)

    try:
        await streams.create_connection()
        handle = await streams.user_data(key)
        handle.on("message", lambda event: received.append(type(event.actual_instance).__name__))
        await _until(subscribed)
        await venue.rest(rest.new_order, symbol="BTCUSDT", side=NewOrderSideEnum.BUY.value,
                         type=NewOrderTypeEnum.MARKET.value, quantity=QTY)
        await _until(lambda: {"OrderTradeUpdate", "AccountUpdate"} <= set(received))
    finally:
        await streams.close_connection(close_session=True)


async def _until(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    """Poll ``check`` (sync, or an async lambda's coroutine) until it is true."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)
