"""One account's user-data stream: listenKey, WebSocket, keepalives, reconnects.

The socket's path only parses and publishes (``on_message`` never touches the database): every
frame becomes an ``Envelope`` on the bus and the loop moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK, WebSocketException

from tradewire.bus.base import Envelope
from tradewire.clock import Clock
from tradewire.errors import ExchangeError, ListenKeyInvalid
from tradewire.exchange.client import ExchangeClient
from tradewire.logging import bind, log
from tradewire.streams.session import (
    AccountRef,
    KeyExpired,
    Publish,
    UserStreamSession,
    make_envelope,
)

logger = logging.getLogger("tradewire.streams")

_NETWORK_TROUBLE = (OSError, WebSocketException, ExchangeError, TimeoutError)

Publisher = Callable[[Envelope], Awaitable[Any]]


class AccountStream:
    """Keeps one account's stream alive until ``stop()``."""

    def __init__(
        self,
        account: AccountRef,
        client: ExchangeClient,
        ws_base_url: str,
        publish: Publisher,
        clock: Clock,
        *,
        keepalive_s: float = 1800.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.account = account
        self.client = client
        self.ws_base_url = ws_base_url
        self.publish = publish
        self.clock = clock
        self.keepalive_s = keepalive_s
        self.max_backoff_s = max_backoff_s
        self.connected = asyncio.Event()
        self.published = 0
        self.reconnects = 0
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        backoff = 0.5
        with bind(userId=self.account.user_id, accountId=self.account.account_id):
            while not self._stopping:
                try:
                    await self._session()
                    backoff = 0.5
                except Exception as exc:  # even a bug must not leave an account unwatched
                    expected = isinstance(exc, _NETWORK_TROUBLE)
                    self._lost(exc, backoff, logging.WARNING if expected else logging.ERROR)
                    await asyncio.sleep(backoff * (0.5 + random.random()))
                    backoff = min(backoff * 2, self.max_backoff_s)

    def _lost(self, exc: BaseException, backoff: float, level: int) -> None:
        self.connected.clear()
        self.reconnects += 1
        log(logger, level, "user stream lost; reconnecting",
            error=f"{type(exc).__name__}: {exc}", backoff_s=round(backoff, 2))

    async def _session(self) -> None:
        key = await self.client.new_listen_key()
        session = UserStreamSession()
        session.add(key, self.account)
        async with connect(f"{self.ws_base_url}/private/ws/{key}", max_size=2**22,
                           compression=None) as ws:
            self.connected.set()
            log(logger, logging.INFO, "user stream connected")
            keepalive = asyncio.create_task(self._keepalive(ws))
            try:
                while True:  # ``async for frame in ws``, text frames as bytes (``session``)
                    try:
                        frame = await ws.recv(decode=False)
                    except ConnectionClosedOK:
                        break
                    if self._stopping or await self._handle(session, frame):
                        break
            finally:
                keepalive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keepalive
                self.connected.clear()

    async def _handle(self, session: UserStreamSession, frame: bytes) -> bool:
        """Publish what the frame carries; True when the stream must be re-keyed."""
        rekey = False
        for action in session.feed(frame):
            if isinstance(action, Publish):
                await self._publish(action.payload, action.raw)
            elif isinstance(action, KeyExpired):
                log(logger, logging.WARNING, "listenKey expired; re-keying")
                rekey = True
        return rekey

    async def _publish(self, payload: dict[str, Any], raw: bytes | None = None) -> None:
        envelope = make_envelope(self.account, payload, self.clock.now_ms(), raw=raw)
        delay = 0.1
        while True:  # never drop an event because the bus is briefly unavailable
            try:
                await self.publish(envelope)
                break
            except Exception as exc:
                log(logger, logging.ERROR, "publish failed; retrying", error=repr(exc),
                    eventId=envelope.event_id, symbol=envelope.symbol)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.published += 1

    async def _keepalive(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            try:
                await self.client.keepalive_listen_key()
            except ListenKeyInvalid:
                log(logger, logging.WARNING, "listenKey keepalive refused; re-keying")
                await ws.close()
                return
            except ExchangeError as exc:
                log(logger, logging.WARNING, "listenKey keepalive failed", error=str(exc))
