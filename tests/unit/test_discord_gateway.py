"""The sans-I/O Discord gateway session: handshake, heartbeats, resume decisions, close codes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tradewire.intake.discord.gateway import (
    DEFAULT_INTENTS,
    GUILD_MESSAGES,
    GUILDS,
    MESSAGE_CONTENT,
    Dispatch,
    Fatal,
    GatewaySession,
    IdentifyBudget,
    Reconnect,
    Send,
    StartHeartbeat,
)

TOKEN = "bot-token-secret"


def frame(op: int, d: Any = None, t: str | None = None, s: int | None = None) -> str:
    return json.dumps({"op": op, "d": d, "t": t, "s": s})


HELLO = frame(10, {"heartbeat_interval": 41250})
READY = frame(0, {"session_id": "sess-1", "resume_gateway_url": "wss://resume.example",
                  "user": {"id": "900", "bot": True}, "guilds": []}, "READY", 1)


def ready_session() -> GatewaySession:
    session = GatewaySession(TOKEN)
    session.connection_opened()
    session.feed(HELLO)
    session.feed(READY)
    return session


def sent_ops(actions: list[Any]) -> list[int]:
    return [a.payload["op"] for a in actions if isinstance(a, Send)]


def test_hello_starts_the_heartbeat_and_identifies_with_token_and_intents() -> None:
    """A fresh session answers Hello with Identify carrying the token and the three intents."""
    session = GatewaySession(TOKEN)
    session.connection_opened()
    start, identify = session.feed(HELLO)
    assert start == StartHeartbeat(41.25)
    assert isinstance(identify, Send)
    assert identify.payload["op"] == 2
    assert identify.payload["d"]["token"] == TOKEN
    assert identify.payload["d"]["intents"] == GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT
    assert DEFAULT_INTENTS == (1 << 0) | (1 << 9) | (1 << 15)
    assert TOKEN not in repr(identify) and TOKEN not in repr(session)


def test_ready_is_dispatched_and_remembered_for_resume() -> None:
    """READY gives the session id and resume URL; its sequence number is tracked."""
    session = ready_session()
    assert (session.session_id, session.resume_url, session.seq) == (
        "sess-1", "wss://resume.example", 1)
    assert session.ready and session.can_resume and session.user_id == "900"


def test_dispatches_pass_through_and_advance_the_sequence() -> None:
    """Every op 0 event is handed out as a Dispatch, and its s becomes the sequence."""
    session = ready_session()
    data = {"id": "1", "channel_id": "2", "content": "hi"}
    assert session.feed(frame(0, data, "MESSAGE_CREATE", 5)) == [Dispatch("MESSAGE_CREATE", data)]
    assert session.seq == 5


def test_heartbeats_carry_the_last_sequence_and_need_an_ack() -> None:
    """A beat sends op 1 with the last seq; a second beat without an ACK means a zombie socket."""
    session = ready_session()
    [beat] = session.heartbeat_due()
    assert isinstance(beat, Send) and beat.payload == {"op": 1, "d": 1}
    session.feed(frame(11))
    assert sent_ops(session.heartbeat_due()) == [1]
    [zombie] = session.heartbeat_due()
    assert isinstance(zombie, Reconnect) and not zombie.cooldown
    assert session.can_resume  # a zombie socket is resumed, not re-identified


def test_a_heartbeat_request_from_the_server_is_answered_at_once() -> None:
    """Op 1 from the server asks for an immediate heartbeat."""
    assert [a.payload for a in ready_session().feed(frame(1)) if isinstance(a, Send)] == [
        {"op": 1, "d": 1}]


def test_reconnect_request_keeps_the_session_and_the_next_hello_resumes() -> None:
    """After op 7 the client reconnects and answers Hello with Resume (session id, last seq)."""
    session = ready_session()
    session.feed(frame(0, {}, "TYPING_START", 7))
    [reconnect] = session.feed(frame(7))
    assert isinstance(reconnect, Reconnect)
    session.connection_opened()
    _, resume = session.feed(HELLO)
    assert isinstance(resume, Send)
    assert resume.payload == {"op": 6, "d": {"token": TOKEN, "session_id": "sess-1", "seq": 7}}
    assert not session.ready
    session.feed(frame(0, {}, "RESUMED", 8))
    assert session.ready


def test_invalid_session_not_resumable_forgets_it_and_identifies_again() -> None:
    """Op 9 with d=false drops the session; after a cooldown the next Hello identifies."""
    session = ready_session()
    assert session.feed(frame(9, False)) == [
        Reconnect("invalid session (op 9, resumable=False)", cooldown=True)]
    assert not session.can_resume
    session.connection_opened()
    assert sent_ops(session.feed(HELLO)) == [2]
    assert session.identifies == 2


def test_invalid_session_resumable_keeps_it() -> None:
    """Op 9 with d=true may be resumed."""
    session = ready_session()
    [action] = session.feed(frame(9, True))
    assert isinstance(action, Reconnect) and session.can_resume


@pytest.mark.parametrize("code", [None, 1000, 1001, 1006, 4000, 4001, 4002, 4003, 4005, 4008])
def test_ordinary_closes_are_resumed(code: int | None) -> None:
    """Drops and recoverable close codes reconnect and keep the session for Resume."""
    session = ready_session()
    [action] = session.connection_closed(code)
    assert isinstance(action, Reconnect) and session.can_resume


@pytest.mark.parametrize("code", [4007, 4009])
def test_closes_that_end_the_session_reconnect_with_identify(code: int) -> None:
    """Invalid seq and session timeout reconnect, but with a fresh Identify."""
    session = ready_session()
    [action] = session.connection_closed(code)
    assert isinstance(action, Reconnect) and not session.can_resume


def test_disallowed_intents_is_fatal_and_names_the_privileged_intent() -> None:
    """Close 4014 stops the bot with a message naming MESSAGE_CONTENT and where to enable it."""
    [fatal] = ready_session().connection_closed(4014)
    assert isinstance(fatal, Fatal) and fatal.code == 4014
    assert "MESSAGE_CONTENT" in fatal.message and "Developer Portal" in fatal.message


@pytest.mark.parametrize("code", [4004, 4010, 4011, 4012, 4013])
def test_other_fatal_close_codes_stop(code: int) -> None:
    """Authentication failure, sharding, version and intents errors cannot be retried."""
    [fatal] = ready_session().connection_closed(code)
    assert isinstance(fatal, Fatal) and str(code) in fatal.message
    assert TOKEN not in fatal.message


def test_frames_that_are_not_gateway_json_are_counted_and_ignored() -> None:
    """Binary garbage, non-objects and objects without an op produce nothing."""
    session = ready_session()
    assert session.feed(b"\x78\x9c garbage") == []
    assert session.feed("[1,2]") == []
    assert session.feed('{"t": "X"}') == []
    assert session.feed("[" * 5_000 + "]" * 5_000) == []  # deeper than json's recursion limit
    assert session.malformed == 4 and session.seq == 1


def test_identify_budget_spaces_identifies_and_caps_the_day() -> None:
    """One Identify per interval; once the daily budget is spent, wait for the oldest to expire."""
    budget = IdentifyBudget(interval_s=5.0, per_day=2)
    assert budget.wait_s(100.0) == 0.0
    budget.spend(100.0)
    assert budget.wait_s(102.0) == pytest.approx(3.0)
    budget.spend(105.0)
    assert budget.wait_s(200.0) == pytest.approx(86_400 + 100.0 - 200.0)
    assert budget.wait_s(100.0 + 86_400) == 0.0
