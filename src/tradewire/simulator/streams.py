"""WebSocket routes of the user-data stream (reference §3.2, §11.4).

- ``/private/ws/<listenKey>`` and ``/private/ws?listenKey=<k>[&events=A/B]``: raw events.
- ``/private/stream?listenKey=<k1>[&events=..]&listenKey=<k2>..``: ``{"stream","data"}`` wrapper.
- JSON control messages SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY /
  GET_PROPERTY on every private socket.
- An unknown or expired key is accepted and stays silent; legacy ``/ws/..`` and ``/stream``
  connect and deliver nothing.

Connection rules (reference §3.3; every number in ``StreamConfig``):

- Lifetime: closed (1001) after ``max_lifetime_s`` (24 h).
- Ping/pong: uvicorn pings every 3 min and closes (1011) a socket whose pong is missing after
  10 min (``SimulatorServer``: ``ws_ping_interval`` / ``ws_ping_timeout`` options).
- ``max_incoming_per_second`` (10) text/binary frames per second (pings and pongs are answered
  by uvicorn and not counted); more closes the socket (1008).
- ``max_streams_per_connection`` (1024) listenKeys: a SUBSCRIBE that would exceed it is refused
  as a whole with ``{"code": 2, "msg": "Invalid request: too many streams..", "id": N}`` and the
  socket stays open; a URL naming more is refused at the handshake (HTTP 400). The exchange
  documents the limit, not the answer (UNCONFIRMED).
- Handshakes per client IP (``X-Sim-Client-Ip`` honoured as on REST):
  ``connection_attempts_per_ip`` (300) per ``connection_window_s`` (5 min), beyond that HTTP 429;
  a REST-banned IP is refused with 418. The fstream number is UNCONFIRMED (Spot's figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import parse_qsl

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tradewire.simulator.conn_budget import CONNECTION_ATTEMPTS, CONNECTION_WINDOW_MS
from tradewire.simulator.errors import SimError
from tradewire.simulator.gateway import client_ip, json_response
from tradewire.simulator.hub import Hub, Session
from tradewire.simulator.limits import RateLimited, banned_error
from tradewire.simulator.runtime import Runtime

MAX_INCOMING_PER_SECOND = 10
MAX_STREAMS_PER_CONNECTION = 1024


@dataclass
class StreamConfig:
    max_lifetime_s: float = 24 * 3600  # the exchange closes every connection after 24 h
    max_incoming_per_second: int = MAX_INCOMING_PER_SECOND
    max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION
    connection_attempts_per_ip: int = CONNECTION_ATTEMPTS
    connection_window_s: float = CONNECTION_WINDOW_MS / 1000


def too_many_streams(limit: int) -> str:
    return f"Invalid request: too many streams; at most {limit} per connection"


Subscription = tuple[str, frozenset[str] | None]


def parse_subscriptions(query: bytes) -> list[Subscription]:
    """``listenKey``/``events`` pairs, in order; ``events`` applies to the key before it."""
    found: list[Subscription] = []
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == "listenKey" and value:
            found.append((value, None))
        elif name == "events" and found and value:
            found[-1] = (found[-1][0], frozenset(value.split("/")))
    return found


class Control:
    """Answers JSON control messages of one session."""

    def __init__(self, hub: Hub, session: Session,
                 max_streams: int = MAX_STREAMS_PER_CONNECTION) -> None:
        self.hub = hub
        self.session = session
        self.max_streams = max_streams

    def handle(self, text: str) -> dict[str, Any]:
        try:
            message = json.loads(text)
        except ValueError:
            return {"code": 3, "msg": "Invalid JSON: expected value"}
        if not isinstance(message, dict):
            return {"code": 2, "msg": "Invalid request"}
        request_id = message.get("id")
        if not _valid_id(request_id):
            return {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer "
                    "or a string of at most 36 characters"}
        params = message.get("params", [])
        return self._dispatch(str(message.get("method", "")), params, request_id)

    def _dispatch(self, method: str, params: Any, request_id: int | str) -> dict[str, Any]:
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(self.session.filters), "id": request_id}
        if method == "GET_PROPERTY":
            return {"result": self.session.combined, "id": request_id}
        if method == "SET_PROPERTY":
            if isinstance(params, list) and len(params) == 2 and params[0] == "combined":
                self.session.combined = bool(params[1])
                return {"result": None, "id": request_id}
            return {"code": 0, "msg": "Unknown property", "id": request_id}
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            return {"code": 2, "msg": "Invalid request: unknown method", "id": request_id}
        if method == "SUBSCRIBE" and not self._room_for(params):
            return {"code": 2, "msg": too_many_streams(self.max_streams), "id": request_id}
        for param in params:
            key, _, event = str(param).partition("@")
            if method == "SUBSCRIBE":
                self.hub.subscribe(self.session, key, frozenset({event}) if event else None)
            else:
                self.hub.unsubscribe(self.session, key)
        return {"result": None, "id": request_id}

    def _room_for(self, params: list[Any]) -> bool:
        keys = set(self.session.filters) | {str(p).partition("@")[0] for p in params}
        return len(keys) <= self.max_streams


def _valid_id(request_id: object) -> TypeGuard[int | str]:
    """An unsigned integer, or a string id of up to 36 characters (the official SDK sends a
    uuid4 string)."""
    if isinstance(request_id, bool):
        return False
    if isinstance(request_id, int):
        return request_id >= 0
    return isinstance(request_id, str) and 0 < len(request_id) <= 36


async def _read_loop(websocket: WebSocket, session: Session, control: Control | None,
                     limit: int) -> None:
    """Read until the peer disconnects; answer control messages; >limit msgs/s closes."""
    loop = asyncio.get_running_loop()
    second, count = 0, 0
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        now = int(loop.time())
        second, count = (now, 1) if now != second else (second, count + 1)
        if count > limit:
            session.close(1008)
            return
        text = message.get("text")
        if control is not None and text is not None:
            session.reply(control.handle(text))


async def run_session(websocket: WebSocket, hub: Hub, session: Session,
                      config: StreamConfig, *, silent: bool = False) -> None:
    """Drive one accepted socket until either side closes it or its lifetime ends."""
    hub.add(session)
    control = None if silent else Control(hub, session, config.max_streams_per_connection)
    reader = asyncio.create_task(
        _read_loop(websocket, session, control, config.max_incoming_per_second))
    sender = asyncio.create_task(session.send_loop())
    try:
        try:
            async with asyncio.timeout(config.max_lifetime_s):
                await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
            if session.closing:  # the reader asked to close (rate limit): send the close frame
                await asyncio.wait({sender}, timeout=5)
        except TimeoutError:
            session.close(1001, drop_pending=False)
            await asyncio.wait({sender}, timeout=5)
    finally:
        hub.remove(session)
        for task in (reader, sender):
            task.cancel()
        for task in (reader, sender):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _admit(websocket: WebSocket, rt: Runtime, config: StreamConfig,
                 subscriptions: int = 0) -> bool:
    """Count the handshake against the IP's budget; refuse it (HTTP) when over a limit."""
    ip, now = client_ip(websocket), rt.now()
    admitted = rt.connections.admit(ip, now)
    banned = rt.limits.banned_until(ip, now)
    if banned is not None:
        return await _deny(websocket, rt, banned_error(ip, banned, now))
    if not admitted:
        limit, window = config.connection_attempts_per_ip, config.connection_window_s
        return await _deny(websocket, rt, RateLimited(
            429, -1003, f"Too many connection attempts; current limit of IP({ip}) is {limit} "
                        f"per {window:g} seconds.",
            retry_after_ms=rt.connections.retry_after_ms(ip, now)))
    if subscriptions > config.max_streams_per_connection:
        limit = config.max_streams_per_connection
        return await _deny(websocket, rt, SimError(400, 2, too_many_streams(limit)))
    return True


