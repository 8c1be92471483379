"""The simulator over the wire: a real SimulatorServer on an ephemeral port, httpx + websockets.

Event shapes are checked against the sample payloads of the exchange reference (§4.9).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimulatorServer, create_app

BTC = "BTCUSDT"

# Reference §4.9 (a): a reduce-only STOP_MARKET SELL, triggered and filled (synthetic sample).
REFERENCE_ALGO_UPDATE = json.loads(
    '{"e":"ALGO_UPDATE","T":1767000000100,"E":1767000000104,"o":{"caid":"u42-sl-0001",'
    '"aid":4000000230627731,"at":"CONDITIONAL","o":"STOP_MARKET","s":"BTCUSDT","S":"SELL",'
    '"ps":"BOTH","f":"GTC","q":"0.010","X":"NEW","ai":"","ap":"0.00000","aq":"0.00000",'
    '"act":"0","tp":"58000.00","p":"0.00","V":"EXPIRE_MAKER","wt":"MARK_PRICE","pm":"NONE",'
    '"cp":false,"pP":true,"R":true,"tt":0,"gtd":0,"rm":""}}')
REFERENCE_ORDER_NEW = json.loads(
    '{"e":"ORDER_TRADE_UPDATE","E":1767003600008,"T":1767003600001,"o":{"s":"BTCUSDT",'
    '"c":"u42-sl-0001","S":"SELL","o":"MARKET","f":"GTC","q":"0.010","p":"0","ap":"0",'
    '"sp":"58000.00","x":"NEW","X":"NEW","i":712345678901,"l":"0","z":"0","L":"0",'
    '"T":1767003600001,"t":0,"b":"0","a":"0","m":false,"R":true,"wt":"MARK_PRICE",'
    '"ot":"STOP_MARKET","ps":"BOTH","cp":false,"pP":true,"si":0,"ss":0,"rp":"0",'
    '"V":"EXPIRE_MAKER","pm":"NONE","gtd":0,"er":"0"}}')
REFERENCE_ACCOUNT_UPDATE = json.loads(
    '{"e":"ACCOUNT_UPDATE","E":1767003600009,"T":1767003600002,"a":{"m":"ORDER","B":[{"a":'
    '"USDT","wb":"981.23000000","cw":"981.23000000","bc":"0"}],"P":[{"s":"BTCUSDT","pa":"0",'
    '"ep":"0.0","bep":"0","cr":"-18.40000000","up":"0","mt":"cross","iw":"0","ps":"BOTH"}]}}')
REFERENCE_ORDER_TRADE = json.loads(
    '{"e":"ORDER_TRADE_UPDATE","E":1767003600009,"T":1767003600002,"o":{"s":"BTCUSDT",'
    '"c":"u42-sl-0001","S":"SELL","o":"MARKET","f":"GTC","q":"0.010","p":"0",'
    '"ap":"57990.10","sp":"58000.00","x":"TRADE","X":"FILLED","i":712345678901,"l":"0.010",'
    '"z":"0.010","L":"57990.10","N":"USDT","n":"0.28995050","T":1767003600002,'
    '"t":6123456789,"b":"0","a":"0","m":false,"R":true,"wt":"MARK_PRICE","ot":"STOP_MARKET",'
    '"ps":"BOTH","cp":false,"pP":true,"si":0,"ss":0,"rp":"-18.40000000","V":"EXPIRE_MAKER",'
    '"pm":"NONE","gtd":0,"er":"0"}}')
# Reference §4.6: TRADE_LITE fields.
TRADE_LITE_KEYS = {"e", "E", "T", "s", "q", "p", "m", "c", "S", "L", "l", "t", "i"}

STOP_SEQUENCE = [
    ("ALGO_UPDATE", "TRIGGERING"), ("ALGO_UPDATE", "TRIGGERED"), ("ORDER_TRADE_UPDATE", "NEW"),
    ("ACCOUNT_UPDATE", None), ("TRADE_LITE", None), ("ORDER_TRADE_UPDATE", "FILLED"),
    ("ALGO_UPDATE", "FINISHED"),
]
ENTRY_SEQUENCE = [("ORDER_TRADE_UPDATE", "NEW"), ("ACCOUNT_UPDATE", None), ("TRADE_LITE", None),
                  ("ORDER_TRADE_UPDATE", "FILLED")]


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class Trader:
    """One simulator account speaking the exchange's REST dialect."""

    def __init__(self, http: httpx.AsyncClient, clock: ManualClock, creds: dict[str, str]):
        self.http, self.clock = http, clock
        self.api_key, self.secret = creds["api_key"], creds["api_secret"]

    @property
    def headers(self) -> dict[str, str]:
        return {"X-MBX-APIKEY": self.api_key}

    def query(self, params: dict[str, Any], *, secret: str | None = None) -> str:
        text = urlencode({**params, "timestamp": params.get("timestamp", self.clock.now_ms())})
        return f"{text}&signature={sign(secret or self.secret, text)}"

    async def signed(self, method: str, path: str, **params: Any) -> httpx.Response:
        """Parameters in the query string for GET/DELETE, in a form body otherwise."""
        text = self.query(params)
        if method in ("GET", "DELETE"):
            return await self.http.request(method, f"{path}?{text}", headers=self.headers)
        headers = {**self.headers, "Content-Type": "application/x-www-form-urlencoded"}
        return await self.http.request(method, path, content=text, headers=headers)

    async def listen_key(self) -> str:
        response = await self.http.post("/fapi/v1/listenKey", headers=self.headers)
        key: str = response.json()["listenKey"]
        return key

    async def market(self, side: str, qty: str) -> httpx.Response:
        return await self.signed("POST", "/fapi/v1/order", symbol=BTC, side=side, type="MARKET",
                                 quantity=qty)

    async def stop(self, trigger: str, client_id: str = "u42-sl-0001") -> httpx.Response:
        return await self.signed(
            "POST", "/fapi/v1/algoOrder", algoType="CONDITIONAL", symbol=BTC, side="SELL",
            type="STOP_MARKET", triggerPrice=trigger, quantity="0.010", reduceOnly="true",
            clientAlgoId=client_id, workingType="MARK_PRICE", priceProtect="true")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(engine=Engine(clock)) as server:
        yield server


