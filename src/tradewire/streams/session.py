"""Sans-I/O user-data stream session: text frames in, actions out. Never awaits.

Handles both the raw form (``/private/ws/<listenKey>``: events unwrapped) and the combined form
(``/private/stream``: ``{"stream": "<listenKey>", "data": {...}}``, routed by the key before any
``@``). A frame that is not valid JSON is not dropped: it becomes a ``Publish`` of a
``MALFORMED`` event so that it ends, visibly, in the dead-letter queue.

Publishing re-serialises every event into the bus envelope, the costliest step per event; a
``Publish`` therefore carries, where it is certain, the exact JSON text of its payload
(``raw``), which the envelope embeds as received (``Envelope.raw_event``). Certain means: on a
raw stream, a text frame that is one JSON object (the whole frame is the event); on a combined
stream, a text frame of exactly the shape ``{"stream":"<key>","data":{...}}`` (no spaces, no
escapes in the key, nothing after ``data``), whose ``data`` value is parsed straight from its
place in the frame, so its text is known to be that object alone. Any other frame is parsed as
before and publishes without ``raw``.

Frames arrive as the socket's bytes (text frames are not decoded to ``str`` first: the payload's
``raw`` is a slice of them). An exact combined frame is parsed with orjson, which reads every
JSON text the same as ``json`` except those it refuses (NaN, numbers beyond a float, lone
surrogates, invalid UTF-8) and integers beyond 64 bits (it reads them as floats); a frame with
such a number (a run of 19 digits: cheaper to find than to rule out) or one orjson refuses is
read by ``json`` as before. A frame that is not UTF-8 is ``MALFORMED`` like one that is not JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from tradewire.bus.base import Envelope
from tradewire.errors import UNREADABLE_JSON, PermanentError
from tradewire.exchange.event_ids import canonical_json, event_id, event_symbol


@dataclass(frozen=True)
class AccountRef:
    account_id: int
    user_id: int


_DECODER = json.JSONDecoder()
_COMBINED = re.compile(r'\{"stream":"([^"\\\x00-\x1f]*)","data":')
"""The head of a combined frame in the exact shape whose ``data`` text can be embedded."""
_EXACT = re.compile(rb'\{"stream":"([^"\\\x00-\x1f]*)","data":\{')
"""``_COMBINED`` over bytes, up to the ``{`` that opens ``data`` (the orjson path)."""
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19  # the shortest integer beyond 64 bits: -9223372036854775809


@dataclass(frozen=True, init=False)
class Publish:
    account: AccountRef
    payload: dict[str, Any]
    # The JSON text ``payload`` was parsed from, exactly that object (see the module docstring);
    # None when not certain. Not part of equality.
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def __init__(self, account: AccountRef, payload: dict[str, Any],
                 raw: bytes | None = None) -> None:
        """The dataclass ``__init__`` at half the cost (as ``Envelope.__init__``: one per
        event)."""
        state = self.__dict__
        state["account"] = account
        state["payload"] = payload
        state["raw"] = raw


@dataclass(frozen=True)
class KeyExpired:
    account: AccountRef
    listen_key: str


@dataclass(frozen=True)
class ControlReply:
    """The answer to a control message: ``result`` on success, ``error`` (the exchange's
    ``{"code", "msg"}``) when it was refused."""

    request_id: int
    result: Any
    error: dict[str, Any] | None = None


Action = Publish | KeyExpired | ControlReply


class UserStreamSession:
    """Routes frames of one connection to the accounts whose listenKeys it carries."""

    def __init__(self) -> None:
        self._routes: dict[str, AccountRef] = {}
        self.frames = 0

    def add(self, listen_key: str, account: AccountRef) -> None:
        self._routes[listen_key] = account

    def remove(self, listen_key: str) -> None:
        self._routes.pop(listen_key, None)

    def __contains__(self, listen_key: object) -> bool:
        return listen_key in self._routes

    @property
    def keys(self) -> list[str]:
        return list(self._routes)

    def feed(self, frame: bytes | str) -> list[Action]:
        """Interpret one frame: the socket's bytes (a ``str`` is read as its UTF-8)."""
        self.frames += 1
        data = _utf8(frame) if isinstance(frame, str) else frame
        if data is not None and (exact := self._exact(data)) is not None:
            return exact
        if isinstance(frame, str):
            return self._parse(frame, data)
        try:
            text = frame.decode()
        except UnicodeDecodeError:
            return self._malformed(frame, "not JSON")
        return self._parse(text, frame)

    def _exact(self, frame: bytes) -> list[Action] | None:
        """The orjson path of an exact combined frame (None: not that shape, or a text orjson
        may read otherwise than ``json``: the caller parses it as before)."""
        head = _EXACT.match(frame)
        if head is None or not frame.endswith(b"}}"):
            return None
        raw = frame[head.end() - 1 : -1]  # from the "{" of data to the "}" before the last
        if raw.translate(_DIGITS_AS_ZERO).find(_NINETEEN_DIGITS) >= 0:  # ("in": slower)
            return None
        try:
            payload = orjson.loads(raw)  # an object: it starts with "{" and nothing follows it
            key = head.group(1).decode().split("@", 1)[0]
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            return None
        return self._event(self._routes.get(key), key, payload, raw)

    def _parse(self, text: str, data: bytes | None) -> list[Action]:
        """Any frame, read by ``json``; ``data``: its UTF-8 (None: it has a lone surrogate)."""
        if (head := _COMBINED.match(text)) is not None:
            combined = self._combined(text, head)
            if combined is not None:
                return combined
        try:
            message = json.loads(text)
        except UNREADABLE_JSON:
            return self._malformed(text, "not JSON")
        if not isinstance(message, dict):
            return self._malformed(text, "not a JSON object")
        if "id" in message and ("result" in message or "code" in message):
            return self._reply(message)
        if "stream" in message and isinstance(message.get("data"), dict):
            key = str(message["stream"]).split("@", 1)[0]
            return self._event(self._routes.get(key), key, message["data"])
        key = next(iter(self._routes), "")
        return self._event(self._routes.get(key), key, message, data)  # the frame is the event

    def _combined(self, text: str, head: re.Match[str]) -> list[Action] | None:
        """A frame ``{"stream":"<key>","data":{...}}`` exactly: ``data`` parsed from its
        place, so its text is known (None: not exactly that shape; parse it whole)."""
        start = head.end()
        try:
            data, end = _DECODER.raw_decode(text, start)
        except UNREADABLE_JSON:
            return None
        if end != len(text) - 1 or text[end] != "}" or not isinstance(data, dict):
            return None
        key = head.group(1).split("@", 1)[0]
        return self._event(self._routes.get(key), key, data, _utf8(text[start:end]))

    def _reply(self, message: dict[str, Any]) -> list[Action]:
        try:
            request_id = int(message["id"])
        except (TypeError, ValueError):
            return []  # not one of ours (we only send integer ids)
        if "result" in message:
            return [ControlReply(request_id, message["result"])]
        error = {"code": message.get("code"), "msg": message.get("msg")}
        return [ControlReply(request_id, None, error)]

    def _event(self, account: AccountRef | None, key: str, payload: dict[str, Any],
               raw: bytes | None = None) -> list[Action]:
        if account is None:
            return []  # a key we no longer carry: its account is served elsewhere
        if payload.get("e") == "listenKeyExpired":
            return [Publish(account, payload, raw), KeyExpired(account, key)]
        return [Publish(account, payload, raw)]

    def _malformed(self, text: str | bytes, why: str) -> list[Action]:
        raw = text.decode(errors="replace") if isinstance(text, bytes) else text
        key = next(iter(self._routes), "")
        account = self._routes.get(key)
        if account is None:
            return []
        return [Publish(account, {"e": "MALFORMED", "reason": why, "raw": raw[:10_000]})]


def _utf8(text: str) -> bytes | None:
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: let the envelope serialise the payload
        return None


def make_envelope(
    account: AccountRef, payload: dict[str, Any], received_ms: int, *, synthetic: bool = False,
    raw: bytes | None = None,
) -> Envelope:
    """The bus envelope of one payload: its stable event id, symbol and receipt time. A JSON
    payload that is not an event we can identify is kept whole as ``MALFORMED`` (it ends,
    visibly, in the dead-letter queue). ``raw``: the exact JSON text of ``payload``
    (``Publish.raw``), embedded as received instead of serialising ``payload`` again."""
    try:
        eid = event_id(account.account_id, payload)
    except PermanentError as exc:
        payload = {"e": "MALFORMED", "reason": str(exc), "raw": canonical_json(payload)}
        eid = event_id(account.account_id, payload)
        raw = None  # the payload is no longer that text
    return Envelope(
        event_id=eid,
        account_id=account.account_id,
        user_id=account.user_id,
        symbol=event_symbol(payload),
        received_ms=received_ms,
        event=payload,
        synthetic=synthetic,
        raw_event=raw,
    )
