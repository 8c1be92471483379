"""The asyncio adapter around ``GatewaySession``: socket, heartbeat timer, reconnects, posting.

    gateway frames -> GatewaySession -> Dispatch -> MessageTranslator -> queue -> IntakePoster
                                                                         POST /api/intake/messages

The socket reader never waits for the API: messages go through an ordered queue to one poster
task, which retries 5xx/429/connection errors with backoff and drops (and logs) other 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from tradewire.intake.discord.gateway import (
    DEFAULT_INTENTS,
    DIRECT_MESSAGES,
    IDENTIFY,
    RESUMABLE_CLIENT_CLOSE,
    Action,
    DiscordGatewayFatal,
    Dispatch,
    Fatal,
    GatewaySession,
    IdentifyBudget,
    Reconnect,
    Send,
    StartHeartbeat,
)
from tradewire.intake.discord.messages import MessageTranslator
from tradewire.intake.model import RawMessage
from tradewire.intake.poster import IntakePoster, drain, post_forever
from tradewire.logging import log

logger = logging.getLogger("tradewire.intake.discord")

DEFAULT_GATEWAY_URL = "wss://gateway.discord.gg/?v=10&encoding=json"

_NETWORK_TROUBLE = (OSError, WebSocketException, TimeoutError)

# websockets logs frames at DEBUG; Identify and Resume frames carry the bot token
_WS_LOGGER = logging.getLogger("tradewire.intake.discord.websocket")
_WS_LOGGER.setLevel(logging.INFO)


@dataclass(frozen=True)
class BotOptions:
    """Timing knobs (defaults follow Discord's guidance; tests shrink them)."""

    backoff_s: tuple[float, float] = (1.0, 60.0)  # reconnect backoff: first, max (full jitter)
    invalid_session_wait_s: tuple[float, float] = (1.0, 5.0)  # random wait after op 9
    identify_interval_s: float = 5.0  # session-start limit (max_concurrency 1)
    identifies_per_day: int = 1000
    open_timeout_s: float = 10.0
    post_backoff_s: tuple[float, float] = (0.5, 30.0)  # API retries: first, max
    post_timeout_s: float = 10.0
    drain_timeout_s: float = 5.0  # on stop, time left to post what is queued
    queue_size: int = 10_000


class GatewayClient:
    """Keeps one gateway session connected until ``stop`` is set (or a fatal close)."""

    def __init__(self, session: GatewaySession, gateway_url: str,
                 on_dispatch: Callable[[Dispatch], Awaitable[None]], options: BotOptions) -> None:
        self.session = session
        self.gateway_url = gateway_url
        self.on_dispatch = on_dispatch
        self.options = options
        self.budget = IdentifyBudget(options.identify_interval_s, options.identifies_per_day)
        self.connections = 0
        self._pending: Reconnect | None = None  # set by the heartbeat task on a zombie socket
        self._was_ready = False  # the current/last socket got READY or RESUMED

    async def run(self, stop: asyncio.Event) -> None:
        """Raises ``DiscordGatewayFatal`` when Discord refuses the bot for good."""
        backoff = self.options.backoff_s[0]
        while not stop.is_set():
            if not self.session.can_resume:
                await _wait(self.budget.wait_s(time.monotonic()), stop)
            reason: Reconnect | None = None
            self._was_ready = False
            try:
                reason = await self._connection(self._next_url(), stop)
            except DiscordGatewayFatal:
                raise
            except Exception as exc:  # even a bug must not leave the channels unwatched
                level = logging.WARNING if isinstance(exc, _NETWORK_TROUBLE) else logging.ERROR
                log(logger, level, "discord gateway connection failed",
                    error=f"{type(exc).__name__}: {exc}")
            if stop.is_set():
                return
            if self._was_ready:  # the last connection worked: start the backoff over
                backoff = self.options.backoff_s[0]
            if reason is not None and reason.cooldown:
                wait = random.uniform(*self.options.invalid_session_wait_s)
            else:
                wait = random.uniform(0, backoff)
                backoff = min(backoff * 2, self.options.backoff_s[1])
            log(logger, logging.INFO, "discord gateway reconnecting",
                reason=reason.reason if reason else "connection failed",
                resume=self.session.can_resume, wait_s=round(wait, 2))
            await _wait(wait, stop)

    def _next_url(self) -> str:
        if self.session.can_resume and self.session.resume_url:
            return _with_query(self.session.resume_url, self.gateway_url)
        return self.gateway_url

    async def _connection(self, url: str, stop: asyncio.Event) -> Reconnect | None:
        """One socket, until it closes. Returns why to reconnect (None: stopping)."""
        self._pending = None
        async with connect(url, ping_interval=None, max_size=None, logger=_WS_LOGGER,
                           open_timeout=self.options.open_timeout_s) as ws:
            self.session.connection_opened()
            self.connections += 1
            tasks = [asyncio.create_task(_close_on(stop, ws))]
            try:
                return await self._read(ws, tasks)
            except ConnectionClosed as exc:
                if stop.is_set():
                    return None
                if self._pending is not None:
                    return self._pending
                return await self._perform_all(
                    ws, tasks, self.session.connection_closed(exc.rcvd.code if exc.rcvd else None))
            finally:
                self._was_ready = self.session.ready
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, ws: ClientConnection, tasks: list[asyncio.Task[None]]) -> Reconnect:
        while True:
            frame = await ws.recv()
            reason = await self._perform_all(ws, tasks, self.session.feed(frame))
            if reason is not None:
                await ws.close(RESUMABLE_CLIENT_CLOSE, "reconnecting")
                return reason

    async def _perform_all(self, ws: ClientConnection, tasks: list[asyncio.Task[None]],
                           actions: list[Action]) -> Reconnect | None:
        for action in actions:
            if isinstance(action, Send):
                await self._send(ws, action)
            elif isinstance(action, StartHeartbeat):
                for stale in tasks[1:]:  # tasks[0] watches stop; at most one heartbeat runs
                    stale.cancel()
                del tasks[1:]
                tasks.append(asyncio.create_task(self._heartbeat(ws, action.interval_s)))
            elif isinstance(action, Dispatch):
                await self.on_dispatch(action)
            elif isinstance(action, Reconnect):
                return action
            elif isinstance(action, Fatal):
                log(logger, logging.ERROR, "discord gateway refused the bot", code=action.code,
                    error=action.message)
                raise DiscordGatewayFatal(action.message, code=action.code)
        return None

    async def _send(self, ws: ClientConnection, action: Send) -> None:
        if action.payload.get("op") == IDENTIFY:
            self.budget.spend(time.monotonic())
        await ws.send(json.dumps(action.payload))

    async def _heartbeat(self, ws: ClientConnection, interval_s: float) -> None:
        """First beat after ``interval * random()`` (Discord's jitter), then every interval."""
        await asyncio.sleep(interval_s * random.random())
        with contextlib.suppress(ConnectionClosed):
            while True:
                for action in self.session.heartbeat_due():
                    if isinstance(action, Reconnect):
                        log(logger, logging.WARNING, "discord gateway silent", error=action.reason)
                        self._pending = action
                        await ws.close(RESUMABLE_CLIENT_CLOSE, "zombie connection")
                        return
                    if isinstance(action, Send):
                        await self._send(ws, action)
                await asyncio.sleep(interval_s)


