"""Stable event ids: same event, same id; different events, different ids."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tradewire.errors import PermanentError
from tradewire.exchange.event_ids import event_id, event_symbol

WIRE = Path(__file__).parent.parent / "fixtures" / "wire"


def events(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((WIRE / name).read_text())["events"]
    return data


ALL = [event for path in sorted(WIRE.glob("ws_*.json")) for event in events(path.name)]


def test_every_golden_event_has_a_distinct_id() -> None:
    """No two different golden events share an id."""
    ids = [event_id(7, payload) for payload in ALL]
    assert len(set(ids)) == len(ids)


def test_the_same_event_twice_gets_the_same_id() -> None:
    """A redelivery (or a copy from an overlapping socket, keys reordered) has the same id."""
    for payload in ALL:
        reordered = json.loads(json.dumps(payload, sort_keys=True))
        assert event_id(7, reordered) == event_id(7, copy.deepcopy(payload))


def test_ids_are_prefixed_by_account() -> None:
    """The same payload on two accounts gives two ids, each starting with its account id."""
    payload = events("ws_trade_lite.json")[0]
    assert event_id(7, payload).startswith("7:") and event_id(8, payload).startswith("8:")
    assert event_id(7, payload) != event_id(8, payload)


def test_order_update_ids_come_from_exchange_ids_not_formatting() -> None:
    """A re-synthesised ORDER_TRADE_UPDATE (other times, other decimal format) has the same id."""
    original = events("ws_stop_loss_triggered.json")[4]
    synthesised = copy.deepcopy(original)
    synthesised["E"] += 5000
    synthesised["o"]["z"] = "0.01"
    synthesised["o"]["n"] = "0.2899505"
    assert event_id(1, synthesised) == event_id(1, original)
    assert event_id(1, original) == "1:otu:BTCUSDT:712345678901:TRADE:FILLED:6123456789:0.01"


def test_the_fields_that_tell_events_apart_change_the_id() -> None:
    """Another trade, another status, another cumulative qty or another algo status: another id."""
    fill = events("ws_stop_loss_triggered.json")[4]
    variants = [
        ("t", 6123456790),
        ("X", "PARTIALLY_FILLED"),
        ("z", "0.005"),
        ("i", 1),
        ("s", "ETHUSDT"),
    ]
    for key, value in variants:
        other = copy.deepcopy(fill)
        other["o"][key] = value
        assert event_id(1, other) != event_id(1, fill), key
    algo = events("ws_algo_new.json")[0]
    triggered = copy.deepcopy(algo)
    triggered["o"]["X"] = "TRIGGERED"
    assert event_id(1, triggered) != event_id(1, algo)


def test_amendments_of_one_order_are_told_apart() -> None:
    """Two AMENDMENT pushes of one order (same x/X/t/z) differ by what was amended."""
    base = copy.deepcopy(events("ws_limit_canceled.json")[0])
    base["o"].update(x="AMENDMENT", X="NEW")
    second = copy.deepcopy(base)
    second["o"]["p"] = "2990.00"
    assert event_id(1, base) != event_id(1, second)


def test_account_updates_hash_their_content() -> None:
    """Two ACCOUNT_UPDATEs with the same T and reason but different balances differ."""
    first = events("ws_account_update.json")[0]
    other = copy.deepcopy(first)
    other["a"]["B"][0]["wb"] = "1.0"
    assert event_id(1, first).startswith("1:acct:1767024000000:FUNDING_FEE:")
    assert event_id(1, first) != event_id(1, other)


def test_unmodelled_events_are_hashed_and_listen_key_expiry_named() -> None:
    """Unknown event types get a content hash; listenKeyExpired is key + E."""
    margin_call = events("ws_unmodelled_events.json")[0]
    assert event_id(1, margin_call).startswith("1:raw:") and len(event_id(1, margin_call)) == 6 + 64
    expired = events("ws_listen_key_expired.json")[0]
    assert event_id(1, expired) == f"1:lke:{expired['listenKey']}:1767003600000"


@pytest.mark.parametrize(
    "payload",
    [
        None,
        ["ORDER_TRADE_UPDATE"],
        {"E": 1},
        {"e": "ORDER_TRADE_UPDATE", "E": 1},
        {"e": "ORDER_TRADE_UPDATE", "E": 1, "o": {"s": "BTCUSDT", "i": "x"}},
        {"e": "ALGO_UPDATE", "E": 1, "o": {"s": "BTCUSDT", "X": "NEW"}},
        {"e": "TRADE_LITE", "E": 1, "s": "BTCUSDT"},
    ],
)
def test_a_payload_without_the_needed_ids_is_permanent_error(payload: object) -> None:
    """No id is invented for a payload lacking the exchange ids its type needs."""
    with pytest.raises(PermanentError):
        event_id(1, payload)


def test_event_symbol() -> None:
    """The symbol of order, algo and trade events; of a one-symbol ACCOUNT_UPDATE; else ""."""
    stop_loss = events("ws_stop_loss_triggered.json")
    assert [event_symbol(p) for p in stop_loss] == ["BTCUSDT"] * 6
    assert event_symbol(events("ws_trade_lite.json")[0]) == "ETHUSDT"
    cross, isolated, deposit = events("ws_account_update.json")
    assert (event_symbol(cross), event_symbol(isolated), event_symbol(deposit)) == (
        "BTCUSDT",
        "ETHUSDT",
        "",
    )
    assert event_symbol(events("ws_listen_key_expired.json")[0]) == ""
    assert event_symbol(None) == "" and event_symbol({"o": {"s": 5}}) == ""
