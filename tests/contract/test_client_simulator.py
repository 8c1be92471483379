"""The real ExchangeClient against the in-process simulator (``httpx.ASGITransport``, no port)."""

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tradewire.clock import ManualClock
from tradewire.errors import (
    AuthenticationError,
    ListenKeyInvalid,
    OrderRejected,
    UnknownOrder,
)
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.event_ids import event_id
from tradewire.exchange.wire import AlgoUpdate, OrderTradeUpdate, UnknownEvent, parse_event

simulator_app = pytest.importorskip("tradewire.simulator.app")

BASE = "http://sim.test"
START_MS = 1_767_000_000_000


@dataclass
class Sim:
    """One simulator app, its admin surface, and a way to open clients on it."""

    app: Any
    clock: ManualClock
    admin: httpx.AsyncClient

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    def client(
        self,
        key: str,
        secret: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: ManualClock | None = None,
    ) -> ExchangeClient:
        http = httpx.AsyncClient(transport=transport or self.transport(), base_url=BASE)
        return ExchangeClient(
            BASE, key, secret, http=http, clock=clock or self.clock, sleep=_no_sleep, own_http=True
        )

    async def new_account(self, balance: str = "10000") -> tuple[str, str]:
        answer = (await self.admin.post("/sim/accounts", json={"balance": balance})).json()
        return answer["api_key"], answer["api_secret"]

    async def set_mark(self, symbol: str, price: str) -> None:
        answer = await self.admin.post("/sim/mark-price", json={"symbol": symbol, "price": price})
        assert answer.status_code == 200, answer.text

    async def account(self, key: str) -> dict[str, Any]:
        data: dict[str, Any] = (await self.admin.get(f"/sim/accounts/{key}")).json()
        return data


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    clock = ManualClock(START_MS)
    app = simulator_app.create_app(clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as admin:
        sim = Sim(app, clock, admin)
        await sim.set_mark("BTCUSDT", "60000")
        await sim.set_mark("ETHUSDT", "3000")
        yield sim


@pytest.fixture
async def client(sim: Sim) -> AsyncIterator[ExchangeClient]:
    key, secret = await sim.new_account()
    async with sim.client(key, secret) as c:
        yield c


async def test_time_and_market_data(sim: Sim, client: ExchangeClient) -> None:
    """Server time, exchange info, symbol rules and the mark price come from the simulator."""
    assert await client.server_time() == START_MS
    assert await client.sync_time() == 0
    info = await client.exchange_info()
    assert info.symbol("BTCUSDT") is not None
    rules = await client.symbol_rules("BTCUSDT")
    assert rules.tick_size > 0 and rules.market_lot.step > 0
    await sim.set_mark("BTCUSDT", "61234.5")
    assert await client.mark_price("BTCUSDT") == Decimal("61234.5")


async def test_a_skewed_local_clock_is_corrected_by_one_resync(sim: Sim) -> None:
    """A client whose clock runs 30 s late gets -1021 once, re-syncs and succeeds."""
    key, secret = await sim.new_account()
    late = ManualClock(START_MS - 30_000)
    async with sim.client(key, secret, clock=late) as client:
        balances = await client.balance()
        assert client.time_offset_ms == 30_000
    assert {b.asset for b in balances} >= {"USDT"}


async def test_market_entry_opens_a_position(sim: Sim, client: ExchangeClient) -> None:
    """A MARKET order answers FILLED (RESULT) and shows in positionRisk and the balance."""
    leverage = await client.set_leverage("BTCUSDT", 10)
    assert leverage.leverage == 10 and leverage.symbol == "BTCUSDT"
    placed = await client.place_order(
        "BTCUSDT", "BUY", "MARKET", Decimal("0.010"), client_order_id="tw-sim-entry"
    )
    assert placed.status == "FILLED" and placed.executedQty == Decimal("0.010")
    assert placed.clientOrderId == "tw-sim-entry" and placed.avgPrice > 0
    (position,) = await client.position_risk("BTCUSDT")
    assert position.positionAmt == Decimal("0.010")
    usdt = next(b for b in await client.balance() if b.asset == "USDT")
    assert usdt.availableBalance < usdt.balance
    queried = await client.get_order("BTCUSDT", order_id=placed.orderId)
    assert queried.clientOrderId == "tw-sim-entry" and queried.status == "FILLED"
    assert client.used_weight is not None and client.used_weight > 0


async def test_protection_algo_orders_place_list_cancel_and_trigger(
    sim: Sim, client: ExchangeClient
) -> None:
    """STOP_MARKET (reduce-only) and TAKE_PROFIT_MARKET (closePosition) live in the Algo Service:
    listed, cancellable by client id, and the stop closes the position when the mark crosses it."""
    await client.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.010"), client_order_id="e1")
    stop = await client.place_algo_order(
        "BTCUSDT",
        "SELL",
        "STOP_MARKET",
        Decimal("58000"),
        Decimal("0.010"),
        reduce_only=True,
        client_algo_id="sl1",
    )
    take = await client.place_algo_order(
        "BTCUSDT",
        "SELL",
        "TAKE_PROFIT_MARKET",
        Decimal("64000"),
        close_position=True,
        client_algo_id="tp1",
    )
    assert (stop.algoStatus, stop.orderType, stop.reduceOnly) == ("NEW", "STOP_MARKET", True)
    assert take.closePosition is True and take.triggerPrice == Decimal(64000)
    assert {a.clientAlgoId for a in await client.open_algo_orders("BTCUSDT")} == {"sl1", "tp1"}
    assert await client.open_orders("BTCUSDT") == []  # algo orders are not engine orders

    canceled = await client.cancel_algo_order(client_algo_id="tp1")
    assert canceled.algoId == take.algoId
    assert (await client.get_algo_order(algo_id=take.algoId)).algoStatus == "CANCELED"

    await sim.set_mark("BTCUSDT", "57900")
    triggered = await client.get_algo_order(client_algo_id="sl1")
    assert triggered.algoStatus in {"TRIGGERED", "FINISHED"} and triggered.actualOrderId
    assert all(p.positionAmt == 0 for p in await client.position_risk("BTCUSDT"))
    assert await client.open_algo_orders() == []


async def test_limit_order_rests_and_cancels(client: ExchangeClient) -> None:
    """A LIMIT order below the mark rests in openOrders and cancels by client id."""
    placed = await client.place_order(
        "ETHUSDT", "BUY", "LIMIT", Decimal("0.500"), Decimal("2900.00"), client_order_id="lim1"
    )
    assert placed.status == "NEW" and placed.timeInForce == "GTC"
    assert [o.clientOrderId for o in await client.open_orders()] == ["lim1"]
    assert (await client.get_order("ETHUSDT", client_order_id="lim1")).orderId == placed.orderId
    canceled = await client.cancel_order("ETHUSDT", client_order_id="lim1")
    assert canceled.status == "CANCELED"
    assert await client.open_orders("ETHUSDT") == []


async def test_unknown_orders_raise_unknown_order(client: ExchangeClient) -> None:
    """Querying or cancelling an order or algo order that does not exist is UnknownOrder."""
    with pytest.raises(UnknownOrder) as query:
        await client.get_order("BTCUSDT", order_id=987654321)
    assert query.value.code == -2013
    with pytest.raises(UnknownOrder) as cancel:
        await client.cancel_order("BTCUSDT", client_order_id="nope")
    assert cancel.value.code == -2011
    with pytest.raises(UnknownOrder):
        await client.get_algo_order(client_algo_id="nope")
    with pytest.raises(UnknownOrder):
        await client.cancel_algo_order(algo_id=42)


async def test_bad_credentials_raise_authentication_error(sim: Sim) -> None:
    """A wrong secret is -1022 and an unknown key -2015 (or -2014): AuthenticationError."""
    key, _ = await sim.new_account()
    async with sim.client(key, "0" * 64) as wrong_secret:
        with pytest.raises(AuthenticationError) as caught:
            await wrong_secret.balance()
        assert caught.value.code == -1022
    async with sim.client("A" * 64, "0" * 64) as unknown_key:
        with pytest.raises(AuthenticationError) as caught:
            await unknown_key.new_listen_key()
        assert caught.value.code in (-2014, -2015)


async def test_conditional_types_on_the_order_endpoint_are_rejected(client: ExchangeClient) -> None:
    """Since the algo migration, STOP_MARKET on /fapi/v1/order is refused with -4120."""
    with pytest.raises(OrderRejected) as caught:
        await client.place_order(
            "BTCUSDT", "SELL", "STOP_MARKET", Decimal("0.010"), client_order_id="bad-sl"
        )
    assert caught.value.code == -4120 and "Algo Order" in str(caught.value)


async def test_exchange_filters_reject_with_their_codes(client: ExchangeClient) -> None:
    """Below min notional is -4164; a second open order with the same client id is -4116."""
    rules = await client.symbol_rules("ETHUSDT")
    tiny = rules.market_lot.min_qty
    assert tiny * 3000 < rules.min_notional
    with pytest.raises(OrderRejected) as notional:
        await client.place_order("ETHUSDT", "BUY", "MARKET", tiny, client_order_id="t1")
    assert notional.value.code == -4164
    await client.place_order(
        "ETHUSDT", "BUY", "LIMIT", Decimal("0.5"), Decimal("2900"), client_order_id="dup"
    )
    with pytest.raises(OrderRejected) as duplicate:
        await client.place_order(
            "ETHUSDT", "BUY", "LIMIT", Decimal("0.5"), Decimal("2900"), client_order_id="dup"
        )
    assert duplicate.value.code == -4116


async def test_listen_key_lifecycle(client: ExchangeClient) -> None:
    """POST returns the account's key (the same one while active), PUT extends it, DELETE ends it;
    keeping a closed key alive is ListenKeyInvalid (-1125)."""
    key = await client.new_listen_key()
    assert len(key) == 64 and await client.new_listen_key() == key
    assert await client.keepalive_listen_key() in (key, "")
    await client.close_listen_key()
    with pytest.raises(ListenKeyInvalid):
        await client.keepalive_listen_key()


class LosingTransport(httpx.AsyncBaseTransport):
    """Loses one answer of ``route``: ``after_landing`` lets the request reach the simulator
    first (the order exists), otherwise it is lost on the way there."""

    def __init__(self, inner: httpx.AsyncBaseTransport, route: str, *, after_landing: bool) -> None:
        self.inner, self.route, self.after_landing = inner, route, after_landing
        self.lost = False
        self.sent: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        route = f"{request.method} {request.url.path}"
        self.sent.append(route)
        if route != self.route or self.lost:
            return await self.inner.handle_async_request(request)
        self.lost = True
        if self.after_landing:
            await self.inner.handle_async_request(request)
        raise httpx.ReadTimeout("answer lost", request=request)


Place = Callable[[ExchangeClient], Awaitable[Any]]


async def _entry(client: ExchangeClient) -> Any:
    return await client.place_order(
        "BTCUSDT", "BUY", "MARKET", Decimal("0.010"), client_order_id="tw-e"
    )


async def _stop(client: ExchangeClient) -> Any:
    await _entry(client)
    return await client.place_algo_order(
        "BTCUSDT",
        "SELL",
        "STOP_MARKET",
        Decimal("58000"),
        Decimal("0.010"),
        reduce_only=True,
        client_algo_id="tw-sl",
    )


@pytest.mark.parametrize("after_landing", [True, False], ids=["landed", "lost-before"])
@pytest.mark.parametrize(
    ("place", "route"),
    [(_entry, "POST /fapi/v1/order"), (_stop, "POST /fapi/v1/algoOrder")],
    ids=["market-entry", "stop-loss"],
)
async def test_a_lost_answer_never_places_twice(
    sim: Sim, place: Place, route: str, after_landing: bool
) -> None:
    """A placement whose answer is lost is looked up, and resent only if it never landed:
    either way the account ends with exactly one position and one protection order."""
    key, secret = await sim.new_account()
    losing = LosingTransport(sim.transport(), route, after_landing=after_landing)
    async with sim.client(key, secret, transport=losing) as client:
        await place(client)
    sends = losing.sent.count(route)
    assert sends == (1 if after_landing else 2)
    account = await sim.account(key)
    assert [Decimal(p["positionAmt"]) for p in account["positions"]] == [Decimal("0.010")]
    assert len(account["open_algo_orders"]) == (1 if route.endswith("algoOrder") else 0)


GOLDEN = Path(__file__).parent.parent / "fixtures" / "wire"


def _golden_keys() -> dict[str, tuple[set[str], set[str]]]:
    """Per event type: the top-level keys and the ``o`` keys every golden sample carries."""
    keys: dict[str, tuple[set[str], set[str]]] = {}
    for path in GOLDEN.glob("ws_*.json"):
        for event in json.loads(path.read_text())["events"]:
            inner = set(event["o"]) if isinstance(event.get("o"), dict) else set()
            top, nested = keys.get(event["e"], (set(event), inner))
            keys[event["e"]] = (top & set(event), nested & inner)
    return keys


async def test_simulator_events_match_the_golden_shapes(
    sim: Sim, client: ExchangeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every event the simulator emits over a trade's life parses, has a distinct event id, and
    carries at least the keys of the golden samples of its type."""
    captured: list[dict[str, Any]] = []
    hub = sim.app.state.runtime.hub
    dispatch = hub.dispatch

    def record(deliveries: Any) -> None:
        deliveries = list(deliveries)
        captured.extend(d.payload for d in deliveries)
        dispatch(deliveries)

    monkeypatch.setattr(hub, "dispatch", record)
    await client.new_listen_key()
    await _stop(client)
    await client.place_algo_order(
        "BTCUSDT",
        "SELL",
        "TAKE_PROFIT_MARKET",
        Decimal("64000"),
        close_position=True,
        client_algo_id="tw-tp",
    )
    await client.cancel_algo_order(client_algo_id="tw-tp")
    await client.place_order(
        "ETHUSDT", "BUY", "LIMIT", Decimal("0.5"), Decimal("2900"), client_order_id="lim"
    )
    await client.cancel_order("ETHUSDT", client_order_id="lim")
    await sim.set_mark("BTCUSDT", "57900")

    parsed = [parse_event(payload) for payload in captured]
    assert not any(isinstance(event, UnknownEvent) for event in parsed)
    ids = [event_id(1, payload) for payload in captured]
    assert len(set(ids)) == len(ids)
    golden = _golden_keys()
    for payload in captured:
        top, nested = golden[payload["e"]]
        assert top <= set(payload), (payload["e"], top - set(payload))
        assert nested <= set(payload.get("o", {})), (payload["e"], nested - set(payload["o"]))

    triggered = [e for e in parsed if isinstance(e, AlgoUpdate) and e.o.X == "TRIGGERED"]
    fills = [e for e in parsed if isinstance(e, OrderTradeUpdate) and e.o.c == "tw-sl"]
    assert len(triggered) == 1 and fills and fills[-1].o.X == "FILLED"
    assert {f.o.i for f in fills} == {triggered[0].o.actual_order_id}
    assert fills[-1].o.ot == "STOP_MARKET" and fills[-1].o.o == "MARKET"


async def test_the_simulators_unknown_outcome_fault_never_opens_a_second_position(
    sim: Sim,
) -> None:
    """The simulator places the order but answers 503 "unknown": the client finds the order
    by its client id and returns it — one position, one order, no second send landing."""
    key, secret = await sim.new_account()
    armed = await sim.admin.post("/sim/faults/unknown-outcome", json={"api_key": key, "count": 1})
    assert armed.status_code == 200, armed.text
    async with sim.client(key, secret) as client:
        order = await client.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.010"),
                                         client_order_id="tw-unknown-1")
    assert order.clientOrderId == "tw-unknown-1"
    account = await sim.account(key)
    assert [Decimal(p["positionAmt"]) for p in account["positions"]] == [Decimal("0.010")]


async def test_a_system_throttle_is_a_transient_error_and_reduce_only_orders_pass(
    sim: Sim,
) -> None:
    """-1008 refuses a new order as retryable (nothing placed), while a reduce-only order that
    lowers risk goes through the same throttle."""
    from tradewire.errors import ExchangeUnavailable, is_transient

    key, secret = await sim.new_account()
    async with sim.client(key, secret) as client:
        await client.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.010"),
                                 client_order_id="tw-open-1")
        await sim.admin.post("/sim/faults/throttle", json={"api_key": key, "count": 5})
        with pytest.raises(ExchangeUnavailable) as refused:
            await client.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.010"),
                                     client_order_id="tw-open-2")
        assert refused.value.code == -1008 and is_transient(refused.value)
        await client.place_order("BTCUSDT", "SELL", "MARKET", Decimal("0.010"), reduce_only=True,
                                 client_order_id="tw-close-1")
    assert (await sim.account(key))["positions"] == []


async def test_account_settings_round_trip(client: ExchangeClient) -> None:
    """Margin type, position mode and the account's order limits are set and read; asking for
    the setting already in place is not an error."""
    assert await client.set_margin_type("BTCUSDT", "ISOLATED") is True
    assert await client.set_margin_type("BTCUSDT", "ISOLATED") is False  # -4046: already so
    assert await client.position_mode() is False
    assert await client.set_position_mode(True) is True
    assert await client.position_mode() is True
    assert await client.set_position_mode(True) is False
    limits = await client.order_rate_limits()
    assert {(row["interval"], row["intervalNum"]) for row in limits} == {("SECOND", 10),
                                                                          ("MINUTE", 1)}


async def test_batch_orders_answer_each_item_in_request_order(client: ExchangeClient) -> None:
    """A batch of three gives three answers in order; a bad item is its own error, the others
    are placed."""
    answers = await client.place_batch([
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": Decimal("0.010"),
         "price": Decimal(50000), "timeInForce": "GTC", "newClientOrderId": "tw-batch-1"},
        {"symbol": "BTCUSDT", "side": "BUY", "type": "STOP_MARKET", "quantity": Decimal("0.010"),
         "stopPrice": Decimal(61000), "newClientOrderId": "tw-batch-2"},
        {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "quantity": Decimal("0.100"),
         "price": Decimal(2500), "timeInForce": "GTC", "newClientOrderId": "tw-batch-3"},
    ])
    assert [type(a).__name__ for a in answers] == ["OrderResponse", "OrderRejected",
                                                    "OrderResponse"]
    assert isinstance(answers[1], OrderRejected) and answers[1].code == -4120
    assert {o.clientOrderId for o in await client.open_orders()} == {"tw-batch-1", "tw-batch-3"}


async def test_history_and_cancel_all(client: ExchangeClient) -> None:
    """Fills show in userTrades and allOrders; cancel-all removes open orders and algo orders."""
    await client.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.010"),
                             client_order_id="tw-hist-1")
    await client.place_order("BTCUSDT", "BUY", "LIMIT", Decimal("0.010"), price=Decimal(50000),
                             client_order_id="tw-hist-2")
    await client.place_algo_order("BTCUSDT", "SELL", "STOP_MARKET", Decimal(55000),
                                  Decimal("0.010"), reduce_only=True, client_algo_id="tw-hist-3")
    assert len(await client.user_trades("BTCUSDT")) == 1
    assert {o.clientOrderId for o in await client.all_orders("BTCUSDT")} == {"tw-hist-1",
                                                                             "tw-hist-2"}
    await client.cancel_all_orders("BTCUSDT")
    assert await client.open_orders("BTCUSDT") == []
    assert await client.open_algo_orders("BTCUSDT") == []


async def test_a_lost_answer_with_a_not_yet_queryable_algo_order_never_places_twice(
    sim: Sim,
) -> None:
    """The answer is lost AND the algo order is not yet visible to queries: the client may end
    unsure (UnknownOutcome) but the account never holds two protection orders."""
    from tradewire.errors import UnknownOutcome

    key, secret = await sim.new_account()
    async with sim.client(key, secret) as client:
        await client.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.010"),
                                 client_order_id="tw-hidden-entry")
        await sim.admin.post("/sim/faults/unknown-outcome",
                             json={"api_key": key, "endpoints": ["algoOrder"]})
        await sim.admin.post("/sim/faults/hide-algos", json={"api_key": key, "ms": 60_000})
        with contextlib.suppress(UnknownOutcome):
            await client.place_algo_order("BTCUSDT", "SELL", "STOP_MARKET", Decimal(55000),
                                          Decimal("0.010"), reduce_only=True,
                                          client_algo_id="tw-hidden-sl")
    sim.clock.advance(61_000)
    account = await sim.account(key)
    assert [a["clientAlgoId"] for a in account["open_algo_orders"]] == ["tw-hidden-sl"]


async def test_a_slow_exchange_is_waited_for(sim: Sim) -> None:
    """Answers delayed by the simulator's slow fault (0.2 s) still arrive and count once."""
    import time

    key, secret = await sim.new_account()
    await sim.admin.post("/sim/faults/slow", json={"api_key": key, "ms": 200})
    async with sim.client(key, secret) as client:
        started = time.perf_counter()
        await client.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.010"),
                                 client_order_id="tw-slow-1")
        assert time.perf_counter() - started >= 0.2
    account = await sim.account(key)
    assert [Decimal(p["positionAmt"]) for p in account["positions"]] == [Decimal("0.010")]