async def run_discord_bot(
    api_url: str,
    api_token: str,
    bot_token: str,
    channel_ids: Iterable[str | int],
    stop: asyncio.Event,
    gateway_url: str = DEFAULT_GATEWAY_URL,
    *,
    author_ids: Iterable[str | int] = (),
    direct_messages: bool = False,
    options: BotOptions | None = None,
    http: httpx.AsyncClient | None = None,
) -> None:
    """Listen as a Discord bot and post every message of ``channel_ids`` (optionally only by
    ``author_ids``) to ``{api_url}/api/intake/messages`` until ``stop`` is set.

    Raises ``DiscordGatewayFatal`` when Discord refuses the bot (wrong token: 4004; the
    MESSAGE_CONTENT intent not enabled: 4014). ``http`` replaces the API client (its base URL
    and Authorization header are then the caller's).
    """
    options = options or BotOptions()
    intents = DEFAULT_INTENTS | (DIRECT_MESSAGES if direct_messages else 0)
    session = GatewaySession(_bare_token(bot_token), intents)
    translator = MessageTranslator(channel_ids, author_ids)
    queue: asyncio.Queue[RawMessage] = asyncio.Queue(options.queue_size)

    async def on_dispatch(dispatch: Dispatch) -> None:
        _log_session_event(dispatch)
        try:
            messages = translator.translate(dispatch.event, dispatch.data)
        except Exception as exc:  # one odd event must not take the listener down
            log(logger, logging.ERROR, "discord event not understood; skipped",
                event=dispatch.event, error=repr(exc))
            return
        for message in messages:
            await queue.put(message)

    client = http or httpx.AsyncClient(
        base_url=api_url.rstrip("/"), headers={"Authorization": f"Bearer {api_token}"})
    poster = IntakePoster(client, options.post_backoff_s, options.post_timeout_s)
    posting = asyncio.create_task(post_forever(queue, poster))
    log(logger, logging.INFO, "discord bot starting", channels=sorted(translator.channel_ids),
        authors=sorted(translator.author_ids), intents=intents)
    try:
        await GatewayClient(session, gateway_url, on_dispatch, options).run(stop)
    finally:
        await drain(queue, posting, options.drain_timeout_s)
        if http is None:
            await client.aclose()


def _log_session_event(dispatch: Dispatch) -> None:
    if dispatch.event == "READY":
        user = dispatch.data.get("user") or {}
        log(logger, logging.INFO, "discord gateway ready", botUser=user.get("id"),
            guilds=len(dispatch.data.get("guilds") or []))
    elif dispatch.event == "RESUMED":
        log(logger, logging.INFO, "discord gateway resumed")


async def _close_on(stop: asyncio.Event, ws: ClientConnection) -> None:
    await stop.wait()
    await ws.close(1000, "stopping")


async def _wait(seconds: float, stop: asyncio.Event) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


def _with_query(url: str, template: str) -> str:
    """``resume_gateway_url`` comes without ``?v=10&encoding=json``: borrow the template's."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path or "/",
                                     query=parts.query or urlsplit(template).query))


def _bare_token(token: str) -> str:
    token = token.strip()
    return token[4:].strip() if token.lower().startswith("bot ") else token
