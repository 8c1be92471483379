"""The sans-I/O user-stream session: routing, expiry, malformed frames."""

import json

from tradewire.streams.session import (
    AccountRef,
    ControlReply,
    KeyExpired,
    Publish,
    UserStreamSession,
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
