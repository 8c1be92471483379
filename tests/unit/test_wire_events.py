"""User-stream wire structs, checked against the golden messages in ``tests/fixtures/wire``."""

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tradewire.errors import PermanentError
from tradewire.exchange.wire import (
    AccountUpdate,
    AlgoUpdate,
    ListenKeyExpired,
    OrderTradeUpdate,
    TradeLite,
    UnknownEvent,
    parse_event,
)

WIRE = Path(__file__).parent.parent / "fixtures" / "wire"
EVENT_FILES = sorted(WIRE.glob("ws_*.json"))


def events(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((WIRE / name).read_text())["events"]
    return data


def all_events() -> list[dict[str, Any]]:
    return [event for path in EVENT_FILES for event in events(path.name)]


def test_the_golden_set_is_complete() -> None:
    """Every sequence the brief names has a golden file."""
    names = {path.name for path in EVENT_FILES}
    assert {
        "ws_stop_loss_triggered.json",
        "ws_take_profit_close_position.json",
        "ws_limit_canceled.json",
        "ws_market_entry_fill.json",
        "ws_algo_new.json",
        "ws_algo_canceled.json",
        "ws_account_update.json",
        "ws_trade_lite.json",
        "ws_listen_key_expired.json",
    } <= names


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_every_golden_event_parses_to_its_struct(path: Path) -> None:
    """Each golden payload parses; modelled types never fall back to UnknownEvent."""
    for payload in events(path.name):
        event = parse_event(payload)
        if path.name == "ws_unmodelled_events.json":
            assert isinstance(event, UnknownEvent)
            assert event.e == payload["e"] and event.raw == payload
        else:
            assert not isinstance(event, UnknownEvent)


def test_stop_loss_sequence_reads_as_the_reference_describes() -> None:
    """§4.9(a): NEW, TRIGGERED(engine order id), fill with c = clientAlgoId, FINISHED."""
    parsed = [parse_event(p) for p in events("ws_stop_loss_triggered.json")]
    new, triggered, order_new, account, fill, finished = parsed
    assert isinstance(new, AlgoUpdate) and new.o.X == "NEW" and new.o.actual_order_id is None
    assert isinstance(triggered, AlgoUpdate) and triggered.o.actual_order_id == 712345678901
    assert isinstance(order_new, OrderTradeUpdate) and order_new.o.ot == "STOP_MARKET"
    assert isinstance(account, AccountUpdate) and account.a.m == "ORDER"
    assert account.a.P[0].pa == Decimal(0) and account.a.B[0].wb == Decimal("981.23")
    assert isinstance(fill, OrderTradeUpdate)
    assert (fill.o.x, fill.o.X, fill.o.i, fill.o.c) == (
        "TRADE",
        "FILLED",
        712345678901,
        "u42-sl-0001",
    )
    assert fill.o.rp == Decimal("-18.40000000") and fill.o.n == Decimal("0.28995050")
    assert fill.o.l == fill.o.z == Decimal("0.010") and fill.o.R is True
    assert isinstance(finished, AlgoUpdate) and finished.o.X == "FINISHED"
    assert finished.o.aq == Decimal("0.010") and finished.o.ap == Decimal("57990.10")


def test_amounts_are_decimals_from_strings_never_floats() -> None:
    """Every amount of every parsed struct is a Decimal equal to the string it came from."""
    fill = parse_event(events("ws_take_profit_close_position.json")[1])
    assert isinstance(fill, OrderTradeUpdate)
    assert fill.o.ap == Decimal("54995.00") and isinstance(fill.o.ap, Decimal)
    assert fill.o.cp is True and fill.o.ps == "SHORT" and fill.o.rp == Decimal("61.2")
    algo = parse_event(events("ws_take_profit_close_position.json")[0])
    assert isinstance(algo, AlgoUpdate) and algo.o.q == Decimal(0) and algo.o.cp is True


def test_account_update_variants() -> None:
    """Cross funding fee (only B), isolated funding fee (B and its position), deposit (no P)."""
    cross, isolated, deposit = (parse_event(p) for p in events("ws_account_update.json"))
    assert isinstance(cross, AccountUpdate) and cross.a.P == () and cross.a.S == "BTCUSDT"
    assert isinstance(isolated, AccountUpdate) and isolated.a.P[0].mt == "isolated"
    assert isolated.a.P[0].pa == Decimal("-0.5")
    assert isinstance(deposit, AccountUpdate) and deposit.a.B[0].bc == Decimal(500)


def test_trade_lite_and_listen_key_expired() -> None:
    """TRADE_LITE carries its ids; listenKeyExpired parses with or without the key, E int or str."""
    lite = parse_event(events("ws_trade_lite.json")[0])
    assert isinstance(lite, TradeLite) and (lite.s, lite.t, lite.i) == (
        "ETHUSDT",
        2900000001,
        8389765500,
    )
    assert lite.l == Decimal("0.2") and lite.m is True
    current, legacy = (parse_event(p) for p in events("ws_listen_key_expired.json"))
    assert isinstance(current, ListenKeyExpired) and current.listenKey.startswith("OfYG")
    assert (
        isinstance(legacy, ListenKeyExpired)
        and legacy.E == 1576653824250
        and legacy.listenKey == ""
    )


def test_unknown_extra_fields_are_ignored() -> None:
    """A payload with fields the parser does not know still parses (§4: tolerate them)."""
    payload = copy.deepcopy(events("ws_limit_canceled.json")[0])
    payload["zz"] = {"new": "thing"}
    payload["o"]["st"] = "OTOCO"
    payload["o"]["M"] = 7
    event = parse_event(payload)
    assert isinstance(event, OrderTradeUpdate) and event.o.X == "CANCELED"


def _broken(mutate: Any) -> dict[str, Any]:
    payload = copy.deepcopy(events("ws_stop_loss_triggered.json")[4])
    mutate(payload)
    return payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_broken(lambda p: p.pop("o")), "missing key 'o'"),
        (_broken(lambda p: p["o"].pop("i")), "ORDER_TRADE_UPDATE.o: missing key 'i'"),
        (_broken(lambda p: p["o"].update(z="12abc")), "ORDER_TRADE_UPDATE.o.z"),
        (_broken(lambda p: p["o"].update(l="NaN")), "ORDER_TRADE_UPDATE.o.l"),
        (_broken(lambda p: p["o"].update(ap=57990.1)), "expected a decimal string"),
        (_broken(lambda p: p["o"].update(i="seven")), "expected an integer"),
        (_broken(lambda p: p["o"].update(R="yes")), "expected a boolean"),
        (_broken(lambda p: p.update(o=["not", "an", "object"])), "expected a JSON object"),
        (_broken(lambda p: p.pop("e")), "'e'"),
        (["ORDER_TRADE_UPDATE"], "expected a JSON object"),
        ("ORDER_TRADE_UPDATE", "expected a JSON object"),
        (None, "expected a JSON object"),
    ],
    ids=[
        "missing-o",
        "missing-order-id",
        "garbage-number",
        "nan",
        "float-amount",
        "bad-int",
        "bad-bool",
        "o-not-object",
        "missing-e",
        "list",
        "string",
        "null",
    ],
)
def test_malformed_payloads_raise_permanent_error_naming_the_field(
    payload: object, message: str
) -> None:
    """A malformed payload is a PermanentError whose message says what is wrong where."""
    with pytest.raises(PermanentError, match=message.replace(".", r"\.")):
        parse_event(payload)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p["o"].pop("aid"),
        lambda p: p["o"].update(q="1,5"),
        lambda p: p.update(E=None),
    ],
    ids=["algo-missing-aid", "algo-bad-qty", "algo-null-E"],
)
def test_malformed_algo_updates_raise_permanent_error(mutate: Any) -> None:
    """ALGO_UPDATE payloads are held to the same standard."""
    payload = copy.deepcopy(events("ws_algo_new.json")[0])
    mutate(payload)
    with pytest.raises(PermanentError):
        parse_event(payload)


