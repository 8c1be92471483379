"""``run_discord_bot`` against a local fake Discord gateway and an intake-API stand-in.

``FakeGateway`` is a ``websockets`` server speaking Discord's opcodes and JSON shapes: Hello,
Identify -> READY, Resume -> RESUMED (or Invalid Session), Heartbeat -> ACK, and dispatches that
the test sends. It records every frame each connection received and how it was closed. The API
stand-in is a small ASGI app under ``BackgroundServer`` that records the ``RawMessage`` bodies
and can be told to fail with 503 first. Nothing leaves 127.0.0.1; timings are shrunk through
``BotOptions`` and every wait polls for a condition.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi import Response as HttpResponse
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tradewire.intake.discord.bot import BotOptions, run_discord_bot
from tradewire.intake.discord.cli import add_arguments, run_from_args
from tradewire.intake.discord.gateway import DiscordGatewayFatal
from tradewire.intake.model import RawMessage, Source
from tradewire.serving import BackgroundServer

pytestmark = pytest.mark.timeout(15)

BOT_TOKEN = "MTIz.fake.bot-token"
API_TOKEN = "intake-api-token"
WATCHED = "1100000000000000001"
OTHER = "1100000000000000002"
AUTHOR = "2200000000000000001"
CLOSE_REASONS = {4004: "Authentication failed.", 4014: "Disallowed intent(s)."}
SERVER_LOGGER = logging.getLogger("tests.fake_discord_gateway")
SERVER_LOGGER.setLevel(logging.INFO)  # the real Discord does not log our frames here either
FAST = BotOptions(backoff_s=(0.01, 0.05), invalid_session_wait_s=(0.01, 0.02),
                  identify_interval_s=0.0, post_backoff_s=(0.01, 0.05), drain_timeout_s=2.0)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@dataclass
class Conn:
    ws: ServerConnection
    path: str
    received: list[dict[str, Any]] = field(default_factory=list)
    beats_at: list[float] = field(default_factory=list)
    close_code: int | None = None

    def ops(self) -> list[int]:
        return [frame["op"] for frame in self.received]


class FakeGateway:
    """A Discord gateway on 127.0.0.1 (one bot, scripted by the test)."""

    def __init__(self, heartbeat_ms: int = 45_000) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.ack = True
        self.close_on_identify: int | None = None
        self.refuse_handshakes = 0  # answer the next N upgrade requests with HTTP 503
        self.connections: list[Conn] = []
        self.handshakes = 0
        self.session_id: str | None = None
        self.seq = 0
        self._sessions = itertools.count(1)
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/?v=10&encoding=json"

    @property
    def current(self) -> Conn:
        return self.connections[-1]

    async def __aenter__(self) -> FakeGateway:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._gate,
                                   logger=SERVER_LOGGER)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _gate(self, ws: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        if self.refuse_handshakes:
            self.refuse_handshakes -= 1
            return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try later\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Conn(ws, ws.request.path if ws.request else "")
        self.connections.append(conn)
        await self._send(ws, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}})
        try:
            async for text in ws:
                frame = json.loads(text)
                conn.received.append(frame)
                await self._answer(conn, frame)
        except ConnectionClosed:
            pass  # a non-1000 close is part of the script (4000 resumable, 4014, a drop)
        finally:
            conn.close_code = ws.close_code

    async def _answer(self, conn: Conn, frame: dict[str, Any]) -> None:
        op, data = frame["op"], frame["d"]
        if op == 1:
            conn.beats_at.append(time.monotonic())
            if self.ack:
                await self._send(conn.ws, {"op": 11})
        elif op == 2 and self.close_on_identify is not None:
            code = self.close_on_identify
            await conn.ws.close(code, CLOSE_REASONS.get(code, ""))
        elif op == 2:
            self.session_id, self.seq = f"session-{next(self._sessions)}", 0
            await self.dispatch("READY", {
                "v": 10, "user": {"id": "900", "username": "tradewire", "bot": True},
                "guilds": [{"id": "1", "unavailable": True}], "session_id": self.session_id,
                "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume",
                "application": {"id": "900", "flags": 0}})
        elif op == 6 and data["session_id"] == self.session_id and data["seq"] == self.seq:
            await self.dispatch("RESUMED", {})
        elif op == 6:
            await self._send(conn.ws, {"op": 9, "d": False})

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        await self._send(self.current.ws, {"op": 0, "t": event, "s": self.seq, "d": data})

    async def send_op(self, op: int, d: Any = None) -> None:
        await self._send(self.current.ws, {"op": op, "d": d})

    @staticmethod
    async def _send(ws: ServerConnection, payload: dict[str, Any]) -> None:
        payload = {"t": None, "s": None, **payload}
        await ws.send(json.dumps(payload))

    async def ready(self, connections: int = 1) -> None:
        """Wait until ``connections`` sockets exist and the last one has READY/RESUMED."""
        await until(lambda: len(self.connections) >= connections
                    and any(f["op"] in (2, 6) for f in self.current.received))


class IntakeStandIn:
    """``POST /api/intake/messages``: checks the bearer token, records, can fail first."""

    def __init__(self) -> None:
        self.received: list[RawMessage] = []
        self.attempts = 0
        self.fail_with: list[int] = []
        self.app = FastAPI()
        self.app.post("/api/intake/messages")(self._take)

    async def _take(self, request: HttpRequest) -> HttpResponse:
        self.attempts += 1
        if request.headers.get("authorization") != f"Bearer {API_TOKEN}":
            return HttpResponse(status_code=401)
        if self.fail_with:
            return HttpResponse(status_code=self.fail_with.pop(0))
        self.received.append(RawMessage.model_validate_json(await request.body()))
        return HttpResponse('{"decision": "confirm"}', media_type="application/json")


@dataclass
class Harness:
    gateway: FakeGateway
    api: IntakeStandIn
    stop: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_bot(heartbeat_ms: int = 45_000, **kwargs: Any) -> AsyncIterator[Harness]:
    api = IntakeStandIn()
    async with FakeGateway(heartbeat_ms) as gateway, BackgroundServer(api.app) as server:
        stop = asyncio.Event()
        task = asyncio.create_task(run_discord_bot(
            server.base_url, API_TOKEN, BOT_TOKEN, [WATCHED], stop, gateway_url=gateway.url,
            options=FAST, **kwargs))
        harness = Harness(gateway, api, stop, task)
        try:
            yield harness
        finally:
            stop.set()
            with contextlib.suppress(DiscordGatewayFatal):
                await asyncio.wait_for(task, 5)


@pytest.fixture
async def bot() -> AsyncIterator[Harness]:
    async with running_bot() as harness:
        await harness.gateway.ready()
        yield harness


def message(message_id: str, content: str = "", channel: str = WATCHED,
            **extra: Any) -> dict[str, Any]:
    return {"id": message_id, "channel_id": channel, "guild_id": "1", "type": 0, "flags": 0,
            "author": {"id": AUTHOR, "username": "signals", "bot": True}, "content": content,
            "embeds": [], "attachments": [], "mentions": [], "pinned": False,
            "timestamp": "2024-04-29T18:12:02.167000+00:00", "edited_timestamp": None, **extra}


SIGNAL_ID = "1234567890123456789"
SIGNAL_EMBED = {"type": "rich", "title": "BTC/USDT LONG", "description": "Entry: 60000",
                "fields": [{"name": "TP", "value": "61000"}, {"name": "SL", "value": "58000"}]}


async def test_identify_carries_the_token_and_the_intents() -> None:
    """The first frame answers Hello with Identify: the bot token and GUILDS | GUILD_MESSAGES |
    MESSAGE_CONTENT (plus DIRECT_MESSAGES when asked)."""
    async with running_bot(direct_messages=True) as h:
        await h.gateway.ready()
        identify = h.gateway.current.received[0]
    assert identify["op"] == 2
    assert identify["d"]["token"] == BOT_TOKEN
    assert identify["d"]["intents"] == (1 << 0) | (1 << 9) | (1 << 15) | (1 << 12)
    assert set(identify["d"]["properties"]) == {"os", "browser", "device"}


async def test_heartbeats_follow_the_hello_interval_and_acks_keep_the_socket() -> None:
    """Heartbeats (op 1, d = last seq) come every heartbeat_interval; ACKed, the socket stays."""
    async with running_bot(heartbeat_ms=100) as h:
        await until(lambda: bool(h.gateway.connections)
                    and len(h.gateway.current.beats_at) >= 4)
        beats = [f for f in h.gateway.current.received if f["op"] == 1]
        gaps = [b - a for a, b in itertools.pairwise(h.gateway.current.beats_at)]
        assert len(h.gateway.connections) == 1
    assert 0.08 < sum(gaps) / len(gaps) < 0.2, gaps  # one late beat can shorten the next gap
    assert beats[0]["d"] == 1  # READY was s=1


async def test_unacknowledged_heartbeats_make_the_client_resume_on_a_new_socket() -> None:
    """No ACK before the next beat: close with a resumable code and Resume elsewhere."""
    async with running_bot(heartbeat_ms=60) as h:
        await h.gateway.ready()
        h.gateway.ack = False
        await until(lambda: len(h.gateway.connections) == 2 and bool(h.gateway.current.received))
        h.gateway.ack = True
        await until(lambda: h.gateway.connections[0].close_code is not None)
        assert h.gateway.connections[0].close_code == 4000
        assert h.gateway.current.received[0]["op"] == 6


async def test_a_message_in_a_watched_channel_is_posted_once(bot: Harness) -> None:
    """MESSAGE_CREATE -> one RawMessage: ids, author, snowflake time, reply_to, embed text."""
    await bot.gateway.dispatch("MESSAGE_CREATE", message(
        SIGNAL_ID, "New signal", type=19, embeds=[SIGNAL_EMBED],
        message_reference={"message_id": "1234567890000000000", "channel_id": WATCHED}))
    await until(lambda: len(bot.api.received) == 1)
    assert bot.api.received == [RawMessage(
        source=Source.DISCORD_BOT, channel=WATCHED, message_id=SIGNAL_ID,
        reply_to="1234567890000000000", author=AUTHOR,
        sent_at_ms=(int(SIGNAL_ID) >> 22) + 1_420_070_400_000,
        text="New signal\nBTC/USDT LONG\nEntry: 60000\nTP: 61000\nSL: 58000")]


async def test_messages_in_other_channels_are_ignored(bot: Harness) -> None:
    """Only configured channel ids are posted (order is kept, so the first was skipped)."""
    await bot.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000001", "x", OTHER))
    await bot.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000002", "y"))
    await until(lambda: len(bot.api.received) == 1)
    await bot.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000003", "z"))
    await until(lambda: len(bot.api.received) == 2)
    assert [m.text for m in bot.api.received] == ["y", "z"]


async def test_edits_and_deletes_are_posted(bot: Harness) -> None:
    """MESSAGE_UPDATE with new content -> edit=1 and the new text; MESSAGE_DELETE -> deleted."""
    await bot.gateway.dispatch("MESSAGE_CREATE", message(SIGNAL_ID, "BTCUSDT LONG SL 58000"))
    await bot.gateway.dispatch("MESSAGE_UPDATE", message(
        SIGNAL_ID, "BTCUSDT LONG SL 59000", edited_timestamp="2024-04-29T18:13:00+00:00"))
    await bot.gateway.dispatch("MESSAGE_DELETE", {"id": SIGNAL_ID, "channel_id": WATCHED,
                                                  "guild_id": "1"})
    await until(lambda: len(bot.api.received) == 3)
    created, edited, deleted = bot.api.received
    assert (created.edit, created.deleted) == (0, False)
    assert (edited.message_id, edited.edit, edited.text) == (SIGNAL_ID, 1, "BTCUSDT LONG SL 59000")
    assert (deleted.message_id, deleted.deleted) == (SIGNAL_ID, True)


async def test_reconnect_request_resumes_with_session_and_last_seq(bot: Harness) -> None:
    """Op 7: the client closes with 4000 (not 1000), reconnects to resume_gateway_url and sends
    Resume with the session id and the last sequence number; events keep flowing."""
    await bot.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000001", "a"))
    await until(lambda: len(bot.api.received) == 1)
    session_id, seq = bot.gateway.session_id, bot.gateway.seq
    await bot.gateway.send_op(7)
    await bot.gateway.ready(connections=2)
    resume = bot.gateway.current.received[0]
    assert resume == {"op": 6, "d": {"token": BOT_TOKEN, "session_id": session_id, "seq": seq}}
    assert bot.gateway.current.path == "/resume?v=10&encoding=json"
    await until(lambda: bot.gateway.connections[0].close_code is not None)
    assert bot.gateway.connections[0].close_code == 4000
    await bot.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000002", "b"))
    await until(lambda: len(bot.api.received) == 2)


async def test_a_dropped_connection_is_resumed(bot: Harness) -> None:
    """The TCP connection dies without a close frame: reconnect and Resume."""
    await bot.gateway.dispatch("GUILD_CREATE", {"id": "1", "channels": []})
    bot.gateway.current.ws.transport.abort()
    await bot.gateway.ready(connections=2)
    assert bot.gateway.current.received[0]["op"] == 6
    assert bot.gateway.current.received[0]["d"]["seq"] == 2


async def test_invalid_session_leads_to_a_fresh_identify(bot: Harness) -> None:
    """Op 9 with d=false: the session is gone, so the next connection identifies anew."""
    first_session = bot.gateway.session_id
    await bot.gateway.send_op(9, False)
    await bot.gateway.ready(connections=2)
    assert bot.gateway.current.received[0]["op"] == 2
    await until(lambda: bot.gateway.session_id != first_session)
    await bot.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000009", "after"))
    await until(lambda: [m.text for m in bot.api.received] == ["after"])


async def test_disallowed_intents_stop_the_bot_with_a_clear_error() -> None:
    """Close 4014 ends run_discord_bot with an error naming MESSAGE_CONTENT; no retry loop."""
    async with running_bot() as h:
        h.gateway.close_on_identify = 4014
        with pytest.raises(DiscordGatewayFatal, match="MESSAGE_CONTENT") as caught:
            await asyncio.wait_for(h.task, 5)
        assert caught.value.code == 4014
        assert len(h.gateway.connections) == 1
        assert BOT_TOKEN not in str(caught.value)


async def test_the_api_failing_twice_with_503_still_gets_the_message_once(bot: Harness) -> None:
    """503, 503, then 200: the poster retries with backoff; the message is stored once."""
    bot.api.fail_with = [503, 503]
    await bot.gateway.dispatch("MESSAGE_CREATE", message(SIGNAL_ID, "BTCUSDT LONG"))
    await until(lambda: len(bot.api.received) == 1)
    await bot.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000005", "next"))
    await until(lambda: len(bot.api.received) == 2)
    assert [m.message_id for m in bot.api.received] == [SIGNAL_ID, "1000000000000000005"]
    assert bot.api.attempts == 4


async def test_a_refused_message_is_dropped_and_the_next_one_posted(bot: Harness) -> None:
    """A 4xx answer (other than 429) cannot improve with retries: log, drop, go on."""
    bot.api.fail_with = [422]
    await bot.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000001", "bad"))
    await bot.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000002", "good"))
    await until(lambda: len(bot.api.received) == 1)
    assert bot.api.received[0].text == "good" and bot.api.attempts == 2


async def test_stop_ends_the_bot_and_closes_the_socket_normally(bot: Harness) -> None:
    """Setting stop returns from run_discord_bot promptly, closing with 1000."""
    bot.stop.set()
    await asyncio.wait_for(bot.task, 2)
    await until(lambda: bot.gateway.current.close_code is not None)
    assert bot.gateway.current.close_code == 1000


async def test_a_gateway_refusing_connections_is_retried_with_backoff() -> None:
    """HTTP 503 on the upgrade (or no gateway at all) is retried until a socket opens."""
    async with running_bot() as h:
        h.gateway.refuse_handshakes = 2  # may race the first attempt: then 1 or 2 are refused
        await h.gateway.ready()
        assert h.gateway.handshakes >= 2 and len(h.gateway.connections) == 1
        await h.gateway.dispatch("MESSAGE_CREATE", message("1000000000000000001", "up"))
        await until(lambda: len(h.api.received) == 1)


async def test_the_bot_token_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Even at DEBUG, neither the Identify/Resume frames nor errors print the token."""
    caplog.set_level(logging.DEBUG)
    async with running_bot() as h:
        await h.gateway.ready()
        await h.gateway.send_op(7)
        await h.gateway.ready(connections=2)
        h.gateway.close_on_identify = 4004
        await h.gateway.send_op(9, False)
        with pytest.raises(DiscordGatewayFatal, match="4004"):
            await asyncio.wait_for(h.task, 5)
    assert caplog.records and BOT_TOKEN not in caplog.text
    assert all(BOT_TOKEN not in repr(getattr(r, "fields", "")) for r in caplog.records)


async def test_command_line_glue_runs_the_bot(monkeypatch: pytest.MonkeyPatch) -> None:
    """``add_arguments`` + ``run_from_args``: token from $DISCORD_BOT_TOKEN, comma-separated
    channel ids, the gateway URL from the command line."""
    monkeypatch.setenv("DISCORD_BOT_TOKEN", BOT_TOKEN)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    api = IntakeStandIn()
    async with FakeGateway() as gateway, BackgroundServer(api.app) as server:
        args = parser.parse_args(["--channel", f"{OTHER},{WATCHED}", "--gateway-url", gateway.url])
        stop = asyncio.Event()
        task = asyncio.create_task(run_from_args(args, server.base_url, API_TOKEN, stop,
                                                 options=FAST))
        await gateway.ready()
        await gateway.dispatch("MESSAGE_CREATE", message("1000000000000000001", "cli"))
        await until(lambda: len(api.received) == 1)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert gateway.connections[0].received[0]["d"]["token"] == BOT_TOKEN
