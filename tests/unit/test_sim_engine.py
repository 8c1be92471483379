"""The simulator engine: positions and PnL, filters, margin, LIMIT fills, listenKeys."""

from __future__ import annotations

import dataclasses
from decimal import Decimal as D

import pytest

from tradewire.clock import ManualClock
from tradewire.simulator import Engine, SimError
from tradewire.simulator.model import Account
from tradewire.simulator.params import OrderRequest, parse_order

BTC = "BTCUSDT"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(clock: ManualClock) -> Engine:
    return Engine(clock)


@pytest.fixture
def account(engine: Engine) -> Account:
    return engine.create_account(D("10000"))


def market(engine: Engine, account: Account, side: str, qty: str, *, symbol: str = BTC,
           reduce_only: bool = False) -> None:
    engine.place_order(account.api_key,
                       OrderRequest(symbol, side, "MARKET", D(qty), reduce_only=reduce_only))


def code_of(excinfo: pytest.ExceptionInfo[SimError]) -> int:
    return excinfo.value.code


def events(engine: Engine) -> list[str]:
    names = []
    for delivery in engine.drain_events():
        payload = delivery.payload
        status = payload["o"].get("X", "") if isinstance(payload.get("o"), dict) else ""
        names.append(f"{payload['e']} {status}".strip())
    return names


def test_new_account_has_random_64_char_credentials(engine: Engine) -> None:
    """Accounts get distinct 64-character API keys and secrets and a USDT wallet."""
    first, second = engine.create_account(), engine.create_account(D("500"))
    assert len(first.api_key) == len(first.api_secret) == 64
    assert first.api_key != second.api_key and first.api_secret != second.api_secret
    assert (first.wallet, second.wallet) == (D("10000"), D("500"))


def test_market_buy_opens_long_at_mark_and_charges_taker_fee(
    engine: Engine, account: Account
) -> None:
    """A MARKET order fills at the mark; 0.04% commission leaves the wallet."""
    market(engine, account, "BUY", "0.010")
    position = account.position(BTC)
    assert (position.amount, position.entry_price) == (D("0.010"), D("60000"))
    assert account.wallet == D("10000") - D("0.24")


def test_entry_price_is_the_average_of_fills(engine: Engine, account: Account) -> None:
    """Adding to a position averages the entry price by quantity."""
    market(engine, account, "BUY", "0.010")
    engine.set_mark_price(BTC, D("63000"))
    market(engine, account, "BUY", "0.020")
    assert account.position(BTC).entry_price == D("62000")


def test_partial_close_realizes_pnl_and_keeps_entry(engine: Engine, account: Account) -> None:
    """Selling part of a long realizes (exit - entry) * qty; the rest keeps its entry price."""
    market(engine, account, "BUY", "0.020")
    engine.set_mark_price(BTC, D("61000"))
    market(engine, account, "SELL", "0.010")
    position = account.position(BTC)
    assert (position.amount, position.entry_price, position.realized) == (
        D("0.010"), D("60000"), D("10"))
    fees = D("0.020") * 60000 * D("0.0004") + D("0.010") * 61000 * D("0.0004")
    assert account.wallet == D("10000") + 10 - fees


def test_flip_opens_the_remainder_at_the_fill_price(engine: Engine, account: Account) -> None:
    """Selling more than the long closes it and opens a short at the fill price."""
    market(engine, account, "BUY", "0.010")
    engine.set_mark_price(BTC, D("59000"))
    market(engine, account, "SELL", "0.030")
    position = account.position(BTC)
    assert (position.amount, position.entry_price, position.realized) == (
        D("-0.020"), D("59000"), D("-10"))


def test_short_profits_when_price_falls(engine: Engine, account: Account) -> None:
    """A short closed lower realizes a profit and the position is flat with no entry."""
    market(engine, account, "SELL", "0.010")
    engine.set_mark_price(BTC, D("55000"))
    market(engine, account, "BUY", "0.010")
    position = account.position(BTC)
    assert (position.amount, position.entry_price, position.realized) == (D(0), D(0), D("50"))