def test_every_golden_struct_keeps_amounts_exact() -> None:
    """No parsed amount is a float anywhere in the golden set."""
    for payload in all_events():
        event = parse_event(payload)
        if isinstance(event, OrderTradeUpdate | AlgoUpdate):
            values = vars(event.o).values()
        elif isinstance(event, TradeLite):
            values = vars(event).values()
        else:
            continue
        assert not any(isinstance(value, float) for value in values)


def _read_with_fields(payload: dict[str, Any]) -> OrderTradeUpdate:
    """``OrderTradeUpdate.from_json`` through ``Fields`` only (the fast path disabled)."""
    from tradewire.exchange.wire import OrderUpdate

    class _Mapping(dict[str, Any]):  # not exactly a dict: the fast path is not taken
        pass

    order = OrderUpdate.from_json(_Mapping(payload["o"]))
    slow = OrderTradeUpdate.from_json(_Mapping({**payload, "o": _Mapping(payload["o"])}))
    assert slow.o == order
    return slow


def _order_updates() -> list[dict[str, Any]]:
    return [e for e in all_events() if e.get("e") == "ORDER_TRADE_UPDATE"]


def test_the_fast_path_reads_every_golden_order_update_as_fields_does() -> None:
    """``OrderUpdate._plain`` (the worker's hot path) gives field for field what ``Fields``
    gives, types included."""
    assert _order_updates()
    for payload in _order_updates():
        fast, slow = OrderTradeUpdate.from_json(payload), _read_with_fields(payload)
        assert fast == slow
        assert [type(getattr(fast.o, k)) for k in vars(fast.o)] == [
            type(getattr(slow.o, k)) for k in vars(slow.o)]


@pytest.mark.parametrize("change", [
    {"i": "123"}, {"T": ""}, {"t": None}, {"m": "true"}, {"R": "false"}, {"p": ""},
    {"ap": None}, {"n": 3}, {"q": 1}, {"f": None}, {"ps": None}, {"N": None}, {"er": None},
    {"E": "1767000000000"},
], ids=str)
def test_unusual_but_valid_values_read_the_same_on_either_path(change: dict[str, Any]) -> None:
    """Values of another JSON type than usual (the strict readers accept them) leave the fast
    path for ``Fields``, with the same result."""
    payload = copy.deepcopy(_order_updates()[0])
    if "E" in change:
        payload.update(change)
    else:
        payload["o"].update(change)
    assert OrderTradeUpdate.from_json(payload) == _read_with_fields(payload)


def test_the_fast_path_decimal_cache_returns_equal_values() -> None:
    from tradewire.exchange.fields import plain_decimal

    assert plain_decimal("60000.10") == Decimal("60000.10")
    assert plain_decimal("60000.10") == Decimal("60000.10")  # cached
    assert str(plain_decimal("0.0100")) == "0.0100"  # exponent kept, as Decimal(text)
    assert plain_decimal("", True) == 0 and plain_decimal(None, True) == 0