@pytest.fixture
async def http(sim: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as client:
        yield client


async def new_trader(http: httpx.AsyncClient, clock: ManualClock) -> Trader:
    response = await http.post("/sim/accounts", json={"balance": "10000"})
    return Trader(http, clock, response.json())


@pytest.fixture
async def trader(http: httpx.AsyncClient, clock: ManualClock) -> Trader:
    return await new_trader(http, clock)


async def set_mark(http: httpx.AsyncClient, price: str, symbol: str = BTC) -> None:
    response = await http.post("/sim/mark-price", json={"symbol": symbol, "price": price})
    assert response.json() == {"symbol": symbol, "price": price}


async def receive(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(ws.recv(), 2)) for _ in range(count)]


def kinds(messages: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(m["e"], m["o"].get("X") if isinstance(m.get("o"), dict) else None)
            for m in messages]


def keys(payload: dict[str, Any]) -> tuple[set[str], set[str]]:
    inner: dict[str, Any] = payload["o"] if isinstance(payload.get("o"), dict) else payload["a"]
    return set(payload), set(inner)


async def assert_nothing_pending(ws: ClientConnection, request_id: int = 99) -> None:
    """Control replies share the event queue: if the reply comes next, no event was waiting."""
    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": request_id}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 2))
    assert reply["id"] == request_id, reply


# -- signing and authentication -------------------------------------------------------------


async def test_signed_request_is_accepted_with_weight_header(trader: Trader) -> None:
    """A correctly signed USER_DATA request answers 200 and reports the used IP weight."""
    response = await trader.signed("GET", "/fapi/v3/balance")
    assert response.status_code == 200
    (row,) = response.json()
    assert (row["asset"], row["balance"], row["availableBalance"]) == (
        "USDT", "10000.00000000", "10000.00000000")
    assert int(response.headers["X-MBX-USED-WEIGHT-1M"]) >= 5


