"""How a ``MuxConnection`` hands messages to its sink, against a scripted websockets server:
every data message is offered from the socket's ``data_received`` in arrival order, a full sink
stops the reading (nothing is dropped, nothing overtakes), a fragmented message is one event,
a sink that fails closes the connection with its error, and a close by the exchange is
reported with its code.

The simulator never fragments a message nor waits on a slow reader on purpose; a scripted
server does both exactly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tradewire.bus.base import Envelope
from tradewire.clock import SystemClock
from tradewire.streams.connection import MuxClosed, MuxConnection
from tradewire.streams.session import AccountRef

pytestmark = pytest.mark.timeout(30)

KEY = "key-1"
ACCOUNT = AccountRef(7, 70)
Script = Callable[[ServerConnection], Awaitable[None]]


def frame(n: int, key: str = KEY) -> str:
    """A combined-stream balance update numbered ``n`` (its event time)."""
    return json.dumps({"stream": key, "data": {"e": "ACCOUNT_UPDATE", "E": n, "T": n, "a": {
        "m": "ADJUSTMENT", "B": [{"a": "USDT", "wb": f"{n}.5", "cw": "1", "bc": "0"}],
        "P": []}}}, separators=(",", ":"))


@contextlib.asynccontextmanager
async def exchange(script: Script) -> AsyncIterator[str]:
    """A ``/private/stream`` server that confirms every SUBSCRIBE, then runs ``script`` on the
    socket; yields its base URL."""

    async def handler(ws: ServerConnection) -> None:
        message = json.loads(await ws.recv())
        assert message["method"] == "SUBSCRIBE"
        await ws.send(json.dumps({"result": None, "id": message["id"]}))
        await script(ws)
        with contextlib.suppress(Exception):
            await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


class Sink:
    """Keeps what it is offered; full from ``capacity`` envelopes until ``release``."""

    def __init__(self, capacity: int | None = None) -> None:
        self.envelopes: list[Envelope] = []
        self.capacity = capacity
        self._room = asyncio.Event()

    def offer(self, envelope: Envelope) -> bool:
        self.envelopes.append(envelope)
        return self.capacity is None or len(self.envelopes) < self.capacity

    async def room(self) -> None:
        await self._room.wait()

    def release(self) -> None:
        self.capacity = None
        self._room.set()

    @property
    def times(self) -> list[int]:
        return [int(e.event["E"]) for e in self.envelopes]


async def connected(base_url: str, sink: Any) -> MuxConnection:
    conn = MuxConnection(1, base_url, sink, SystemClock(), ping_interval_s=None)
    await conn.open()
    await conn.subscribe(KEY, ACCOUNT)
    return conn


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


async def test_a_full_sink_stops_the_reading_and_nothing_is_lost_or_reordered() -> None:
    """3,000 messages sent at once, the sink full after 100: the connection stops reading
    (the rest waits in the socket buffers) and offers nothing more; once the sink has room
    every message arrives, each once, in the order sent, and the connection reads again."""

    async def script(ws: ServerConnection) -> None:
        for n in range(1, 3001):
            await ws.send(frame(n))

    sink = Sink(capacity=100)
    async with exchange(script) as url:
        conn = await connected(url, sink)
        try:
            await until(lambda: conn.paused)
            await asyncio.sleep(0.2)
            assert sink.times == list(range(1, 101))  # nothing offered past the full mark
            sink.release()
            await until(lambda: len(sink.envelopes) == 3000)
            assert sink.times == list(range(1, 3001))
            assert not conn.paused and conn.published == 3000
        finally:
            await conn.close()


async def test_a_fragmented_message_is_one_event() -> None:
    """A message sent in three fragments is offered once, whole; the messages around it keep
    their order."""
    whole = frame(2)

    async def script(ws: ServerConnection) -> None:
        await ws.send(frame(1))
        await ws.send([whole[:10], whole[10:40], whole[40:]])  # an iterable: fragments
        await ws.send(frame(3))

    sink = Sink()
    async with exchange(script) as url:
        conn = await connected(url, sink)
        try:
            await until(lambda: len(sink.envelopes) == 3)
            assert sink.times == [1, 2, 3]
            assert sink.envelopes[1].event == json.loads(whole)["data"]
        finally:
            await conn.close()


async def test_a_failing_sink_closes_the_connection_with_its_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sink that raises (a publisher already closed) must not leave a socket that reads
    and drops: the connection closes, its reason is the sink's error, and it is logged."""

    class Closed(Sink):
        def offer(self, envelope: Envelope) -> bool:
            raise RuntimeError("publisher is closed")

    async def script(ws: ServerConnection) -> None:
        await ws.send(frame(1))

    with caplog.at_level(logging.ERROR, logger="tradewire.streams"):
        async with exchange(script) as url:
            conn = await connected(url, Closed())
            await asyncio.wait_for(conn.wait_closed(), 5)
    assert isinstance(conn.close_reason, RuntimeError)
    assert "publisher is closed" in str(conn.close_reason)
    assert any("reader failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("close", "reason"), [
    ("normal", "closed by the exchange (code 1000)"),
    ("abort", "connection lost"),
])
async def test_the_end_of_the_socket_is_reported_after_its_messages(
    close: str, reason: str
) -> None:
    """Messages sent before the exchange closes (or the TCP connection drops) reach the sink
    first; then the connection is closed with a reason that tells which end it was."""

    async def script(ws: ServerConnection) -> None:
        for n in range(1, 51):
            await ws.send(frame(n))
        if close == "normal":
            await ws.close(1000)
        else:
            ws.transport.abort()

    sink = Sink()
    async with exchange(script) as url:
        conn = await connected(url, sink)
        await asyncio.wait_for(conn.wait_closed(), 5)
    assert isinstance(conn.close_reason, MuxClosed)
    assert reason in str(conn.close_reason)
    if close == "normal":
        assert sink.times == list(range(1, 51))
    else:  # bytes in flight at the abort may be lost: what arrived is in order
        assert sink.times == list(range(1, len(sink.times) + 1))
