"""ACCOUNT_UPDATE ids hash the canonical JSON of their body; the orjson fast path writes the
same bytes as ``canonical_json`` or is not taken (the ids must never change)."""

import json
import math
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradewire.exchange.event_ids import (
    _body_digest,
    _digest,
    _text_rows,
    canonical_json,
    event_id,
)
from tradewire.exchange.fields import Fields

# any unicode except lone surrogates (their own test below), control characters included
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
JSON_LEAVES = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | TEXT
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=25,
)
ODD_LEAVES = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers()
    | st.sampled_from(["\ud800", "a\udfffb", 1e-05, 1e-07, 1e16, 1.5, -0.0, 2**64, -(2**63) - 1])
    | st.just(Decimal("1.10"))
)
ANY = st.recursive(
    JSON_LEAVES | ODD_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=25,
)
ROWS = st.lists(st.dictionaries(TEXT, TEXT, max_size=6), max_size=3)
TEXT_BODIES = st.dictionaries(TEXT, TEXT | ROWS, max_size=5)


def outcome(digest: Any, value: object) -> object:
    """The digest, or the type of what it raised."""
    try:
        return digest(value)
    except Exception as exc:  # the fast path must raise what the stdlib path raises
        return type(exc)


@given(JSON)
def test_orjson_with_sorted_keys_writes_canonical_json_for_ints_strings_objects_lists(
    value: object,
) -> None:
    """The measured fact the fast path rests on: for dict/list/str/int (64 bits)/bool/None,
    escapes, non-ASCII and key order (by code point) included, the bytes are the same."""
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == canonical_json(value).encode()


@given(TEXT_BODIES)
def test_a_body_of_strings_takes_the_fast_path_and_hashes_the_same(body: dict[str, Any]) -> None:
    """Every body of strings and lists of string-valued objects is hashed by orjson, to the
    same digest as ``canonical_json``."""
    assert _text_rows(body)
    assert _body_digest(body) == _digest(body)


@given(st.dictionaries(TEXT, ANY, max_size=5))
def test_any_body_hashes_as_the_stdlib_encoder_does(body: dict[str, Any]) -> None:
    """Floats, NaN, big ints, lone surrogates, Decimals anywhere in the body: the same digest
    (or the same error) as before, whichever path is taken."""
    assert outcome(_body_digest, body) == outcome(_digest, body)


@pytest.mark.parametrize(
    "odd",
    [1e-05, 1e-07, 1e16, 0.1, math.nan, math.inf, 2**64, -(2**63) - 1, Decimal("1.10"), 7, None,
     True, {"x": "y"}, ["y"]],
)
def test_rows_that_are_not_all_strings_fall_back_to_the_stdlib_encoder(odd: object) -> None:
    """A float (orjson writes 1e-05 as 0.00001), NaN (orjson: null), a big int (orjson
    raises), a Decimal or any other non-string in a row is hashed by ``canonical_json``."""
    for body in ({"m": "ORDER", "B": [{"a": "USDT", "wb": odd}], "P": []},
                 {"m": "ORDER", "B": [], "x": odd}):
        assert not _text_rows(body)
        assert _body_digest(body) == _digest(body)
    assert canonical_json([1e-05, 1e-07, math.nan]) == "[1e-05,1e-07,NaN]"
    assert orjson.dumps([1e-05, 1e-07, math.nan]) == b"[0.00001,1e-7,null]"  # why it must


def test_a_lone_surrogate_or_a_key_that_is_no_string_is_no_fast_path() -> None:
    """What orjson refuses is left to ``_digest`` (same result or the same error)."""
    surrogate = {"m": "ORDER", "B": [{"a": "\ud800"}]}
    with pytest.raises(UnicodeEncodeError):
        _digest(surrogate)
    with pytest.raises(UnicodeEncodeError):
        _body_digest(surrogate)
    int_key: dict[Any, Any] = {"m": "ORDER", "B": [{1: "x"}]}
    assert _body_digest(int_key) == _digest(int_key)


def account_update(body: dict[str, Any], when: int = 1767024000123) -> dict[str, Any]:
    return {"e": "ACCOUNT_UPDATE", "E": when, "T": when, "a": body}


def test_account_update_ids_are_pinned() -> None:
    """The ids of known ACCOUNT_UPDATEs, as every earlier version computed them."""
    wallet = "10000.12345678"
    adjustment = {"m": "ADJUSTMENT", "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": "0"}],
                  "P": []}
    odd_text = {"m": "ORDER", "B": [{"a": "USDT", "wb": "é\u2028\x01\"\\/😀", "cw": wallet,
                                     "bc": "0"}],
                "P": [{"s": "BTCUSDT", "Z": "1", "a": "2", "é": "3", "😀": "4", "\uffff": "5"}]}
    assert event_id(1, account_update(adjustment)) == (
        "1:acct:1767024000123:ADJUSTMENT:a2e18038e8c59b2d")
    assert event_id(1, account_update(odd_text)) == "1:acct:1767024000123:ORDER:4dc8825acb435bae"


@given(TEXT_BODIES.map(lambda body: {**body, "m": "ORDER"}))
def test_the_fast_and_the_checked_account_update_paths_agree(body: dict[str, Any]) -> None:
    """The id from the fast path equals the one built from the body as ``Fields`` reads it."""
    payload = account_update(body)
    checked = Fields(json.loads(json.dumps(payload)), "ACCOUNT_UPDATE").obj("a").data
    assert event_id(3, payload) == f"3:acct:1767024000123:ORDER:{_digest(checked)[:16]}"
