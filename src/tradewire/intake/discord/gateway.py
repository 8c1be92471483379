"""Sans-I/O Discord gateway session: frames in, actions out. Never awaits, never reads a clock.

The adapter (``bot.py``) owns the socket and the timers and tells the session what happened:

    session.connection_opened()        a new socket is up (Hello not yet received)
    session.feed(frame)                a text frame arrived        -> actions
    session.heartbeat_due()            the heartbeat timer fired   -> actions
    session.connection_closed(code)    the socket closed (code None: dropped) -> actions

Actions: ``Send`` (JSON payload to write), ``StartHeartbeat`` (interval from Hello),
``Dispatch`` (an op 0 event), ``Reconnect`` (close with a non-1000 code and connect again;
``session.can_resume`` says whether the next Hello is answered with Resume or Identify) and
``Fatal`` (a close code that retrying cannot fix: stop and tell the operator why).

Opcodes and close codes: docs.discord.com/developers/topics/opcodes-and-status-codes.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any

from tradewire.errors import UNREADABLE_JSON, ConfigError

# gateway opcodes
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, INVALID_SESSION, HELLO, HEARTBEAT_ACK = (
    0, 1, 2, 6, 7, 9, 10, 11)

# gateway intents (bits)
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1  # privileged
GUILD_PRESENCES = 1 << 8  # privileged
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15  # privileged
DEFAULT_INTENTS = GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT

PRIVILEGED_INTENTS = {
    GUILD_MEMBERS: "GUILD_MEMBERS (Server Members Intent)",
    GUILD_PRESENCES: "GUILD_PRESENCES (Presence Intent)",
    MESSAGE_CONTENT: "MESSAGE_CONTENT (Message Content Intent)",
}

# close codes after which reconnecting cannot help
FATAL_CLOSE_CODES = {
    4004: "authentication failed: the bot token is wrong or was reset "
          "(Developer Portal -> your application -> Bot -> Reset Token)",
    4010: "invalid shard",
    4011: "sharding required: the bot is in too many guilds for one connection",
    4012: "invalid gateway API version (use v=10)",
    4013: "invalid intents: the intents value is not a valid bitfield",
}
DISALLOWED_INTENTS = 4014
# close codes after which the session is gone: reconnect with a fresh Identify
NEW_SESSION_CLOSE_CODES = {4007, 4009}
# the code the client closes with when it means to resume (1000/1001 would end the session)
RESUMABLE_CLIENT_CLOSE = 4000


class DiscordGatewayFatal(ConfigError):
    """Discord refused the bot in a way that retrying cannot fix (bad token, intents)."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Send:
    payload: dict[str, Any]

    def __repr__(self) -> str:  # payloads may carry the token: never print them whole
        return f"Send(op={self.payload.get('op')})"


@dataclass(frozen=True)
class StartHeartbeat:
    interval_s: float


@dataclass(frozen=True)
class Dispatch:
    event: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Reconnect:
    reason: str
    cooldown: bool = False  # after Invalid Session: wait 1-5 s before the next Identify


@dataclass(frozen=True)
class Fatal:
    code: int
    message: str


Action = Send | StartHeartbeat | Dispatch | Reconnect | Fatal


def privileged_names(intents: int) -> list[str]:
    return [name for bit, name in PRIVILEGED_INTENTS.items() if intents & bit]


def disallowed_intents_message(intents: int) -> str:
    names = ", ".join(privileged_names(intents)) or "none requested"
    return (
        f"Discord closed the gateway with 4014 (disallowed intents): this bot asked for the "
        f"privileged intent(s) {names}, which are not enabled for the application. Turn on "
        f"'Message Content Intent' in the Developer Portal (your application -> Bot -> "
        f"Privileged Gateway Intents) and start again; see docs/discord-bot.md."
    )