def test_margin_check_uses_leverage(engine: Engine) -> None:
    """Opening needs notional/leverage of available balance (-2019); more leverage, less."""
    poor = engine.create_account(D("100"))
    with pytest.raises(SimError) as excinfo:
        market(engine, poor, "BUY", "0.050")  # 3000 notional / 20 = 150 > 100
    assert code_of(excinfo) == -2019
    engine.set_leverage(poor.api_key, BTC, 50)
    market(engine, poor, "BUY", "0.050")
    assert poor.position(BTC).amount == D("0.050")


def test_limit_order_rests_until_the_mark_crosses(engine: Engine, account: Account) -> None:
    """A BUY LIMIT below the mark rests, then fills at its price (maker) when the mark drops."""
    order = engine.place_order(account.api_key, OrderRequest(
        BTC, "BUY", "LIMIT", D("0.010"), D("59000"), resp_type="RESULT"))
    assert order.status == "NEW"
    engine.set_mark_price(BTC, D("59500"))
    assert order.status == "NEW"
    engine.set_mark_price(BTC, D("58900"))
    assert order.status == "FILLED"
    assert account.position(BTC).entry_price == D("59000")
    assert account.wallet == D("10000") - D("0.010") * 59000 * D("0.0002")


def test_sell_limit_fills_when_mark_rises(engine: Engine, account: Account) -> None:
    """A SELL LIMIT above the mark fills once the mark reaches it."""
    engine.place_order(account.api_key, OrderRequest(BTC, "SELL", "LIMIT", D("0.010"),
                                                     D("61000")))
    engine.set_mark_price(BTC, D("61000"))
    assert account.position(BTC).amount == D("-0.010")


def test_market_result_response_is_filled_ack_is_new(engine: Engine, account: Account) -> None:
    """newOrderRespType ACK answers the accepted order; RESULT the filled one."""
    ack = engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "MARKET", D("0.010")))
    result = engine.place_order(account.api_key, OrderRequest(
        BTC, "BUY", "MARKET", D("0.010"), resp_type="RESULT"))
    assert (ack.status, ack.executed_qty) == ("NEW", D(0))
    assert (result.status, result.executed_qty, result.avg_price) == (
        "FILLED", D("0.010"), D("60000"))


@pytest.mark.parametrize(
    ("symbol", "quantity", "price", "code"),
    [
        (BTC, "0.0101", "59000", -1111),  # more decimals than quantityPrecision
        (BTC, "0", None, -4003),
        (BTC, "2000", "59000", -4005),  # LOT_SIZE maxQty
        (BTC, "130", None, -4005),  # MARKET_LOT_SIZE maxQty
        (BTC, "0.010", "59000.155", -1111),  # more decimals than pricePrecision
        (BTC, "0.010", "59000.15", -4014),  # off the 0.10 tick
        ("SOLUSDT", "1", "150.005", -4014),
        (BTC, "0.010", "100", -4013),
        (BTC, "0.010", "70000", -4016),  # above mark * 1.05
        (BTC, "0.010", "50000", -4024),  # SELL below mark * 0.95
        ("ETHUSDT", "0.001", None, -4164),  # 3 USDT < 20 USDT
        ("SOLUSDT", "1.5", None, -1111),
    ],
)
def test_filters_reject_with_the_exchange_codes(
    engine: Engine, account: Account, symbol: str, quantity: str, price: str | None, code: int
) -> None:
    """PRICE_FILTER, LOT_SIZE, PERCENT_PRICE and MIN_NOTIONAL answer their own codes."""
    side = "SELL" if price == "50000" else "BUY"
    kind = "LIMIT" if price else "MARKET"
    request = OrderRequest(symbol, side, kind, D(quantity), D(price) if price else None)
    with pytest.raises(SimError) as excinfo:
        engine.place_order(account.api_key, request)
    assert code_of(excinfo) == code


def test_quantity_off_the_step_answers_4023(engine: Engine) -> None:
    """A quantity within precision but not a multiple of the step size is -4023."""
    spec = dataclasses.replace(engine.spec(BTC), step_size=D("0.005"), min_qty=D("0.005"))
    with pytest.raises(SimError) as excinfo:
        spec.check_qty(D("0.012"), market=False)
    assert code_of(excinfo) == -4023


