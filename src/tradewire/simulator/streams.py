"""WebSocket routes of the user-data stream (reference §3.2, §11.4).

- ``/private/ws/<listenKey>`` and ``/private/ws?listenKey=<k>[&events=A/B]``: raw events.
- ``/private/stream?listenKey=<k1>[&events=..]&listenKey=<k2>..``: ``{"stream","data"}`` wrapper.
- JSON control messages SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY /
  GET_PROPERTY on every private socket.
- An unknown or expired key is accepted and stays silent; legacy ``/ws/..`` and ``/stream``
  connect and deliver nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tradewire.simulator.hub import Hub, Session

MAX_INCOMING_PER_SECOND = 10


@dataclass
class StreamConfig:
    max_lifetime_s: float = 24 * 3600  # the exchange closes every connection after 24 h
    max_incoming_per_second: int = MAX_INCOMING_PER_SECOND


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

    def __init__(self, hub: Hub, session: Session) -> None:
        self.hub = hub
        self.session = session

    def handle(self, text: str) -> dict[str, Any]:
        try:
            message = json.loads(text)
        except ValueError:
            return {"code": 3, "msg": "Invalid JSON: expected value"}
        if not isinstance(message, dict):
            return {"code": 2, "msg": "Invalid request"}
        request_id = message.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 0:
            return {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}
        params = message.get("params", [])
        return self._dispatch(str(message.get("method", "")), params, request_id)

    def _dispatch(self, method: str, params: Any, request_id: int) -> dict[str, Any]:
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
        for param in params:
            key, _, event = str(param).partition("@")
            if method == "SUBSCRIBE":
                self.hub.subscribe(self.session, key, frozenset({event}) if event else None)
            else:
                self.hub.unsubscribe(self.session, key)
        return {"result": None, "id": request_id}


async def _read_loop(websocket: WebSocket, control: Control | None, limit: int) -> None:
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
            if control is not None:
                control.session.close(1008)
            return
        text = message.get("text")
        if control is not None and text is not None:
            control.session.reply(control.handle(text))


async def run_session(websocket: WebSocket, hub: Hub, session: Session,
                      config: StreamConfig, *, silent: bool = False) -> None:
    """Drive one accepted socket until either side closes it or its lifetime ends."""
    hub.add(session)
    control = None if silent else Control(hub, session)
    reader = asyncio.create_task(_read_loop(websocket, control, config.max_incoming_per_second))
    sender = asyncio.create_task(session.send_loop())
    try:
        try:
            async with asyncio.timeout(config.max_lifetime_s):
                await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
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


def stream_routes(hub: Hub, config: StreamConfig) -> list[WebSocketRoute]:
    async def private_path(websocket: WebSocket) -> None:
        await _serve(websocket, [(websocket.path_params["listen_key"], None)], combined=False)

    async def private_raw(websocket: WebSocket) -> None:
        await _serve(websocket, parse_subscriptions(websocket.scope["query_string"]),
                     combined=False)

    async def private_combined(websocket: WebSocket) -> None:
        await _serve(websocket, parse_subscriptions(websocket.scope["query_string"]),
                     combined=True)

    async def legacy(websocket: WebSocket) -> None:
        await websocket.accept()
        await run_session(websocket, hub, Session(websocket, combined=False), config,
                          silent=True)

    async def _serve(websocket: WebSocket, subscriptions: list[Subscription],
                     *, combined: bool) -> None:
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
        WebSocketRoute("/ws/{rest:path}", legacy),
        WebSocketRoute("/ws", legacy),
        WebSocketRoute("/stream", legacy),
    ]
