"""REST response structs and error mapping, checked against ``tests/fixtures/wire/rest_*.json``."""

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import tradewire.errors as errors
from tradewire.errors import PermanentError
from tradewire.exchange.error_map import error_from_response, error_from_transport
from tradewire.exchange.wire import (
    AlgoCancelResponse,
    AlgoOrderResponse,
    ApiError,
    Balance,
    ExchangeInfo,
    LeverageResponse,
    LotSizeFilter,
    OrderResponse,
    PositionRisk,
)

WIRE = Path(__file__).parent.parent / "fixtures" / "wire"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WIRE / name).read_text())
    return data


def bodies(name: str, endpoint: str) -> list[Any]:
    return [r["body"] for r in fixture(name)["responses"] if r["endpoint"] == endpoint]


def test_order_responses_parse() -> None:
    """Order objects from place, query, cancel and openOrders parse with exact amounts."""
    placed, limit = (
        OrderResponse.from_json(b) for b in bodies("rest_order.json", "POST /fapi/v1/order")
    )
    assert placed.status == "FILLED" and placed.avgPrice == Decimal("60000.40")
    assert placed.executedQty == Decimal("0.020") and placed.cumQuote == Decimal("1200.008")
    assert limit.type == "LIMIT" and limit.price == Decimal(3000)
    (queried,) = (
        OrderResponse.from_json(b) for b in bodies("rest_order.json", "GET /fapi/v1/order")
    )
    assert queried.clientOrderId == "u42-lim-0007"
    (canceled,) = bodies("rest_order.json", "DELETE /fapi/v1/order")
    assert OrderResponse.from_json(canceled).status == "CANCELED"
    (rows,) = bodies("rest_order.json", "GET /fapi/v1/openOrders")
    assert [OrderResponse.from_json(r).orderId for r in rows] == [8389765499]


def test_algo_order_responses_parse() -> None:
    """Algo orders parse; "" and null optional amounts read as zero, the actual order id as text."""
    sl, tp = (
        AlgoOrderResponse.from_json(b)
        for b in bodies("rest_algo_order.json", "POST /fapi/v1/algoOrder")
    )
    assert (sl.algoStatus, sl.triggerPrice, sl.reduceOnly) == ("NEW", Decimal(58000), True)
    assert tp.closePosition is True and tp.quantity == 0 and tp.actualPrice == 0
    (done,) = bodies("rest_algo_order.json", "GET /fapi/v1/algoOrder")
    finished = AlgoOrderResponse.from_json(done)
    assert finished.actualOrderId == "712345678901" and finished.algoStatus == "FINISHED"
    (cancel,) = bodies("rest_algo_order.json", "DELETE /fapi/v1/algoOrder")
    answer = AlgoCancelResponse.from_json(cancel)
    assert answer.code == "200" and answer.algoId == 4000000230700002


def test_account_responses_parse() -> None:
    """positionRisk v3, balance v3 and leverage answers parse."""
    (positions,) = bodies("rest_account.json", "GET /fapi/v3/positionRisk")
    position = PositionRisk.from_json(positions[0])
    assert position.positionAmt == Decimal("0.020") and position.positionSide == "BOTH"
    (balances,) = bodies("rest_account.json", "GET /fapi/v3/balance")
    assert Balance.from_json(balances[0]).availableBalance == Decimal("881.312004")
    (leverage,) = bodies("rest_account.json", "POST /fapi/v1/leverage")
    assert LeverageResponse.from_json(leverage).leverage == 10


def test_exchange_info_keeps_the_filters_we_enforce() -> None:
    """PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE and MIN_NOTIONAL are read; others are skipped."""
    (body,) = bodies("rest_exchange_info.json", "GET /fapi/v1/exchangeInfo")
    info = ExchangeInfo.from_json(body)
    btc = info.symbol("BTCUSDT")
    assert btc is not None and info.symbol("DOGEUSDT") is None
    assert {f.filterType for f in btc.filters} == {
        "PRICE_FILTER",
        "LOT_SIZE",
        "MARKET_LOT_SIZE",
        "MIN_NOTIONAL",
    }
    market = btc.filter("MARKET_LOT_SIZE")
    assert isinstance(market, LotSizeFilter) and market.maxQty == Decimal(120)


def test_malformed_rest_bodies_raise_permanent_error() -> None:
    """A REST body that is not the expected shape is a PermanentError naming the field."""
    with pytest.raises(PermanentError, match="orderId"):
        OrderResponse.from_json({"clientOrderId": "x", "symbol": "BTCUSDT"})
    with pytest.raises(PermanentError, match="origQty"):
        OrderResponse.from_json(
            {**bodies("rest_order.json", "POST /fapi/v1/order")[0], "origQty": "x"}
        )
    with pytest.raises(PermanentError, match="symbols"):
        ExchangeInfo.from_json({"serverTime": 1})
    with pytest.raises(PermanentError):
        ApiError.from_json("not json")


ERRORS = fixture("rest_errors.json")


@pytest.mark.parametrize("case", ERRORS["errors"], ids=lambda c: f"{c['status']}-{c['expect']}")
def test_error_answers_map_into_the_exception_tree(case: dict[str, Any]) -> None:
    """Each golden error answer maps to the class the reference implies, keeping code and text."""
    body = case["body"]
    text = body if isinstance(body, str) else json.dumps(body)
    headers = httpx.Headers(case.get("headers", {}))
    exc = error_from_response(case["status"], text, headers, now_ms=ERRORS["now_ms"])
    assert type(exc) is getattr(errors, case["expect"])
    assert exc.status == case["status"]
    if isinstance(body, dict):
        assert exc.code == body["code"] and body["msg"] in str(exc)
    if "retry_after_s" in case:
        assert isinstance(exc, errors.RateLimited) and exc.retry_after_s == case["retry_after_s"]


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ConnectError("refused"), errors.ExchangeUnavailable),
        (httpx.ConnectTimeout("slow"), errors.ExchangeUnavailable),
        (httpx.PoolTimeout("busy"), errors.ExchangeUnavailable),
        (httpx.ReadTimeout("slow"), errors.UnknownOutcome),
        (httpx.RemoteProtocolError("closed"), errors.UnknownOutcome),
        (httpx.ReadError("reset"), errors.UnknownOutcome),
    ],
)
def test_transport_failures_say_whether_the_request_may_have_run(
    failure: httpx.TransportError, expected: type[Exception]
) -> None:
    """Failures before sending are ExchangeUnavailable; after sending, UnknownOutcome."""
    assert type(error_from_transport(failure, "POST /fapi/v1/order")) is expected


def test_an_error_body_nested_too_deeply_keeps_the_status_and_a_clear_text() -> None:
    """An error answer whose body json cannot read (nesting past its recursion limit) still maps
    by status, with the start of the text as the message, not a RecursionError."""
    text = "[" * 5_000 + "]" * 5_000
    exc = error_from_response(503, text, httpx.Headers(), now_ms=0)
    assert isinstance(exc, errors.ExchangeUnavailable) and exc.code is None
    assert text[:50] in str(exc)