def test_min_notional_does_not_apply_to_reduce_only(engine: Engine, account: Account) -> None:
    """A reduce-only order below MIN_NOTIONAL is accepted (-4164 only for opening orders)."""
    market(engine, account, "BUY", "0.010")
    market(engine, account, "SELL", "0.001", reduce_only=True)
    assert account.position(BTC).amount == D("0.009")


def test_reduce_only_that_would_increase_the_position_is_rejected(
    engine: Engine, account: Account
) -> None:
    """reduceOnly with no position, or on the position's own side, answers -2022."""
    with pytest.raises(SimError) as flat:
        market(engine, account, "SELL", "0.010", reduce_only=True)
    market(engine, account, "BUY", "0.010")
    with pytest.raises(SimError) as same_side:
        market(engine, account, "BUY", "0.010", reduce_only=True)
    assert (code_of(flat), code_of(same_side)) == (-2022, -2022)
    assert flat.value.msg == "ReduceOnly Order is rejected."


def test_reduce_only_fill_is_capped_at_the_position(engine: Engine, account: Account) -> None:
    """A reduce-only order larger than the position fills the position and expires the rest."""
    market(engine, account, "BUY", "0.010")
    order = engine.place_order(account.api_key, OrderRequest(
        BTC, "SELL", "MARKET", D("0.050"), reduce_only=True, resp_type="RESULT"))
    assert (order.executed_qty, order.status) == (D("0.010"), "EXPIRED")
    assert account.position(BTC).amount == 0


def test_conditional_types_on_the_order_endpoint_answer_4120() -> None:
    """STOP_MARKET and friends on /fapi/v1/order point to the Algo Order API."""
    params = {"symbol": BTC, "side": "SELL", "type": "STOP_MARKET", "quantity": "0.01",
              "stopPrice": "58000"}
    with pytest.raises(SimError) as excinfo:
        parse_order(params)
    assert code_of(excinfo) == -4120
    assert "Algo Order API" in excinfo.value.msg


@pytest.mark.parametrize("client_id", ["", "x" * 37, "bad id", "émoji"])
def test_client_order_id_must_match_the_exchange_pattern(client_id: str) -> None:
    """newClientOrderId outside ^[\\.A-Z\\:/a-z0-9_-]{1,36}$ answers -4015."""
    params = {"symbol": BTC, "side": "BUY", "type": "MARKET", "quantity": "0.01",
              "newClientOrderId": client_id}
    with pytest.raises(SimError) as excinfo:
        parse_order(params)
    assert code_of(excinfo) == -4015


def test_repeated_client_order_id_is_duplicated(engine: Engine, account: Account) -> None:
    """A client id used before (open or not) answers -4116; a retry cannot double a position."""
    request = OrderRequest(BTC, "BUY", "MARKET", D("0.010"), client_order_id="tw-abc-entry")
    engine.place_order(account.api_key, request)
    with pytest.raises(SimError) as excinfo:
        engine.place_order(account.api_key, request)
    assert (code_of(excinfo), excinfo.value.msg) == (-4116, "ClientOrderId is duplicated.")
    assert account.position(BTC).amount == D("0.010")


def test_order_ids_increment_per_symbol(engine: Engine, account: Account) -> None:
    """orderId counts up within a symbol; each symbol has its own sequence."""
    ids = []
    for symbol, qty in ((BTC, "0.010"), (BTC, "0.010"), ("ETHUSDT", "0.010")):
        ids.append(engine.place_order(account.api_key,
                                      OrderRequest(symbol, "BUY", "MARKET", D(qty))).order_id)
    assert ids[1] == ids[0] + 1
    assert ids[2] == ids[0]