class GatewaySession:
    """One bot's gateway session across any number of connections."""

    def __init__(self, token: str, intents: int = DEFAULT_INTENTS,
                 *, properties: dict[str, str] | None = None) -> None:
        self._token = token
        self.intents = intents
        self.properties = properties or {
            "os": sys.platform, "browser": "tradewire", "device": "tradewire"}
        self.session_id: str | None = None
        self.resume_url: str | None = None
        self.seq: int | None = None
        self.user_id: str | None = None
        self.identifies = 0
        self.resumes = 0
        self.ready = False  # READY or RESUMED seen on the current connection
        self.malformed = 0
        self._awaiting_ack = False

    def __repr__(self) -> str:
        return f"GatewaySession(session_id={self.session_id!r}, seq={self.seq})"

    @property
    def can_resume(self) -> bool:
        return self.session_id is not None and self.seq is not None

    def connection_opened(self) -> None:
        self.ready = False
        self._awaiting_ack = False

    def feed(self, frame: str | bytes) -> list[Action]:
        """Interpret one frame (JSON text; other frames are counted and ignored)."""
        try:
            message = json.loads(frame)
        except UNREADABLE_JSON:
            self.malformed += 1
            return []
        if not isinstance(message, dict) or not isinstance(message.get("op"), int):
            self.malformed += 1
            return []
        if isinstance(message.get("s"), int):
            self.seq = message["s"]
        return self._on_op(message["op"], message.get("d"), message.get("t"))

    def _on_op(self, op: int, data: Any, event: Any) -> list[Action]:
        if op == DISPATCH:
            return self._on_dispatch(str(event), data if isinstance(data, dict) else {})
        if op == HELLO:
            return self._on_hello(data if isinstance(data, dict) else {})
        if op == HEARTBEAT_ACK:
            self._awaiting_ack = False
            return []
        if op == HEARTBEAT:  # the server asks for one now
            return [self._heartbeat()]
        if op == RECONNECT:
            return [Reconnect("server asked to reconnect (op 7)")]
        if op == INVALID_SESSION:
            if data is not True:
                self._forget_session()
            return [Reconnect(f"invalid session (op 9, resumable={data is True})", cooldown=True)]
        return []

    def _on_hello(self, data: dict[str, Any]) -> list[Action]:
        interval_ms = data.get("heartbeat_interval")
        interval_s = float(interval_ms) / 1000 if isinstance(interval_ms, int | float) else 41.25
        first = self._resume() if self.can_resume else self._identify()
        return [StartHeartbeat(interval_s), first]

    def _on_dispatch(self, event: str, data: dict[str, Any]) -> list[Action]:
        if event == "READY":
            self.session_id = _str_or_none(data.get("session_id"))
            self.resume_url = _str_or_none(data.get("resume_gateway_url"))
            user = data.get("user")
            self.user_id = _str_or_none(user.get("id")) if isinstance(user, dict) else None
            self.ready = True
        elif event == "RESUMED":
            self.ready = True
        return [Dispatch(event, data)]

    def heartbeat_due(self) -> list[Action]:
        """The timer fired: beat, or give up on a connection whose last beat was never ACKed."""
        if self._awaiting_ack:
            return [Reconnect("no heartbeat ACK since the last heartbeat (zombie connection)")]
        self._awaiting_ack = True
        return [self._heartbeat()]

    def connection_closed(self, code: int | None) -> list[Action]:
        """The socket closed by the server or the network (``None``: no close frame)."""
        if code == DISALLOWED_INTENTS:
            self._forget_session()
            return [Fatal(code, disallowed_intents_message(self.intents))]
        if code in FATAL_CLOSE_CODES:
            self._forget_session()
            return [Fatal(code, f"Discord closed the gateway with {code}: "
                                f"{FATAL_CLOSE_CODES[code]}")]
        if code in NEW_SESSION_CLOSE_CODES:
            self._forget_session()
        return [Reconnect(f"connection closed (code {code})")]

    def _heartbeat(self) -> Send:
        return Send({"op": HEARTBEAT, "d": self.seq})

    def _identify(self) -> Send:
        self.identifies += 1
        return Send({"op": IDENTIFY, "d": {
            "token": self._token, "intents": self.intents, "properties": dict(self.properties)}})

    def _resume(self) -> Send:
        self.resumes += 1
        return Send({"op": RESUME, "d": {
            "token": self._token, "session_id": self.session_id, "seq": self.seq}})

    def _forget_session(self) -> None:
        self.session_id = None
        self.resume_url = None
        self.seq = None


class IdentifyBudget:
    """Discord's session-start limits: one Identify per ``interval_s`` (max_concurrency 1) and
    ``per_day`` per 24 h; going over invalidates sessions. Pure: the caller passes the time."""

    def __init__(self, interval_s: float = 5.0, per_day: int = 1000) -> None:
        self.interval_s = interval_s
        self.per_day = per_day
        self._spent: deque[float] = deque()

    def wait_s(self, now_s: float) -> float:
        """How long to wait before the next Identify may be sent."""
        while self._spent and now_s - self._spent[0] >= 86_400:
            self._spent.popleft()
        if not self._spent:
            return 0.0
        wait = self._spent[-1] + self.interval_s - now_s
        if len(self._spent) >= self.per_day:
            wait = max(wait, self._spent[0] + 86_400 - now_s)
        return max(0.0, wait)

    def spend(self, now_s: float) -> None:
        self._spent.append(now_s)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