async def test_signature_covers_query_and_body_concatenated(trader: Trader) -> None:
    """Parameters split between query string and body are signed as query + body, no '&'."""
    now = trader.clock.now_ms()
    query = f"symbol={BTC}&side=BUY&type=MARKET"
    body = f"quantity=0.010&recvWindow=5000&timestamp={now}"
    signed_body = f"{body}&signature={sign(trader.secret, query + body)}"
    headers = {**trader.headers, "Content-Type": "application/x-www-form-urlencoded"}
    response = await trader.http.post(f"/fapi/v1/order?{query}", content=signed_body,
                                      headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["origQty"] == "0.010"
    assert response.headers["X-MBX-ORDER-COUNT-10S"] == "1"
    assert response.headers["X-MBX-ORDER-COUNT-1M"] == "1"


async def test_wrong_signature_answers_1022(trader: Trader) -> None:
    """A signature from the wrong secret, or over other bytes, is -1022."""
    wrong = trader.query({"symbol": BTC}, secret="x" * 64)
    tampered = trader.query({"symbol": BTC}).replace(BTC, "ETHUSDT")
    for text in (wrong, tampered):
        response = await trader.http.get(f"/fapi/v1/openOrders?{text}", headers=trader.headers)
        assert response.status_code == 400
        assert response.json() == {"code": -1022,
                                   "msg": "Signature for this request is not valid."}


@pytest.mark.parametrize(("offset_ms", "recv_window", "ok"), [
    (-5001, None, False), (-4999, None, True), (1000, None, False), (999, None, True),
    (-9000, 10000, True),
])
async def test_timestamp_window(trader: Trader, offset_ms: int, recv_window: int | None,
                                ok: bool) -> None:
    """timestamp must be < serverTime + 1000 and no older than recvWindow (default 5000)."""
    params: dict[str, Any] = {"timestamp": trader.clock.now_ms() + offset_ms}
    if recv_window:
        params["recvWindow"] = recv_window
    response = await trader.http.get(f"/fapi/v3/balance?{trader.query(params)}",
                                     headers=trader.headers)
    assert response.status_code == (200 if ok else 400)
    if not ok:
        assert response.json()["code"] == -1021


async def test_api_key_errors(trader: Trader, http: httpx.AsyncClient) -> None:
    """No key: 401 -2014; a well-formed unknown key: 401 -2015 (signed and USER_STREAM)."""
    missing = await http.get(f"/fapi/v3/balance?{trader.query({})}")
    unknown = await http.get(f"/fapi/v3/balance?{trader.query({})}",
                             headers={"X-MBX-APIKEY": "A" * 64})
    stream = await http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": "A" * 64})
    assert (missing.status_code, missing.json()["code"]) == (401, -2014)
    assert (unknown.status_code, unknown.json()["code"]) == (401, -2015)
    assert (stream.status_code, stream.json()["code"]) == (401, -2015)


# -- orders and the user-data stream --------------------------------------------------------


async def test_stop_flow_on_raw_socket(sim: SimulatorServer, http: httpx.AsyncClient,
                                       trader: Trader) -> None:
    """MARKET entry, STOP_MARKET algo order, mark below the trigger: the exact event sequence
    on /private/ws/<listenKey>, with the reference payloads' field names."""
    key = await trader.listen_key()
    async with connect(f"{sim.ws_url}/private/ws/{key}") as ws:
        assert (await trader.market("BUY", "0.010")).status_code == 200
        entry = await receive(ws, 4)
        assert kinds(entry) == ENTRY_SEQUENCE
        placed = await trader.stop("58000")
        assert placed.json()["algoStatus"] == "NEW"
        (new_algo,) = await receive(ws, 1)
        assert kinds([new_algo]) == [("ALGO_UPDATE", "NEW")]
        assert keys(new_algo) == keys(REFERENCE_ALGO_UPDATE)
        await set_mark(http, "57990.1")
        stop = await receive(ws, 7)
    assert kinds(stop) == STOP_SEQUENCE
    assert keys(stop[2]) == keys(REFERENCE_ORDER_NEW)
    assert keys(stop[3]) == keys(REFERENCE_ACCOUNT_UPDATE)
    assert set(stop[3]["a"]["B"][0]) == set(REFERENCE_ACCOUNT_UPDATE["a"]["B"][0])
    assert set(stop[3]["a"]["P"][0]) == set(REFERENCE_ACCOUNT_UPDATE["a"]["P"][0])
    assert set(stop[4]) == TRADE_LITE_KEYS
    assert keys(stop[5]) == keys(REFERENCE_ORDER_TRADE)
    assert keys(stop[6]) == keys(REFERENCE_ALGO_UPDATE)
    fill = stop[5]["o"]
    assert (fill["c"], fill["o"], fill["ot"], fill["x"]) == (
        "u42-sl-0001", "MARKET", "STOP_MARKET", "TRADE")
    assert stop[1]["o"]["ai"] == str(fill["i"]) == stop[6]["o"]["ai"]


async def test_stop_flow_on_combined_stream(sim: SimulatorServer, http: httpx.AsyncClient,
                                            clock: ManualClock) -> None:
    """/private/stream with two accounts' keys wraps each event as {"stream": key, "data"}."""
    alice, bob = await new_trader(http, clock), await new_trader(http, clock)
    alice_key, bob_key = await alice.listen_key(), await bob.listen_key()
    url = f"{sim.ws_url}/private/stream?listenKey={alice_key}&listenKey={bob_key}"
    async with connect(url) as ws:
        await alice.market("BUY", "0.010")
        await bob.market("SELL", "0.010")
        entries = await receive(ws, 8)
        await alice.stop("58000")
        await set_mark(http, "57900")
        stop = await receive(ws, 8)
    assert [m["stream"] for m in entries] == [alice_key] * 4 + [bob_key] * 4
    assert all(set(m) == {"stream", "data"} for m in entries + stop)
    assert {m["stream"] for m in stop} == {alice_key}
    assert kinds([m["data"] for m in stop]) == [("ALGO_UPDATE", "NEW"), *STOP_SEQUENCE]


async def test_conditional_type_on_order_endpoint_answers_4120(trader: Trader) -> None:
    """STOP_MARKET on /fapi/v1/order is refused with -4120."""
    response = await trader.signed("POST", "/fapi/v1/order", symbol=BTC, side="SELL",
                                   type="STOP_MARKET", stopPrice="58000", quantity="0.010")
    assert response.status_code == 400
    assert response.json() == {
        "code": -4120,
        "msg": "Order type not supported for this endpoint. "
               "Please use the Algo Order API endpoints instead."}


async def test_algo_order_that_would_trigger_immediately_answers_2021(trader: Trader) -> None:
    """A SELL stop at or above the mark is -2021."""
    response = await trader.stop("60000")
    assert response.json() == {"code": -2021, "msg": "Order would immediately trigger."}


async def test_cancel_algo_order(sim: SimulatorServer, trader: Trader) -> None:
    """DELETE /fapi/v1/algoOrder answers success and pushes ALGO_UPDATE CANCELED; a second
    cancel is -2011."""
    key = await trader.listen_key()
    async with connect(f"{sim.ws_url}/private/ws?listenKey={key}") as ws:
        await trader.market("BUY", "0.010")
        algo_id = (await trader.stop("58000")).json()["algoId"]
        response = await trader.signed("DELETE", "/fapi/v1/algoOrder", algoId=algo_id)
        assert response.json() == {"algoId": algo_id, "clientAlgoId": "u42-sl-0001",
                                   "code": "200", "msg": "success"}
        messages = await receive(ws, 6)
    assert kinds(messages[4:]) == [("ALGO_UPDATE", "NEW"), ("ALGO_UPDATE", "CANCELED")]
    again = await trader.signed("DELETE", "/fapi/v1/algoOrder", clientAlgoId="u42-sl-0001")
    assert again.json() == {"code": -2011, "msg": "Unknown order sent."}


async def test_legacy_ws_path_delivers_nothing(sim: SimulatorServer, trader: Trader) -> None:
    """/ws/<listenKey> connects (as after the 2026-04-23 decommission) but stays silent."""
    key = await trader.listen_key()
    async with connect(f"{sim.ws_url}/ws/{key}") as legacy, \
            connect(f"{sim.ws_url}/private/ws/{key}") as private:
        await trader.market("BUY", "0.010")
        await receive(private, 4)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(legacy.recv(), 0.2)


async def test_invalid_listen_key_socket_opens_and_stays_silent(
    sim: SimulatorServer, trader: Trader
) -> None:
    """A socket for an unknown key is accepted and receives nothing."""
    await trader.listen_key()
    async with connect(f"{sim.ws_url}/private/ws/{'z' * 64}") as ws:
        await trader.market("BUY", "0.010")
        await assert_nothing_pending(ws)


async def test_subscribe_list_unsubscribe(sim: SimulatorServer, trader: Trader) -> None:
    """JSON SUBSCRIBE/LIST_SUBSCRIPTIONS/UNSUBSCRIBE on /private/stream, answered by id."""
    key = await trader.listen_key()
    async with connect(f"{sim.ws_url}/private/stream") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [key], "id": 1}))
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert await receive(ws, 2) == [{"result": None, "id": 1}, {"result": [key], "id": 2}]
        await trader.market("BUY", "0.010")
        assert [m["stream"] for m in await receive(ws, 4)] == [key] * 4
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": [key], "id": 3}))
        assert await receive(ws, 1) == [{"result": None, "id": 3}]
        await trader.market("BUY", "0.010")
        await assert_nothing_pending(ws)


