"""What the intake end-to-end tests drive their sources with, all on 127.0.0.1.

* **A Discord-shaped page in headless Chromium** (``tests/fixtures/discord_page/index.html``)
  served at ``/channels/<guild>/<channel>``; a test opens a ``Tab`` on its own channel and drives
  it through its own DevTools session (``__post``, ``__edit``, reload). Chromium is required in
  CI (``CI=true``) and skipped locally when it is missing.
* **A fake Discord gateway** (``FakeGateway``): Hello, Identify -> READY, Heartbeat -> ACK, and
  the dispatches the test sends (the full-featured one is in tests/integration/
  test_discord_bot.py).
* **A follower account** at the Stack's simulator (``create_user``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import IN_CI
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tradewire.clock import SystemClock
from tradewire.intake.cdp.protocol import CdpError, CdpSession
from tradewire.intake.cdp.tracker import make_snowflake

PAGE = Path(__file__).parent.parent / "fixtures" / "discord_page" / "index.html"
GUILD = "800000000000000001"
_channels = itertools.count(900000000000000001)
_sequence = itertools.count(1)


def snowflake(age_s: float = 0.0) -> str:
    """A fresh Discord message id whose snowflake time is ``age_s`` seconds ago."""
    return make_snowflake(SystemClock().now_ms() - int(age_s * 1000), next(_sequence))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# --- the browser and the page --------------------------------------------------------------


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if IN_CI:
        pytest.fail("chromium is not installed (CI=true: .ci/run installs it)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PageServer:
    """Serves the fixture page for every ``/channels/...`` path on 127.0.0.1."""

    def __init__(self) -> None:
        body = PAGE.read_bytes()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not self.path.startswith("/channels/"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def channel_url(self, channel: str) -> str:
        return f"{self.base_url}/channels/{GUILD}/{channel}"


class Chromium:
    """One headless Chromium with a DevTools port on 127.0.0.1 (killed and started at will)."""

    def __init__(self, binary: str, profile: Path, start_url: str) -> None:
        self.binary, self.profile, self.start_url = binary, profile, start_url
        self.port = free_port()
        self.debug_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--remote-debugging-address=127.0.0.1",
             f"--remote-debugging-port={self.port}", f"--user-data-dir={self.profile}",
             self.start_url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.debug_url}/json/version", timeout=1).status_code == 200:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("chromium did not open its DevTools port")

    def kill(self) -> None:
        """SIGKILL the whole browser (its own process group), as a crash would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None


@pytest.fixture(name="page_server", scope="module")
def page_server_fixture() -> Iterator[PageServer]:
    server = PageServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@contextlib.contextmanager
def running_chromium(page_server: PageServer) -> Iterator[Chromium]:
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="tw-chromium-") as profile:
        browser = Chromium(binary, Path(profile), page_server.channel_url("1"))
        browser.start()
        try:
            yield browser
        finally:
            browser.kill()


@pytest.fixture(name="chromium", scope="module")
def chromium_fixture(page_server: PageServer) -> Iterator[Chromium]:
    """One browser for the module (tests that kill a browser start their own)."""
    with running_chromium(page_server) as browser:
        yield browser


class Tab:
    """A tab of the fixture page, driven by the test through its own DevTools session."""

    def __init__(self, cdp: CdpSession, target_id: str, channel: str) -> None:
        self.cdp, self.target_id, self.channel = cdp, target_id, channel

    async def js(self, expression: str) -> Any:
        reply = await self.cdp.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def post(self, text: str, *, sent_ms: int | None = None) -> str:
        """Append a row; its id is a snowflake of ``sent_ms`` (default: now)."""
        message_id = make_snowflake(sent_ms or SystemClock().now_ms(), next(_sequence))
        await self.js(f"__post({message_id!r}, {text!r})")
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        await self.js(f"__edit({message_id!r}, {text!r})")

    async def reload(self) -> None:
        await self.js("window.__beforeReload = true")
        await self.cdp.send("Page.reload")
        await self.ready("!window.__beforeReload")

    async def ready(self, condition: str = "true") -> None:
        check = f"({condition}) && document.readyState === 'complete' && !!window.__post"
        for _ in range(200):
            with contextlib.suppress(CdpError):  # the context may be swapped under us
                if await self.js(check):
                    return
            await asyncio.sleep(0.02)
        raise AssertionError("the page did not load")


