"""A small Chrome DevTools Protocol client over raw ``websockets``.

    async with CdpSession.connect(target.ws_url) as cdp:
        await cdp.send("Runtime.enable")
        event = await cdp.next_event(timeout=30)     # CdpEvent(method, params) or raises

Requests carry an id; a reader task resolves the matching future and queues everything else
as an event. When the socket closes, pending requests fail with ``CdpClosed`` and
``next_event`` raises it once the queue is drained. ``list_targets`` reads ``/json/list``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from tradewire.errors import UNREADABLE_JSON, ConfigError, TradewireError


class CdpError(TradewireError):
    """The browser answered a command with an error."""


class CdpClosed(CdpError):
    """The DevTools connection is gone (tab closed, browser quit, network)."""


@dataclass(frozen=True)
class CdpEvent:
    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One entry of ``/json/list``."""

    id: str
    type: str
    url: str
    ws_url: str


def require_loopback(url: str, *, allow_remote: bool = False) -> None:
    """Refuse a debugging endpoint that is not on this machine (unless explicitly allowed):
    whoever reaches that port controls every site logged in to the browser profile."""
    host = urlsplit(url).hostname or ""
    if allow_remote or host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(
        f"refusing non-loopback DevTools endpoint {host!r}; use 127.0.0.1 "
        "(or pass --allow-remote if you really mean it)"
    )


async def list_targets(http: httpx.AsyncClient, debug_url: str) -> list[Target]:
    """The browser's targets (tabs, workers...) from ``GET /json/list``."""
    response = await http.get(f"{debug_url.rstrip('/')}/json/list")
    response.raise_for_status()
    targets = []
    for item in response.json():
        if isinstance(item, dict) and item.get("webSocketDebuggerUrl"):
            targets.append(Target(
                id=str(item.get("id", "")), type=str(item.get("type", "")),
                url=str(item.get("url", "")), ws_url=str(item["webSocketDebuggerUrl"]),
            ))
    return targets


class CdpSession:
    """One DevTools WebSocket: id-matched request futures plus an event queue."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[CdpEvent | None] = asyncio.Queue()
        self._closed: CdpClosed | None = None
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, ws_url: str, *, open_timeout: float = 5.0) -> AsyncIterator[CdpSession]:
        # DevTools frames can be large (page payloads); no proxy, no compression negotiation
        async with connect(ws_url, max_size=2**26, open_timeout=open_timeout,
                           compression=None, proxy=None, ping_interval=None) as ws:
            session = cls(ws)
            try:
                yield session
            finally:
                await session.close()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send one command and wait for its result (raises ``CdpError``, ``TimeoutError``)."""
        if self._closed is not None:
            raise self._closed
        msg_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            await self._ws.send(json.dumps({"id": msg_id, "method": method,
                                            "params": params or {}}))
            return await asyncio.wait_for(future, timeout)
        except (OSError, WebSocketException) as exc:
            raise CdpClosed(f"{method}: connection lost ({exc})") from exc
        finally:
            self._pending.pop(msg_id, None)

    async def next_event(self, timeout: float | None = None) -> CdpEvent:
        """The next event; ``TimeoutError`` when none came in time, ``CdpClosed`` at the end."""
        item = await asyncio.wait_for(self._events.get(), timeout)
        if item is None:
            self._events.put_nowait(None)  # keep raising for later callers
            assert self._closed is not None
            raise self._closed
        return item

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()
        self._finish(CdpClosed("closed"))

    async def _read(self) -> None:
        reason: CdpClosed = CdpClosed("connection closed")
        try:
            async for frame in self._ws:
                self._dispatch(frame)
        except (OSError, WebSocketException) as exc:
            reason = CdpClosed(f"connection lost ({exc})")
        finally:
            self._finish(reason)

    def _dispatch(self, frame: str | bytes) -> None:
        try:
            message = json.loads(frame)
        except UNREADABLE_JSON:
            return
        if not isinstance(message, dict):
            return
        if "id" in message:
            future = self._pending.get(message["id"])
            if future is None or future.done():
                return
            if "error" in message:
                future.set_exception(CdpError(str(message["error"])))
            else:
                future.set_result(message.get("result") or {})
        elif isinstance(message.get("method"), str):
            params = message.get("params")
            self._events.put_nowait(
                CdpEvent(message["method"], params if isinstance(params, dict) else {}))

    def _finish(self, reason: CdpClosed) -> None:
        if self._closed is not None:
            return
        self._closed = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        self._events.put_nowait(None)
