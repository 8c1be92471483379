"""How a ``MuxConnection`` hands messages to its sink, against a scripted websockets server:
every data message is offered from the socket's ``data_received`` in arrival order, a full sink
stops the reading (nothing is dropped, nothing overtakes), a fragmented message is one event,
a sink that fails closes the connection with its error, and a close by the exchange is
reported with its code.

The simulator never fragments a message nor waits on a slow reader on purpose; a scripted
server does both exactly."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from tests.polling import until
from tests.raw_tcp import tcp_server
from websockets.asyncio.server import ServerConnection, serve

from tradewire.bus.base import Envelope
from tradewire.clock import SystemClock
from tradewire.streams.connection import MAX_MESSAGE, MuxClosed, MuxConnection
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
async def exchange(script: Script, compression: str | None = None) -> AsyncIterator[str]:
    """A ``/private/stream`` server that confirms every SUBSCRIBE, then runs ``script`` on the
    socket; yields its base URL."""

    async def handler(ws: ServerConnection) -> None:
        message = json.loads(await ws.recv())
        assert message["method"] == "SUBSCRIBE"
        await ws.send(json.dumps({"result": None, "id": message["id"]}))
        await script(ws)
        with contextlib.suppress(Exception):
            await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
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


async def connected(base_url: str, sink: Any, *, compression: bool = False) -> MuxConnection:
    conn = MuxConnection(1, base_url, sink, SystemClock(), ping_interval_s=None,
                         compression=compression)
    await conn.open()
    await conn.subscribe(KEY, ACCOUNT)
    return conn


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


async def test_compressed_messages_are_read_by_websockets_and_arrive_in_order() -> None:
    """With permessage-deflate (``ws_compression``) every data frame carries RSV1: the split
    hands each to websockets, which inflates it; the messages arrive whole and in order."""

    async def script(ws: ServerConnection) -> None:
        for n in range(1, 201):
            await ws.send(frame(n))

    sink = Sink()
    async with exchange(script, compression="deflate") as url:
        conn = await connected(url, sink, compression=True)
        try:
            await until(lambda: len(sink.envelopes) == 200)
            assert sink.times == list(range(1, 201))
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


# --- the frame split, against a raw server that chooses every byte and every write -----------

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, 1.3


def server_frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True,
                 mask: bytes | None = None) -> bytes:
    """A frame as a server sends it (unmasked unless ``mask``: a server must not mask)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    masked = 0x80 if mask else 0
    if n < 126:
        head = bytes([first, masked | n])
    elif n < 65536:
        head = bytes([first, masked | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, masked | 127]) + n.to_bytes(8, "big")
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, payload) of one masked client frame."""
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4)
    data = await reader.readexactly(n)
    return first & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


RawScript = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_exchange(script: RawScript) -> AsyncIterator[str]:
    """A TCP server that upgrades by hand and hands ``script`` the socket and the 101 response
    (unsent: the script decides how it leaves, e.g. with the first frames in one write)."""

    async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        await script(reader, writer, response)

    async with tcp_server(upgrade) as port:
        yield f"ws://127.0.0.1:{port}"


async def confirm_subscribe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    opcode, payload = await read_client_frame(reader)
    assert opcode == 0x1 and json.loads(payload)["method"] == "SUBSCRIBE"
    reply = json.dumps({"result": None, "id": json.loads(payload)["id"]}).encode()
    writer.write(server_frame(reply))


async def test_frames_cut_anywhere_and_glued_together_arrive_whole_and_in_order() -> None:
    """The split must not care how the bytes are cut: the 101 response arrives in two writes
    with its blank line cut in half and a server ping glued to its end; then messages of the
    three length forms (7-bit, 16-bit, 64-bit) and another ping, written one byte at a time,
    then more glued in one write. Every message arrives once, whole, in order; each ping is
    answered with a pong carrying its data; a close ends it with its code."""
    pings: list[bytes] = []
    big = "x" * 70_000  # over 65,535 bytes: the 64-bit length form

    def message(n: int, pad: str = "") -> bytes:
        body = json.loads(frame(n))
        body["data"]["pad"] = pad
        return server_frame(json.dumps(body).encode())

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     response: bytes) -> None:
        writer.write(response[:-3])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(response[-3:] + server_frame(b"early", 0x9))  # "\n\r\n" + a ping
        await writer.drain()
        opcode, payload = await read_client_frame(reader)
        pings.append(payload if opcode == 0xA else b"not a pong")
        opcode, payload = await read_client_frame(reader)
        reply = json.dumps({"result": None, "id": json.loads(payload)["id"]}).encode()
        stream = (server_frame(reply) + message(1) + message(2, "y" * 300)
                  + server_frame(b"are you there", 0x9) + message(3, big))
        for i in range(len(stream)):  # one byte per write
            writer.write(stream[i:i + 1])
            if i % 7 == 0:
                await writer.drain()
                await asyncio.sleep(0)
        opcode, payload = await read_client_frame(reader)
        pings.append(payload if opcode == 0xA else b"not a pong")
        writer.write(message(4) + message(5, big) + message(6)
                     + server_frame((1000).to_bytes(2, "big"), 0x8))
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await read_client_frame(reader)  # the client's close reply

    sink = Sink()
    async with raw_exchange(script) as url:
        conn = await connected(url, sink)
        await asyncio.wait_for(conn.wait_closed(), 10)
    assert sink.times == [1, 2, 3, 4, 5, 6]
    assert sink.envelopes[2].event["pad"] == big and sink.envelopes[1].event["pad"] == "y" * 300
    assert pings == [b"early", b"are you there"] and conn.pings == 2
    assert "closed by the exchange (code 1000)" in str(conn.close_reason)


@pytest.mark.parametrize(("bad", "code"), [
    (server_frame(b'{"e":"x"}', mask=b"abcd"), 1002),  # a server must not mask
    (bytes([0x81, 127]) + (MAX_MESSAGE + 1).to_bytes(8, "big"), 1009),  # announced too long
    (server_frame(b"more", 0x0), 1002),  # a continuation with nothing to continue
])
async def test_a_frame_that_breaks_the_rules_closes_the_socket_with_its_code(
    bad: bytes, code: int
) -> None:
    """Frames the split does not take go to websockets' protocol layer, which refuses them as
    before: the socket closes with the code (sent to the exchange) and nothing is offered
    from that frame on; what came before it was offered."""
    closes: list[int] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     response: bytes) -> None:
        writer.write(response)
        await confirm_subscribe(reader, writer)
        writer.write(server_frame(frame(1).encode()) + bad + server_frame(frame(2).encode()))
        await writer.drain()
        opcode, payload = await read_client_frame(reader)
        if opcode == 0x8:
            closes.append(int.from_bytes(payload[:2], "big"))

    sink = Sink()
    async with raw_exchange(script) as url:
        conn = await connected(url, sink)
        await asyncio.wait_for(conn.wait_closed(), 10)
    assert sink.times == [1]
    assert closes == [code]
    assert isinstance(conn.close_reason, MuxClosed)
    assert "connection lost" in str(conn.close_reason)