async def _deny(websocket: WebSocket, rt: Runtime, error: SimError) -> bool:
    """Refuse the handshake with an HTTP answer (403 where the server cannot send one)."""
    headers = {}
    if isinstance(error, RateLimited) and rt.limits.config.retry_after_header:
        headers["Retry-After"] = str(error.retry_after_s)
    response = json_response(error.body(), error.http_status, headers)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(1008)
    return False


def stream_routes(rt: Runtime, config: StreamConfig) -> list[WebSocketRoute]:
    hub = rt.hub

    async def private_path(websocket: WebSocket) -> None:
        await _serve(websocket, [(websocket.path_params["listen_key"], None)], combined=False)

    async def private_raw(websocket: WebSocket) -> None:
        await _serve(websocket, parse_subscriptions(websocket.scope["query_string"]),
                     combined=False)

    async def private_combined(websocket: WebSocket) -> None:
        await _serve(websocket, parse_subscriptions(websocket.scope["query_string"]),
                     combined=True)

    async def legacy(websocket: WebSocket) -> None:
        if not await _admit(websocket, rt, config):
            return
        await websocket.accept()
        await run_session(websocket, hub, Session(websocket, combined=False), config,
                          silent=True)

    async def market(websocket: WebSocket) -> None:
        """``/market/...`` and ``/public/...``: market data is not modelled; the connection and
        its control messages work, and no data flows (clients that open them first — like the
        official SDK — go on to their private stream)."""
        await _serve(websocket, [], combined=websocket.url.path.endswith("/stream"))

    async def _serve(websocket: WebSocket, subscriptions: list[Subscription],
                     *, combined: bool) -> None:
        if not await _admit(websocket, rt, config, len({k for k, _ in subscriptions})):
            return
        session = Session(websocket, combined=combined)
        hub.add(session)
        for key, events in subscriptions:  # before the handshake completes: no event is missed
            hub.subscribe(session, key, events)
        try:
            await websocket.accept()
        except BaseException:
            hub.remove(session)
            raise
        await run_session(websocket, hub, session, config)

    return [
        WebSocketRoute("/private/ws/{listen_key}", private_path),
        WebSocketRoute("/private/ws", private_raw),
        WebSocketRoute("/private/stream", private_combined),
        *(WebSocketRoute(f"/{route}/{form}", market)
          for route in ("market", "public") for form in ("stream", "ws")),
        WebSocketRoute("/ws/{rest:path}", legacy),
        WebSocketRoute("/ws", legacy),
        WebSocketRoute("/stream", legacy),
    ]