def test_cancel_of_unknown_or_finished_order_answers_2011(
    engine: Engine, account: Account
) -> None:
    """DELETE order on an unknown or already filled order is -2011; GET unknown is -2013."""
    order = engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "MARKET", D("0.01")))
    with pytest.raises(SimError) as filled:
        engine.cancel_order(account.api_key, BTC, order.order_id)
    with pytest.raises(SimError) as unknown:
        engine.cancel_order(account.api_key, BTC, 1)
    with pytest.raises(SimError) as query:
        engine.get_order(account.api_key, BTC, client_order_id="nope")
    assert (code_of(filled), code_of(unknown), code_of(query)) == (-2011, -2011, -2013)


def test_cancel_resting_limit_emits_canceled(engine: Engine, account: Account) -> None:
    """Cancelling a resting LIMIT order pushes ORDER_TRADE_UPDATE CANCELED only."""
    order = engine.place_order(account.api_key, OrderRequest(BTC, "BUY", "LIMIT", D("0.010"),
                                                             D("59000")))
    engine.drain_events()
    engine.cancel_order(account.api_key, BTC, client_order_id=order.client_order_id)
    assert events(engine) == ["ORDER_TRADE_UPDATE CANCELED"]
    assert engine.open_orders(account.api_key) == []


def test_listen_key_post_returns_the_active_key_and_extends_it(
    engine: Engine, account: Account, clock: ManualClock
) -> None:
    """POST twice gives the same key; its life restarts at 60 minutes from the second POST."""
    key = engine.start_listen_key(account.api_key)
    clock.advance(50 * 60_000)
    assert engine.start_listen_key(account.api_key) == key
    clock.advance(50 * 60_000)
    engine.tick()
    assert engine.active_listen_key(account.api_key) == key
    assert engine.drain_events() == []


def test_listen_key_expiry_notifies_then_goes_silent(
    engine: Engine, account: Account, clock: ManualClock
) -> None:
    """At expiry the key's subscribers get listenKeyExpired; later events have no stream;
    PUT answers -1125 and POST issues a new key."""
    key = engine.start_listen_key(account.api_key)
    clock.advance(60 * 60_000)
    engine.tick()
    (expired,) = engine.drain_events()
    assert expired.listen_key == key
    assert expired.payload == {"e": "listenKeyExpired", "E": clock.now_ms(), "listenKey": key}
    market(engine, account, "BUY", "0.010")
    assert {d.listen_key for d in engine.drain_events()} == {None}
    with pytest.raises(SimError) as excinfo:
        engine.keepalive_listen_key(account.api_key)
    assert code_of(excinfo) == -1125
    assert engine.start_listen_key(account.api_key) != key


def test_keepalive_extends_and_delete_invalidates(
    engine: Engine, account: Account, clock: ManualClock
) -> None:
    """PUT extends the key by 60 minutes; DELETE ends it at once (no expiry event)."""
    key = engine.start_listen_key(account.api_key)
    clock.advance(59 * 60_000)
    assert engine.keepalive_listen_key(account.api_key) == key
    clock.advance(59 * 60_000)
    engine.tick()
    assert engine.active_listen_key(account.api_key) == key
    engine.close_listen_key(account.api_key)
    engine.tick()
    assert engine.active_listen_key(account.api_key) is None
    assert engine.drain_events() == []


class TickingClock(ManualClock):
    """A clock that moves 1 ms every time it is read (as a real one may between two reads)."""

    def now_ms(self) -> int:
        self.advance(1)
        return super().now_ms()


def test_a_fills_stream_time_is_its_trade_time() -> None:
    """The TRADE event's ``T`` (and ``E``) is the trade's ``time`` as REST ``userTrades`` shows
    it, however the clock moves while the fill is booked: reconciliation rebuilds missed fills
    from the REST side, and both sides must agree (a CI flake had them 1 ms apart)."""
    engine = Engine(TickingClock())
    account = engine.create_account(D("10000"))
    engine.drain_events()
    market(engine, account, "BUY", "0.010")
    [trade] = engine.user_trades(account.api_key, BTC)
    [fill] = [d.payload for d in engine.drain_events()
              if d.payload["e"] == "ORDER_TRADE_UPDATE" and d.payload["o"]["x"] == "TRADE"]
    assert fill["T"] == fill["o"]["T"] == trade.time
