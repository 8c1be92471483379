"""The sans-I/O user-stream session: routing, expiry, malformed frames."""

import inspect
import json
from dataclasses import MISSING, FrozenInstanceError, fields, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradewire.bus.base import Envelope
from tradewire.streams.session import (
    AccountRef,
    ControlReply,
    KeyExpired,
    Publish,
    UserStreamSession,
    make_envelope,
)

ALICE = AccountRef(account_id=1, user_id=10)
BOB = AccountRef(account_id=2, user_id=20)


def session() -> UserStreamSession:
    s = UserStreamSession()
    s.add("key-a", ALICE)
    s.add("key-b", BOB)
    return s


def test_combined_frames_are_routed_by_stream_key() -> None:
    """A wrapped event goes to the account owning the wrapper's key (before any '@')."""
    frame = {"stream": "key-b@ORDER_TRADE_UPDATE", "data": {"e": "ORDER_TRADE_UPDATE", "E": 1}}
    assert session().feed(json.dumps(frame)) == [Publish(BOB, frame["data"])]


def test_raw_frames_belong_to_the_single_key() -> None:
    """On a raw one-key socket, an unwrapped event belongs to that key's account."""
    s = UserStreamSession()
    s.add("key-a", ALICE)
    expected = [Publish(ALICE, {"e": "ACCOUNT_UPDATE", "E": 5})]
    assert s.feed('{"e":"ACCOUNT_UPDATE","E":5}') == expected


def test_listen_key_expiry_is_published_and_asks_for_a_new_key() -> None:
    """listenKeyExpired is both recorded and turned into a re-key action."""
    payload = {"e": "listenKeyExpired", "E": 9, "listenKey": "key-a"}
    actions = session().feed(json.dumps({"stream": "key-a", "data": payload}))
    assert actions == [Publish(ALICE, payload), KeyExpired(ALICE, "key-a")]


def test_frames_for_unknown_keys_are_ignored() -> None:
    """An event for a key this connection no longer carries produces nothing."""
    assert session().feed('{"stream":"gone","data":{"e":"X"}}') == []


def test_control_replies_are_recognised() -> None:
    """SUBSCRIBE replies are not events."""
    assert session().feed('{"result":null,"id":3}') == [ControlReply(3, None)]


def test_malformed_frames_are_kept_for_the_dead_letter_queue() -> None:
    """A frame that is not JSON is published as a MALFORMED event, never silently dropped."""
    s = UserStreamSession()
    s.add("key-a", ALICE)
    [action] = s.feed("{not json")
    assert isinstance(action, Publish)
    assert action.payload["e"] == "MALFORMED" and action.payload["raw"] == "{not json"


DEEP = "[" * 5_000 + "]" * 5_000  # 10 kB, deeper than json's recursion limit (orjson's: 1,024)


@pytest.mark.parametrize("frame", [
    DEEP,
    '{"stream":"key-a","data":{"e":"X","v":' + DEEP + "}}",
    '{"e":"ACCOUNT_UPDATE","v":' + DEEP + "}",
])
def test_a_frame_nested_too_deeply_is_malformed_and_the_session_goes_on(frame: str) -> None:
    """Nesting beyond the parsers' limits is a malformed frame like any other (kept for the
    DLQ), not an exception that would tear down a socket carrying 200 accounts."""
    s = UserStreamSession()
    s.add("key-a", ALICE)
    for form in (frame, frame.encode()):
        [action] = s.feed(form)
        assert isinstance(action, Publish) and action.payload["e"] == "MALFORMED"
        assert action.payload["reason"] == "not JSON"
    after = s.feed('{"stream":"key-a","data":{"e":"X","E":1}}')
    assert after == [Publish(ALICE, {"e": "X", "E": 1})]


# --- the received text embedded in the envelope ------------------------------------------------

ORDER = (
    '{"e":"ORDER_TRADE_UPDATE","E":1700000000123,"T":1700000000120,"o":{"s":"BTCUSDT",'
    '"c":"tw-1\\u00e9","S":"BUY","o":"LIMIT","x":"TRADE","q":"0.010","p":"65000.10","X":"PARTIALLY_FILLED",'
    '"i":8886774,"l":"0.004","z":"0.004","L":"65000.10","n":"0.0104","N":"USDT","t":42,'
    '"rp":"0","ps":"BOTH","R":false,"cp":false,"f":1e-3,"big":123456789012345678901234}}'
)