async def test_listen_key_expiry_reaches_the_socket(sim: SimulatorServer, http: httpx.AsyncClient,
                                                    trader: Trader, clock: ManualClock) -> None:
    """After 60 minutes without keepalive: listenKeyExpired on the open socket, then silence;
    PUT answers -1125."""
    key = await trader.listen_key()
    async with connect(f"{sim.ws_url}/private/ws/{key}") as ws:
        response = await http.post("/sim/clock/advance", json={"ms": 60 * 60_000})
        assert response.json() == {"now": clock.now_ms()}
        (expired,) = await receive(ws, 1)
        assert expired == {"e": "listenKeyExpired", "E": clock.now_ms(), "listenKey": key}
        await trader.market("BUY", "0.010")
        await assert_nothing_pending(ws)
    keepalive = await http.put("/fapi/v1/listenKey", headers=trader.headers)
    assert (keepalive.status_code, keepalive.json()) == (
        400, {"code": -1125, "msg": "This listenKey does not exist."})


async def test_drop_connections_closes_user_sockets(sim: SimulatorServer,
                                                    http: httpx.AsyncClient,
                                                    trader: Trader) -> None:
    """The drop-connections fault closes the account's sockets."""
    key = await trader.listen_key()
    async with connect(f"{sim.ws_url}/private/ws/{key}") as ws:
        response = await http.post("/sim/faults/drop-connections",
                                   json={"api_key": trader.api_key})
        assert response.json() == {"dropped": 1}
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)


