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
    request_id: int
    result: Any


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
        if "id" in message and "result" in message:
            return [ControlReply(int(message["id"]), message["result"])]
        if "stream" in message and isinstance(message.get("data"), dict):
            key = str(message["stream"]).split("@", 1)[0]
            return self._event(self._routes.get(key), key, message["data"])
        key = next(iter(self._routes), "")
        return self._event(self._routes.get(key), key, message)

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
