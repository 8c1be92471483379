"""Sans-I/O user-data stream session: text frames in, actions out. Never awaits.

Handles both the raw form (``/private/ws/<listenKey>``: events unwrapped) and the combined form
(``/private/stream``: ``{"stream": "<listenKey>", "data": {...}}``, routed by the key before any
``@``). A frame that is not valid JSON is not dropped: it becomes a ``Publish`` of a
``MALFORMED`` event so that it ends, visibly, in the dead-letter queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tradewire.bus.base import Envelope
from tradewire.errors import PermanentError
from tradewire.exchange.event_ids import canonical_json, event_id, event_symbol


@dataclass(frozen=True)
class AccountRef:
    account_id: int
    user_id: int


@dataclass(frozen=True)
class Publish:
    account: AccountRef
    payload: dict[str, Any]


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

    def feed(self, text: str | bytes) -> list[Action]:
        """Interpret one frame."""
        self.frames += 1
        try:
            message = json.loads(text)
        except ValueError:
            return self._malformed(text, "not JSON")
        if not isinstance(message, dict):
            return self._malformed(text, "not a JSON object")
        if "id" in message and ("result" in message or "code" in message):
            return self._reply(message)
        if "stream" in message and isinstance(message.get("data"), dict):
            key = str(message["stream"]).split("@", 1)[0]
            return self._event(self._routes.get(key), key, message["data"])
        key = next(iter(self._routes), "")
        return self._event(self._routes.get(key), key, message)

    def _reply(self, message: dict[str, Any]) -> list[Action]:
        try:
            request_id = int(message["id"])
        except (TypeError, ValueError):
            return []  # not one of ours (we only send integer ids)
        if "result" in message:
            return [ControlReply(request_id, message["result"])]
        error = {"code": message.get("code"), "msg": message.get("msg")}
        return [ControlReply(request_id, None, error)]

    def _event(self, account: AccountRef | None, key: str, payload: dict[str, Any]) -> list[Action]:
        if account is None:
            return []  # a key we no longer carry: its account is served elsewhere
        if payload.get("e") == "listenKeyExpired":
            return [Publish(account, payload), KeyExpired(account, key)]
        return [Publish(account, payload)]

    def _malformed(self, text: str | bytes, why: str) -> list[Action]:
        raw = text.decode(errors="replace") if isinstance(text, bytes) else text
        key = next(iter(self._routes), "")
        account = self._routes.get(key)
        if account is None:
            return []
        return [Publish(account, {"e": "MALFORMED", "reason": why, "raw": raw[:10_000]})]


def make_envelope(
    account: AccountRef, payload: dict[str, Any], received_ms: int, *, synthetic: bool = False
) -> Envelope:
    """The bus envelope of one payload: its stable event id, symbol and receipt time. A JSON
    payload that is not an event we can identify is kept whole as ``MALFORMED`` (it ends,
    visibly, in the dead-letter queue)."""
    try:
        eid = event_id(account.account_id, payload)
    except PermanentError as exc:
        payload = {"e": "MALFORMED", "reason": str(exc), "raw": canonical_json(payload)}
        eid = event_id(account.account_id, payload)
    return Envelope(
        event_id=eid,
        account_id=account.account_id,
        user_id=account.user_id,
        symbol=event_symbol(payload),
        received_ms=received_ms,
        event=payload,
        synthetic=synthetic,
    )