# -- REST shapes ----------------------------------------------------------------------------

ORDER_FIELDS = {
    "clientOrderId", "cumQty", "cumQuote", "executedQty", "orderId", "avgPrice", "origQty",
    "price", "reduceOnly", "side", "positionSide", "status", "stopPrice", "closePosition",
    "symbol", "timeInForce", "type", "origType", "updateTime", "workingType", "priceProtect",
    "priceMatch", "selfTradePreventionMode", "goodTillDate"}
ALGO_FIELDS = {
    "algoId", "clientAlgoId", "algoType", "orderType", "symbol", "side", "positionSide",
    "timeInForce", "quantity", "algoStatus", "triggerPrice", "price", "closePosition",
    "reduceOnly", "workingType", "priceProtect", "createTime", "updateTime"}


async def test_order_queries_and_shapes(trader: Trader, http: httpx.AsyncClient) -> None:
    """Order, algo, position and trade queries answer in the exchange's field names."""
    placed = await trader.signed("POST", "/fapi/v1/order", symbol=BTC, side="BUY", type="LIMIT",
                                 timeInForce="GTC", quantity="0.010", price="59000",
                                 newClientOrderId="tw-entry-1")
    assert set(placed.json()) == ORDER_FIELDS
    order = await trader.signed("GET", "/fapi/v1/order", symbol=BTC,
                                origClientOrderId="tw-entry-1")
    assert set(order.json()) == ORDER_FIELDS | {"time"}
    assert order.json()["status"] == "NEW"
    missing = await trader.signed("GET", "/fapi/v1/order", symbol=BTC, orderId=1)
    assert missing.json() == {"code": -2013, "msg": "Order does not exist."}
    await set_mark(http, "58950")
    risk = (await trader.signed("GET", "/fapi/v3/positionRisk", symbol=BTC)).json()
    assert (risk[0]["positionAmt"], risk[0]["entryPrice"]) == ("0.010", "59000")
    trades = (await trader.signed("GET", "/fapi/v1/userTrades", symbol=BTC)).json()
    assert (trades[0]["maker"], trades[0]["commission"]) == (True, "0.11800000")
    algo = (await trader.stop("58000")).json()
    assert set(algo) >= ALGO_FIELDS
    open_algos = (await trader.signed("GET", "/fapi/v1/openAlgoOrders", symbol=BTC)).json()
    assert [a["algoId"] for a in open_algos] == [algo["algoId"]]
    snapshot = (await http.get(f"/sim/accounts/{trader.api_key}")).json()
    assert [p["symbol"] for p in snapshot["positions"]] == [BTC]
    assert [a["algoId"] for a in snapshot["open_algo_orders"]] == [algo["algoId"]]