@contextlib.asynccontextmanager
async def open_tab(debug_url: str, url: str, channel: str) -> AsyncIterator[Tab]:
    async with httpx.AsyncClient(trust_env=False) as http:
        created = (await http.put(f"{debug_url}/json/new?{url}")).json()
    async with CdpSession.connect(created["webSocketDebuggerUrl"]) as cdp:
        tab = Tab(cdp, created["id"], channel)
        await tab.ready()
        yield tab
    with contextlib.suppress(httpx.HTTPError):
        async with httpx.AsyncClient(trust_env=False) as http:
            await http.get(f"{debug_url}/json/close/{created['id']}")


async def close_tab(debug_url: str, tab: Tab) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        (await http.get(f"{debug_url}/json/close/{tab.target_id}")).raise_for_status()


@contextlib.asynccontextmanager
async def channel_tab(chromium: Chromium, page_server: PageServer,
                      channel: str | None = None) -> AsyncIterator[Tab]:
    """A tab on ``channel`` (default: a new channel of its own)."""
    channel = channel or str(next(_channels))
    async with open_tab(chromium.debug_url, page_server.channel_url(channel), channel) as tab:
        yield tab


# --- a Discord gateway ----------------------------------------------------------------------

_GATEWAY_LOGGER = logging.getLogger("tests.fake_discord_gateway")
_GATEWAY_LOGGER.setLevel(logging.INFO)  # frames are logged at DEBUG and carry the bot token


class FakeGateway:
    """A Discord gateway on 127.0.0.1 for one bot: Hello, Identify -> READY, Heartbeat -> ACK,
    and the dispatches the test sends on the newest connection."""

    def __init__(self) -> None:
        self.connections: list[ServerConnection] = []
        self.ready_sent = asyncio.Event()
        self.seq = 0
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/?v=10&encoding=json"

    async def __aenter__(self) -> FakeGateway:
        self._server = await serve(self._handle, "127.0.0.1", 0, logger=_GATEWAY_LOGGER)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def ready(self, timeout: float = 5.0) -> None:
        """Until the bot has identified and got READY."""
        await asyncio.wait_for(self.ready_sent.wait(), timeout)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        await self._send(self.connections[-1], {"op": 0, "t": event, "s": self.seq, "d": data})

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        await self._send(ws, {"op": 10, "d": {"heartbeat_interval": 45_000}})
        with contextlib.suppress(ConnectionClosed):
            async for text in ws:
                frame = json.loads(text)
                if frame["op"] == 1:
                    await self._send(ws, {"op": 11})
                elif frame["op"] == 2:
                    await self.dispatch("READY", {
                        "v": 10, "user": {"id": "900", "username": "tradewire", "bot": True},
                        "guilds": [], "session_id": "session-1",
                        "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume"})
                    self.ready_sent.set()

    @staticmethod
    async def _send(ws: ServerConnection, payload: dict[str, Any]) -> None:
        await ws.send(json.dumps({"t": None, "s": None, **payload}))


def discord_message(message_id: str, channel: str, content: str,
                    **extra: Any) -> dict[str, Any]:
    """A MESSAGE_CREATE/MESSAGE_UPDATE payload as the gateway sends it (a bot's text post)."""
    return {"id": message_id, "channel_id": channel, "guild_id": GUILD, "type": 0, "flags": 0,
            "author": {"id": "2200000000000000001", "username": "signals", "bot": True},
            "content": content, "embeds": [], "attachments": [], "mentions": [],
            "pinned": False, "timestamp": "2024-04-29T18:12:02.167000+00:00",
            "edited_timestamp": None, **extra}


# --- the Stack's exchange ---------------------------------------------------------------------


async def create_user(api: httpx.AsyncClient, sim: httpx.AsyncClient) -> str:
    """A follower: a new simulator account (BTCUSDT marked at 60000) subscribed through the
    API; its api_key."""
    (await sim.post("/sim/mark-price", json={"symbol": "BTCUSDT", "price": "60000"})
     ).raise_for_status()
    keys = (await sim.post("/sim/accounts", json={})).json()
    response = await api.post("/api/users", json={
        "name": "cdp-follower", "api_key": keys["api_key"], "api_secret": keys["api_secret"]})
    response.raise_for_status()
    return str(keys["api_key"])
