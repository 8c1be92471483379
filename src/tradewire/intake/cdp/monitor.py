"""The Discord CDP monitor: watch one channel's tab in a browser and post each new message.

    monitor = CdpMonitor(DEFAULT_DEBUG_URL, "discord.com/channels/<guild>/<channel>",
                         post, SystemClock())
    await monitor.run(stop)

It finds the tab through ``/json/list``, attaches to it, adds a binding and the observer
(``observer.js``, in an isolated world the page cannot see) for every future document plus
once for the current one, and turns each ``Runtime.bindingCalled`` into a ``RawMessage``
through ``MessageTracker``. Reloads need nothing (the script and binding persist); a closed tab,
a crashed renderer or a browser that went away end the session, and the monitor looks for the
tab again with backoff. Read-only: the only commands it sends are the setup below and a
keepalive ``Runtime.evaluate("1")`` — never input events, never messages.

``post`` is awaited on a separate task, in order; when it raises, the same message is tried
again with backoff (the monitor never drops a message; the poster decides what is hopeless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from importlib import resources

import httpx
from websockets.exceptions import WebSocketException

from tradewire.clock import Clock, SystemClock
from tradewire.intake.cdp.protocol import (
    CdpClosed,
    CdpError,
    CdpSession,
    Target,
    list_targets,
    require_loopback,
)
from tradewire.intake.cdp.tracker import ChannelMatch, MessageTracker
from tradewire.intake.model import RawMessage
from tradewire.logging import log

logger = logging.getLogger("tradewire.intake.cdp")

Post = Callable[[RawMessage], Awaitable[None]]

BINDING = "__tradewireEmit"
WORLD = "tradewire"
DEFAULT_DEBUG_URL = "http://127.0.0.1:9222"
_LOST = (OSError, WebSocketException, httpx.HTTPError, CdpError, TimeoutError, ValueError)


def observer_source() -> str:
    return resources.files("tradewire.intake.cdp").joinpath("observer.js").read_text("utf-8")


class NoTab(Exception):
    """No tab of the browser shows the monitored channel (yet)."""


class CdpMonitor:
    """Posts every message that appears in the channel's tab after ``run`` started."""

    def __init__(
        self,
        debug_url: str,
        channel_match: str,
        post: Post,
        clock: Clock,
        max_lag_s: float = 60.0,
        *,
        allow_remote: bool = False,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 5.0,
        keepalive_s: float = 30.0,
    ) -> None:
        require_loopback(debug_url, allow_remote=allow_remote)
        self.debug_url = debug_url.rstrip("/")
        self.channel = ChannelMatch(channel_match)
        self.post = post
        self.clock = clock
        self.max_lag_s = max_lag_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.keepalive_s = keepalive_s
        self.attached = asyncio.Event()  # set while a tab is watched (test knob)
        self.attachments = 0  # sessions started so far
        self.posted = 0
        self.tracker: MessageTracker | None = None
        self._outbox: asyncio.Queue[RawMessage] = asyncio.Queue()
        self._source = observer_source()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set; then give queued messages a few seconds to go out."""
        self.tracker = MessageTracker(
            self.clock.now_ms(), self.channel, self.clock, max_lag_ms=int(self.max_lag_s * 1000))
        poster = asyncio.create_task(self._post_all())
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
                await self._watch(http, stop)
        finally:
            await self._drain(poster)

    async def _watch(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        backoff, failures = self.min_backoff_s, 0
        while not stop.is_set():
            attachments = self.attachments
            try:
                await self._session(await self._find_tab(http), stop)
            except (*_LOST, NoTab) as exc:
                self._lost(exc, backoff, quiet=failures > 0)
            except Exception as exc:  # a bug must not end the watch silently
                logger.exception("CDP monitor session failed")
                self._lost(exc, backoff, quiet=failures > 0)
            if self.attachments > attachments:  # it was watching: start over quickly
                backoff, failures = self.min_backoff_s, 0
            await _sleep_unless(stop, backoff * random.uniform(0.5, 1.0))
            backoff, failures = min(backoff * 2, self.max_backoff_s), failures + 1

    async def _find_tab(self, http: httpx.AsyncClient) -> Target:
        for target in await list_targets(http, self.debug_url):
            if target.type == "page" and self.channel(target.url):
                return target
        raise NoTab(f"no tab matches {self.channel.pattern!r}")

    async def _session(self, target: Target, stop: asyncio.Event) -> None:
        async with CdpSession.connect(target.ws_url) as cdp:
            closer = asyncio.create_task(_close_when(stop, cdp))
            try:
                await self._install(cdp)
                self.attachments += 1
                self.attached.set()
                log(logger, logging.INFO, "watching tab", url=target.url, targetId=target.id)
                await self._pump(cdp)
            except CdpClosed:
                if not stop.is_set():
                    raise
            finally:
                self.attached.clear()
                closer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await closer

    async def _install(self, cdp: CdpSession) -> None:
        await cdp.send("Page.enable")  # needed for the new-document script to apply
        await cdp.send("Runtime.enable")
        await cdp.send("Runtime.addBinding", {"name": BINDING, "executionContextName": WORLD})
        await cdp.send("Page.addScriptToEvaluateOnNewDocument",
                       {"source": self._source, "worldName": WORLD})
        tree = await cdp.send("Page.getFrameTree")
        frame_id = tree["frameTree"]["frame"]["id"]
        world = await cdp.send("Page.createIsolatedWorld",
                               {"frameId": frame_id, "worldName": WORLD})
        # the observer guards itself: a second run only re-scans the visible rows
        await cdp.send("Runtime.evaluate", {
            "expression": self._source, "contextId": world["executionContextId"],
            "returnByValue": True})

    async def _pump(self, cdp: CdpSession) -> None:
        while True:
            try:
                event = await cdp.next_event(timeout=self.keepalive_s)
            except TimeoutError:  # quiet for a while: is the tab still answering?
                await cdp.send("Runtime.evaluate", {"expression": "1"}, timeout=10.0)
                continue
            if event.method == "Runtime.bindingCalled" and event.params.get("name") == BINDING:
                self._sighted(str(event.params.get("payload", "")))
            elif event.method == "Inspector.detached":
                raise CdpClosed(f"detached: {event.params.get('reason', '')}")

    def _sighted(self, payload: str) -> None:
        assert self.tracker is not None
        message = self.tracker.feed(payload)
        if message is not None:
            self._outbox.put_nowait(message)

    async def _post_all(self) -> None:
        while True:
            message = await self._outbox.get()
            delay = self.min_backoff_s
            while True:
                try:
                    await self.post(message)
                    break
                except Exception as exc:  # the poster said: not delivered, try again
                    log(logger, logging.WARNING, "posting a message failed; retrying",
                        error=f"{type(exc).__name__}: {exc}", messageId=message.message_id)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff_s)
            self.posted += 1
            self._outbox.task_done()

    async def _drain(self, poster: asyncio.Task[None], grace_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), grace_s)
        poster.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poster
        if not self._outbox.empty():
            log(logger, logging.ERROR, "stopped with messages not posted",
                count=self._outbox.qsize())

    def _lost(self, exc: BaseException, backoff: float, *, quiet: bool) -> None:
        """Log the first failure of a streak loudly, the retries that follow at DEBUG."""
        level = logging.INFO if isinstance(exc, NoTab) else logging.WARNING
        log(logger, logging.DEBUG if quiet else level, "CDP tab not watched; retrying",
            error=f"{type(exc).__name__}: {exc}", backoff_s=round(backoff, 2))


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _close_when(stop: asyncio.Event, cdp: CdpSession) -> None:
    await stop.wait()
    await cdp.close()


def intake_post(http: httpx.AsyncClient) -> Post:
    """A ``post`` that sends to ``POST /api/intake/messages`` on ``http`` (base URL and bearer
    token set by the caller): 5xx, 429 and connection errors are retried with backoff, any
    other 4xx is logged and dropped. The same poster as the Discord bot's."""
    from tradewire.intake.poster import IntakePoster

    poster = IntakePoster(http)

    async def post(message: RawMessage) -> None:
        await poster.post(message)

    return post


async def run_cdp_monitor(
    api_url: str,
    token: str,
    debug_url: str,
    channel_match: str,
    stop: asyncio.Event,
    *,
    allow_remote: bool = False,
    max_lag_s: float = 60.0,
    http: httpx.AsyncClient | None = None,
) -> None:
    """Watch the channel's tab and post each new message to ``{api_url}/api/intake/messages``
    (bearer ``token``) until ``stop`` is set. 5xx, 429 and connection errors are retried with
    backoff; any other 4xx is logged and the message dropped. ``http`` replaces the API client
    (its base URL and Authorization header are then the caller's)."""
    client = http or httpx.AsyncClient(
        base_url=api_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"})
    monitor = CdpMonitor(debug_url, channel_match, intake_post(client), SystemClock(),
                         max_lag_s, allow_remote=allow_remote)
    log(logger, logging.INFO, "CDP monitor starting", debugUrl=debug_url,
        channel=channel_match)
    try:
        await monitor.run(stop)
    finally:
        if http is None:
            await client.aclose()
