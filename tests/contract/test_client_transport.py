"""ExchangeClient policy over a scripted transport (``httpx.MockTransport``): signing, time sync,
error mapping, rate-limit headers and the unknown-outcome placement rule."""

import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from tradewire.clock import ManualClock
from tradewire.errors import (
    InvalidInput,
    OrderRejected,
    RateLimited,
    TimestampOutOfWindow,
    UnknownOutcome,
)
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.signing import sign

BASE = "https://fapi.test"
KEY = "test-api-key-123456"
SECRET = "test-secret-never-logged"
Reply = httpx.Response | Exception


class ScriptedExchange:
    """Answers queued per "METHOD /path"; records every request."""

    def __init__(self) -> None:
        self.replies: dict[str, deque[Reply]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, route: str, *replies: Reply) -> None:
        self.replies.setdefault(route, deque()).extend(replies)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.replies.get(f"{request.method} {request.url.path}")
        if not queue:
            return httpx.Response(404, json={"code": -5000, "msg": "no scripted reply"})
        reply = queue.popleft()
        if isinstance(reply, Exception):
            raise reply
        return reply

    def sent(self, route: str) -> list[dict[str, str]]:
        method, path = route.split(" ")
        return [
            dict(parse_qsl(r.url.query.decode()))
            for r in self.requests
            if r.method == method and r.url.path == path
        ]


def ok(body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(200, json=body, headers=headers)


def error(status: int, code: int, msg: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "msg": msg})


ORDER = {
    "orderId": 11,
    "clientOrderId": "tw-abc-entry",
    "symbol": "BTCUSDT",
    "status": "FILLED",
    "type": "MARKET",
    "side": "BUY",
    "origQty": "0.010",
    "executedQty": "0.010",
    "avgPrice": "60000",
}
ALGO = {
    "algoId": 21,
    "clientAlgoId": "tw-abc-sl",
    "orderType": "STOP_MARKET",
    "symbol": "BTCUSDT",
    "side": "SELL",
    "algoStatus": "NEW",
    "triggerPrice": "58000",
    "quantity": "0.010",
}
UNKNOWN = httpx.Response(
    503, json={"code": -1000, "msg": "Unknown error, please check your request or try again later."}
)
NOT_FOUND = error(400, -2013, "Order does not exist.")


@pytest.fixture
def exchange() -> ScriptedExchange:
    return ScriptedExchange()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_767_000_000_000)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
async def client(
    exchange: ScriptedExchange, clock: ManualClock, sleeps: list[float]
) -> AsyncIterator[ExchangeClient]:
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(int(seconds * 1000))

    http = httpx.AsyncClient(transport=httpx.MockTransport(exchange.handle), base_url=BASE)
    async with ExchangeClient(
        BASE, KEY, SECRET, http=http, clock=clock, sleep=fake_sleep, own_http=True
    ) as c:
        yield c


async def test_signed_requests_carry_key_timestamp_and_a_valid_last_signature(
    client: ExchangeClient, exchange: ScriptedExchange, clock: ManualClock
) -> None:
    """The signature is the HMAC of exactly the query string sent before it, and comes last."""
    exchange.on("POST /fapi/v1/order", ok(ORDER))
    await client.place_order(
        "BTCUSDT", "BUY", "MARKET", Decimal("0.0100"), client_order_id="tw-abc-entry"
    )
    (request,) = exchange.requests
    query = request.url.query.decode()
    unsigned, signature = query.rsplit("&signature=", 1)
    assert signature == sign(SECRET, unsigned) and request.content == b""
    assert request.headers["X-MBX-APIKEY"] == KEY
    params = dict(parse_qsl(query))
    assert list(params)[-3:] == ["timestamp", "recvWindow", "signature"]
    assert params["timestamp"] == str(clock.now_ms()) and params["recvWindow"] == "5000"
    assert params["quantity"] == "0.01" and params["newOrderRespType"] == "RESULT"
    assert "reduceOnly" not in params and "price" not in params


async def test_user_stream_calls_send_the_key_only(
    client: ExchangeClient, exchange: ScriptedExchange
) -> None:
    """listenKey endpoints carry the API key header and no timestamp or signature."""
    exchange.on("POST /fapi/v1/listenKey", ok({"listenKey": "k1"}))
    exchange.on("PUT /fapi/v1/listenKey", ok({"listenKey": "k1"}))
    exchange.on("DELETE /fapi/v1/listenKey", ok({}))
    assert await client.new_listen_key() == "k1"
    assert await client.keepalive_listen_key() == "k1"
    await client.close_listen_key()
    for request in exchange.requests:
        assert request.headers["X-MBX-APIKEY"] == KEY and request.url.query == b""