def _envelopes(s: UserStreamSession, frame: str) -> tuple[Publish, Envelope, Envelope]:
    """The action for ``frame``, and its envelope encoded with and without the raw text."""
    [action, *_] = s.feed(frame)
    assert isinstance(action, Publish)
    with_raw = make_envelope(action.account, action.payload, 5, raw=action.raw)
    plain = make_envelope(action.account, action.payload, 5)
    return action, Envelope.decode(with_raw.encode()), Envelope.decode(plain.encode())


def test_a_raw_streams_frame_is_embedded_whole_and_decodes_to_the_same_event() -> None:
    """``/private/ws``: the whole frame is the event; the body embeds it and decodes to the
    same envelope as serialising the parsed event."""
    s = UserStreamSession()
    s.add("key-a", ALICE)
    action, decoded, expected = _envelopes(s, ORDER)
    assert action.raw == ORDER.encode()
    assert decoded == expected and decoded.event == json.loads(ORDER)
    assert ORDER.encode() in make_envelope(ALICE, action.payload, 5, raw=action.raw).encode()


def test_an_exact_combined_frame_embeds_its_data_text() -> None:
    """``{"stream":"<key>","data":...}`` exactly: the ``data`` text is embedded (routing as
    before: by the key before any ``@``)."""
    frame = '{"stream":"key-b@ORDER_TRADE_UPDATE","data":' + ORDER + "}"
    action, decoded, expected = _envelopes(session(), frame)
    assert action.account == BOB and action.raw == ORDER.encode()
    assert decoded == expected and decoded.event == json.loads(ORDER)
    expired = '{"e":"listenKeyExpired","E":9,"listenKey":"key-a"}'
    actions = session().feed('{"stream":"key-a","data":' + expired + "}")
    assert actions == [Publish(ALICE, json.loads(expired)), KeyExpired(ALICE, "key-a")]
    assert isinstance(actions[0], Publish) and actions[0].raw == expired.encode()


def test_other_combined_shapes_publish_without_raw_text() -> None:
    """Any other shape (spaces, other keys, keys in another order, duplicate keys, an escaped
    key) is parsed whole as before: same action, no raw text."""
    data = {"e": "ACCOUNT_UPDATE", "E": 7}
    text = json.dumps(data, separators=(",", ":"))
    frames = [
        json.dumps({"stream": "key-b", "data": data}),  # spaces
        '{"data":' + text + ',"stream":"key-b"}',
        '{"stream":"key-b","data":' + text + ',"x":1}',
        '{"stream":"key-b","data":{"e":"X"},"data":' + text + "}",
        '{"stream":"key-b","data":' + text + ',"stream":"key-b"}',
        '{"stream":"key\\u002db","data":' + text + "}",  # "key-b" escaped
    ]
    s = session()
    s.add("key-b", BOB)
    for frame in frames + [frame.encode() for frame in frames]:
        [action] = s.feed(frame)
        assert action == Publish(BOB, data) and action.raw is None, frame
    [action] = s.feed('{"stream":"key-b","data":' + text + "}")
    assert action == Publish(BOB, data) and action.raw == text.encode()


def test_a_frame_that_is_no_identifiable_event_drops_its_raw_text() -> None:
    """A payload turned into ``MALFORMED`` by ``make_envelope`` is serialised, not embedded."""
    s = UserStreamSession()
    s.add("key-a", ALICE)
    [action] = s.feed('{"no":"event type"}')
    assert isinstance(action, Publish) and action.raw is not None
    envelope = make_envelope(ALICE, action.payload, 5, raw=action.raw)
    assert envelope.raw_event is None and envelope.event["e"] == "MALFORMED"
    assert Envelope.decode(envelope.encode()) == envelope


# --- frames as the socket's bytes --------------------------------------------------------------