async def test_market_data_endpoints(http: httpx.AsyncClient, clock: ManualClock) -> None:
    """time, exchangeInfo (filters, rateLimits), premiumIndex and ticker price."""
    assert (await http.get("/fapi/v1/time")).json() == {"serverTime": clock.now_ms()}
    info = (await http.get("/fapi/v1/exchangeInfo")).json()
    symbols = {s["symbol"]: s for s in info["symbols"]}
    assert set(symbols) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"}
    assert {f["filterType"] for f in symbols[BTC]["filters"]} == {
        "PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL", "PERCENT_PRICE",
        "MAX_NUM_ORDERS"}
    assert {r["rateLimitType"] for r in info["rateLimits"]} == {"REQUEST_WEIGHT", "ORDERS"}
    await set_mark(http, "0.5123", "XRPUSDT")
    premium = (await http.get("/fapi/v1/premiumIndex", params={"symbol": "XRPUSDT"})).json()
    assert premium["markPrice"] == "0.5123"
    ticker = (await http.get("/fapi/v2/ticker/price", params={"symbol": "ETHUSDT"})).json()
    assert (ticker["symbol"], ticker["price"]) == ("ETHUSDT", "3000.00")


async def test_app_serves_in_process_without_a_port(clock: ManualClock) -> None:
    """create_app works behind httpx.ASGITransport (for client tests that open no port)."""
    engine = Engine(clock)
    transport = httpx.ASGITransport(app=create_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        trader = await new_trader(http, clock)
        assert (await trader.market("BUY", "0.010")).status_code == 200
        await set_mark(http, "61000")
        risk = (await trader.signed("GET", "/fapi/v2/positionRisk", symbol=BTC)).json()
    assert (risk[0]["positionAmt"], risk[0]["unRealizedProfit"], risk[0]["leverage"]) == (
        "0.010", "10.00000000", "20")


async def test_market_and_public_routes_accept_clients_and_string_request_ids() -> None:
    """``/market/stream`` and ``/public/stream`` connect and answer control messages (no market
    data is modelled); a SUBSCRIBE may carry a string id, as the official SDK sends."""
    import json as _json

    from websockets.asyncio.client import connect

    from tradewire.simulator import SimulatorServer

    async with SimulatorServer() as sim:
        for route in ("market", "public"):
            async with connect(f"{sim.ws_url}/{route}/stream") as ws:
                await ws.send(_json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"],
                                           "id": "0d2f7a3c-6a0e-4a5e-9d8e-3f1c2b4a5d6e"}))
                reply = _json.loads(await ws.recv())
                assert reply == {"result": None, "id": "0d2f7a3c-6a0e-4a5e-9d8e-3f1c2b4a5d6e"}