async def test_a_2xx_body_nested_too_deeply_is_an_unknown_outcome(
    client: ExchangeClient, exchange: ScriptedExchange
) -> None:
    """A success answer json cannot read (nesting past its recursion limit) says the call may
    well have run: UnknownOutcome, as for any unreadable 2xx body."""
    exchange.on("POST /fapi/v1/listenKey",
                httpx.Response(200, content=b"[" * 5_000 + b"]" * 5_000))
    with pytest.raises(UnknownOutcome, match="unreadable response body"):
        await client.new_listen_key()


async def test_market_data_is_unkeyed_and_exchange_info_is_cached(
    client: ExchangeClient, exchange: ScriptedExchange
) -> None:
    """premiumIndex and exchangeInfo need no key; exchangeInfo is fetched once."""
    exchange.on("GET /fapi/v1/premiumIndex", ok({"symbol": "BTCUSDT", "markPrice": "60100.5"}))
    exchange.on("GET /fapi/v1/exchangeInfo", ok({"symbols": []}))
    assert await client.mark_price("BTCUSDT") == Decimal("60100.5")
    await client.exchange_info()
    await client.exchange_info()
    assert len(exchange.sent("GET /fapi/v1/exchangeInfo")) == 1
    assert all("X-MBX-APIKEY" not in r.headers for r in exchange.requests)


async def test_timestamp_rejection_resyncs_once_and_retries(
    client: ExchangeClient, exchange: ScriptedExchange, clock: ManualClock
) -> None:
    """-1021 re-syncs the server time and retries once with a corrected timestamp."""
    server_now = clock.now_ms() + 7000
    exchange.on("GET /fapi/v3/balance", error(400, -1021, "Timestamp outside recvWindow"), ok([]))
    exchange.on("GET /fapi/v1/time", ok({"serverTime": server_now}))
    assert await client.balance() == []
    first, second = exchange.sent("GET /fapi/v3/balance")
    assert int(second["timestamp"]) == server_now and client.time_offset_ms == 7000
    assert int(first["timestamp"]) == server_now - 7000


async def test_a_second_timestamp_rejection_is_raised(
    client: ExchangeClient, exchange: ScriptedExchange, clock: ManualClock
) -> None:
    """The re-sync happens once; a repeated -1021 surfaces as TimestampOutOfWindow."""
    rejection = error(400, -1021, "Timestamp outside recvWindow")
    exchange.on("GET /fapi/v3/balance", rejection, rejection)
    exchange.on("GET /fapi/v1/time", ok({"serverTime": clock.now_ms()}))
    with pytest.raises(TimestampOutOfWindow):
        await client.balance()


async def test_unknown_outcome_returns_the_order_that_did_land(
    client: ExchangeClient, exchange: ScriptedExchange, sleeps: list[float]
) -> None:
    """After a 503 "Unknown error", the order is looked up by client id; found, it is not resent."""
    exchange.on("POST /fapi/v1/order", UNKNOWN)
    exchange.on("GET /fapi/v1/order", ok(ORDER))
    placed = await client.place_order(
        "BTCUSDT", "BUY", "MARKET", Decimal("0.01"), client_order_id="tw-abc-entry"
    )
    assert placed.orderId == 11
    assert len(exchange.sent("POST /fapi/v1/order")) == 1
    assert exchange.sent("GET /fapi/v1/order")[0]["origClientOrderId"] == "tw-abc-entry"
    assert sleeps == [6.0]  # recvWindow + margin: the lost request can no longer run


async def test_unknown_outcome_not_found_is_retried_once_with_the_same_client_id(
    client: ExchangeClient, exchange: ScriptedExchange
) -> None:
    """A read timeout with no order behind it is retried exactly once, same client id."""
    exchange.on("POST /fapi/v1/order", httpx.ReadTimeout("slow"), ok(ORDER))
    exchange.on("GET /fapi/v1/order", NOT_FOUND)
    placed = await client.place_order(
        "BTCUSDT", "BUY", "MARKET", Decimal("0.01"), client_order_id="tw-abc-entry"
    )
    assert placed.status == "FILLED"
    posts = exchange.sent("POST /fapi/v1/order")
    assert [p["newClientOrderId"] for p in posts] == ["tw-abc-entry", "tw-abc-entry"]


async def test_retry_refused_as_duplicate_returns_the_existing_order(
    client: ExchangeClient, exchange: ScriptedExchange
) -> None:
    """If the retry meets -4116 (the first order exists after all), that order is returned."""
    exchange.on("POST /fapi/v1/order", UNKNOWN, error(400, -4116, "ClientOrderId is duplicated."))
    exchange.on("GET /fapi/v1/order", NOT_FOUND, ok(ORDER))
    placed = await client.place_order(
        "BTCUSDT", "BUY", "MARKET", Decimal("0.01"), client_order_id="tw-abc-entry"
    )
    assert placed.orderId == 11