def test_a_bytes_frame_reads_as_its_text() -> None:
    """The socket hands text frames over undecoded: the same actions as for the text, and the
    ``data`` bytes of an exact combined frame are the raw text, sliced without a copy of the
    text."""
    frame = '{"stream":"key-b@ORDER_TRADE_UPDATE","data":' + ORDER + "}"
    [action] = session().feed(frame.encode())
    assert action == Publish(BOB, json.loads(ORDER)) and action.raw == ORDER.encode()
    raw_stream = UserStreamSession()
    raw_stream.add("key-a", ALICE)
    [whole] = raw_stream.feed(ORDER.encode())
    assert whole == Publish(ALICE, json.loads(ORDER)) and whole.raw == ORDER.encode()
    assert session().feed(b'{"result":null,"id":3}') == [ControlReply(3, None)]


@pytest.mark.parametrize("frame", [b"\xff{not utf-8", b'{"stream":"key-a","data":{"e":"\xc3"}}'])
def test_a_frame_that_is_not_utf8_is_malformed(frame: bytes) -> None:
    """A frame that is not UTF-8 is published as MALFORMED (the dead-letter queue), its text
    read with replacement characters."""
    [action] = session().feed(frame)
    assert action == Publish(ALICE, {"e": "MALFORMED", "reason": "not JSON",
                                     "raw": frame.decode(errors="replace")})


ODD_NUMBERS = ["NaN", "-Infinity", "1e400", "18446744073709551616", "-9223372036854775809",
               "123456789012345678901234", "1e-7", "-0", "-0.0", "0.1"]


@pytest.mark.parametrize("number", ODD_NUMBERS)
def test_numbers_orjson_reads_otherwise_are_read_by_json(number: str) -> None:
    """NaN, infinities, numbers beyond a float, integers beyond 64 bits (which orjson would
    read as floats) and lone surrogates: the payload is exactly ``json``'s."""
    for data in ('{"e":"X","v":' + number + "}", '{"e":"X","s":"\\ud800","v":' + number + "}"):
        frame = '{"stream":"key-a","data":' + data + "}"
        [action] = session().feed(frame.encode())
        assert isinstance(action, Publish)
        assert repr(action.payload) == repr(json.loads(data)), frame
        assert action.raw == data.encode()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["\ud800", "a\udfffb"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=6), st.booleans())
def test_every_exact_combined_frame_reads_as_json_reads_it(
    data: dict[str, Any], ascii_only: bool
) -> None:
    """Whatever the payload (unicode, control characters, lone surrogates, floats, NaN, big
    ints), the bytes of an exact combined frame give ``json``'s payload, and its text as raw."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=ascii_only)
    frame = '{"stream":"key-b","data":' + text + "}"
    try:
        encoded = frame.encode()
    except UnicodeEncodeError:  # a lone surrogate written as itself: no bytes frame has it
        return
    [action] = session().feed(encoded)
    assert isinstance(action, Publish) and action.account == BOB
    assert repr(action.payload) == repr(json.loads(text))
    assert action.raw == text.encode()


def test_publish_and_envelope_keep_their_dataclass_behaviour() -> None:
    """The hand-written ``__init__``s take the fields' names and defaults; the instances stay
    frozen, compare without the raw text and ``dataclasses.replace`` works."""
    for cls in (Publish, Envelope):
        params = inspect.signature(cls.__init__).parameters
        assert [name for name in params if name != "self"] == [f.name for f in fields(cls)]
        for f in fields(cls):
            assert params[f.name].default == (
                inspect.Parameter.empty if f.default is MISSING else f.default)
    publish = Publish(ALICE, {"e": "X"}, b'{"e":"X"}')
    assert publish == Publish(ALICE, {"e": "X"}) and vars(publish)["raw"] == b'{"e":"X"}'
    envelope = make_envelope(ALICE, {"e": "X"}, 5, raw=b'{"e":"X"}')
    assert envelope == make_envelope(ALICE, {"e": "X"}, 5)
    assert vars(envelope).keys() == {f.name for f in fields(Envelope)}
    assert replace(envelope, symbol="BTCUSDT").symbol == "BTCUSDT"
    with pytest.raises(FrozenInstanceError):
        envelope.symbol = "ETHUSDT"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        publish.raw = None  # type: ignore[misc]