async def test_a_second_unknown_outcome_is_raised_not_retried_again(
    client: ExchangeClient, exchange: ScriptedExchange
) -> None:
    """Two unknown outcomes in a row surface to the caller: at most two sends, ever."""
    exchange.on("POST /fapi/v1/order", UNKNOWN, httpx.ReadTimeout("slow"))
    exchange.on("GET /fapi/v1/order", NOT_FOUND)
    with pytest.raises(UnknownOutcome):
        await client.place_order(
            "BTCUSDT", "BUY", "MARKET", Decimal("0.01"), client_order_id="tw-abc-entry"
        )
    assert len(exchange.sent("POST /fapi/v1/order")) == 2


async def test_algo_placement_follows_the_same_rule(
    client: ExchangeClient, exchange: ScriptedExchange
) -> None:
    """An algo order whose placement timed out is found by clientAlgoId and not resent."""
    exchange.on("POST /fapi/v1/algoOrder", httpx.ReadTimeout("slow"))
    exchange.on("GET /fapi/v1/algoOrder", ok(ALGO))
    placed = await client.place_algo_order(
        "BTCUSDT",
        "SELL",
        "STOP_MARKET",
        Decimal("58000"),
        Decimal("0.010"),
        reduce_only=True,
        client_algo_id="tw-abc-sl",
    )
    assert placed.algoId == 21
    (post,) = exchange.sent("POST /fapi/v1/algoOrder")
    assert post["algoType"] == "CONDITIONAL" and post["triggerPrice"] == "58000"
    assert post["reduceOnly"] == "true" and post["workingType"] == "MARK_PRICE"
    assert exchange.sent("GET /fapi/v1/algoOrder")[0]["clientAlgoId"] == "tw-abc-sl"


async def test_rejections_are_not_retried(
    client: ExchangeClient, exchange: ScriptedExchange
) -> None:
    """A definite rejection is raised at once, with its code and message."""
    exchange.on("POST /fapi/v1/order", error(400, -2019, "Margin is insufficient."))
    with pytest.raises(OrderRejected, match="Margin is insufficient") as caught:
        await client.place_order("BTCUSDT", "BUY", "MARKET", Decimal("1"), client_order_id="x")
    assert caught.value.code == -2019 and len(exchange.requests) == 1


async def test_used_weight_and_bans_are_tracked(
    client: ExchangeClient, exchange: ScriptedExchange, clock: ManualClock
) -> None:
    """X-MBX-USED-WEIGHT-1M is exposed; a 418 ban says how long to wait."""
    exchange.on("GET /fapi/v1/openOrders", ok([], **{"X-MBX-USED-WEIGHT-1M": "41"}))
    await client.open_orders()
    assert client.used_weight == 41
    until = clock.now_ms() + 90_000
    ban = error(418, -1003, f"Way too many requests; IP(1.2.3.4) banned until {until}.")
    exchange.on("GET /fapi/v1/openOrders", ban)
    with pytest.raises(RateLimited) as caught:
        await client.open_orders("BTCUSDT")
    assert caught.value.retry_after_s == 90.0 and client.used_weight == 41


async def test_arguments_are_checked_before_sending(
    client: ExchangeClient, exchange: ScriptedExchange
) -> None:
    """Missing ids and contradictory algo sizes are refused locally."""
    with pytest.raises(InvalidInput):
        await client.cancel_order("BTCUSDT")
    with pytest.raises(InvalidInput):
        await client.get_algo_order()
    with pytest.raises(InvalidInput):
        await client.place_algo_order(
            "BTCUSDT",
            "SELL",
            "TAKE_PROFIT_MARKET",
            Decimal(1),
            Decimal(1),
            close_position=True,
            client_algo_id="x",
        )
    with pytest.raises(InvalidInput):
        await client.place_algo_order(
            "BTCUSDT", "SELL", "STOP_MARKET", Decimal(1), client_algo_id="x"
        )
    assert exchange.requests == []


async def test_the_secret_is_never_logged_nor_shown(
    client: ExchangeClient, exchange: ScriptedExchange, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither repr nor any log line (even at DEBUG, even on errors) contains the secret."""
    caplog.set_level(logging.DEBUG)
    exchange.on("POST /fapi/v1/order", UNKNOWN)
    exchange.on("GET /fapi/v1/order", ok(ORDER))
    await client.place_order(
        "BTCUSDT", "BUY", "MARKET", Decimal("0.01"), client_order_id="tw-abc-entry"
    )
    assert SECRET not in repr(client) and KEY not in repr(client)
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps([r.url.query.decode() for r in exchange.requests])


async def test_closing_a_client_leaves_a_shared_pool_open(exchange: ScriptedExchange) -> None:
    """Clients of many accounts share one HTTP pool: close() only closes it when owned."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(exchange.handle)) as http:
        await ExchangeClient(BASE, KEY, SECRET, http=http).close()
        assert not http.is_closed
        owner = ExchangeClient(BASE, KEY, SECRET, http=http, own_http=True)
        await owner.close()
        assert http.is_closed
