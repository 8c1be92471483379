"""``MuxConnection``: one ``/private/stream`` socket carrying many accounts' listenKeys.

The manager decides which keys a connection carries; the connection only talks to the
exchange (reference §3.2, §3.3):

* ``subscribe(key, account)`` routes the key's frames to the account at once and queues the key
  for a ``SUBSCRIBE``; queued keys leave in batches of ``subscribe_batch`` and every control
  message (``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``) waits its turn so that at most
  ``control_msgs_per_s`` leave per second (the exchange disconnects above 10). The returned
  future resolves when the reply with the message's id confirms the key, and fails with
  ``ControlRefused`` / ``MuxClosed`` otherwise.
* Every data message becomes an ``Envelope`` (``session.make_envelope``: stable event id,
  ``MALFORMED`` for what cannot be identified) handed to the sink (the ``BatchPublisher``)
  from the socket's ``data_received`` itself: no queue, future or task switch per frame, so a
  frame's bytes reach the bus write within one loop turn. When the sink is full
  (``offer`` -> False) the connection stops reading (``pause_reading``: the exchange's bytes
  wait in the socket buffers), queues the messages already parsed, in order, and hands them
  on once the sink has ``room()``; then it reads again.
* Liveness: ``last_frame_ms`` (clock time of the last data frame or server ping; control
  replies do not count: they flow even when events do not), ``frames``;
  the manager keeps per-account last event times in the shared ``activity`` dict. Client pings
  (``ping_interval_s`` / ``ping_timeout_s``) close a socket whose peer stopped answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from tradewire.bus.base import Envelope
from tradewire.clock import Clock
from tradewire.logging import log
from tradewire.streams.session import (
    AccountRef,
    ControlReply,
    KeyExpired,
    Publish,
    UserStreamSession,
    make_envelope,
)

logger = logging.getLogger("tradewire.streams")

OnExpired = Callable[[AccountRef, str], None]
OnReceipt = Callable[[Envelope, float], None]


class MuxClosed(ConnectionError):
    """The connection closed before the request was answered."""


class ControlRefused(RuntimeError):
    """The exchange answered a control message with an error (``{"code", "msg"}``)."""


class Sink(Protocol):
    """Where a connection's envelopes go (``streams.publisher.BatchPublisher``)."""

    def offer(self, envelope: Envelope) -> bool:
        """Take the envelope now; False: full, take nothing more until ``room()``."""
        ...

    async def room(self) -> None: ...


_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
_WHOLE_DATA = (0x81, 0x82)  # first byte of an unfragmented TEXT / BINARY frame, no RSV bits
_HEAD_END = b"\r\n\r\n"
MAX_MESSAGE = 2**22  # bytes: a longer message closes the socket (1009)


def _header(view: bytes | bytearray, pos: int, size: int) -> tuple[int, int] | None:
    """(header length, payload length) of the frame at ``pos``; None: its header is not all
    there yet. A masked frame's header counts its 4-byte key (a header of 6, 8 or 14 bytes)."""
    if size - pos < 2:
        return None
    second = view[pos + 1]
    length, head = second & 0x7F, 2
    if length == 126:
        if size - pos < 4:
            return None
        length, head = int.from_bytes(view[pos + 2 : pos + 4], "big"), 4
    elif length == 127:
        if size - pos < 10:
            return None
        length, head = int.from_bytes(view[pos + 2 : pos + 10], "big"), 10
    return (head + 4 if second & 0x80 else head), length


class _Socket(ClientConnection):
    """A client connection that reports incoming pings (server keepalives count as life) and
    hands every data message to ``on_data`` from ``data_received`` instead of queueing it for
    ``recv``.

    Past the handshake it splits the byte stream into frames itself: a whole, unmasked TEXT or
    BINARY frame (the exchange's every message) goes to ``on_data`` at once; every other frame
    (ping, pong, close, fragments, anything that breaks the rules) goes whole to websockets'
    protocol layer, whose parser therefore always starts at a frame boundary; it answers pings
    and closes, joins fragments (``_message``) and refuses what is wrong, closing the socket
    as before. Once the exchange sent a close, or a frame is longer than ``MAX_MESSAGE``,
    websockets takes the rest of the stream as it comes. websockets' generator-based parser cost
    ~40 µs per message on this host, the split here a few."""

    def __init__(self, *args: Any, on_data: Callable[[bytes], None],
                 on_ping: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_data = on_data
        self.on_ping = on_ping
        self._parts: list[bytes] | None = None  # a fragmented message so far
        self._splitting = False  # past the handshake: frames are split here
        self._tail = b""  # the handshake's last bytes so far (its end may straddle two reads)
        self._buffer = bytearray()  # the start of an incomplete frame

    def data_received(self, data: bytes) -> None:
        if self._splitting:
            self._split(data)
        elif self.response is not None:  # a refused handshake or a stream handed over
            super().data_received(data)
        else:
            self._handshake(data)

    def eof_received(self) -> None:
        if self._buffer:  # a frame cut short: websockets sees it end and says so
            self._hand_over(self._buffer)
        super().eof_received()

    def _handshake(self, data: bytes) -> None:
        """Bytes up to the end of the HTTP response go to websockets; after a 101, frames."""
        seen = self._tail + data
        end = seen.find(_HEAD_END)
        if end < 0:
            self._tail = seen[-3:]
            super().data_received(data)
            return
        cut = end + len(_HEAD_END) - len(self._tail)
        super().data_received(data[:cut])
        rest = data[cut:]
        if self.protocol.state is State.OPEN:
            self._splitting = True
            if rest:
                self._split(rest)
        elif rest:
            super().data_received(rest)

    def _split(self, data: bytes) -> None:
        buffer = self._buffer
        view: bytes | bytearray = data
        if buffer:
            buffer += data
            view = buffer
        size, pos = len(view), 0
        while (header := _header(view, pos, size)) is not None:
            head, length = header
            if self.protocol.state is not State.OPEN or length > MAX_MESSAGE:
                # the exchange closed, or websockets refuses the frame (1009) unread
                self._hand_over(view[pos:])
                return
            end = pos + head + length
            if end > size:
                break
            unmasked = not view[pos + 1] & 0x80  # a server must not mask: websockets refuses
            if view[pos] in _WHOLE_DATA and unmasked and self._parts is None:
                self.on_data(bytes(view[pos + head : end]))
            else:
                super().data_received(bytes(view[pos:end]))
            pos = end
        if view is buffer:
            del buffer[:pos]
        elif pos < size:
            buffer += view[pos:]

    def _hand_over(self, rest: bytes | bytearray) -> None:
        """websockets reads the rest of the stream itself, from a frame boundary."""
        self._splitting = False
        pending = bytes(rest)  # a copy: ``rest`` may be the buffer dropped next
        self._buffer = bytearray()
        if pending:
            super().data_received(pending)

    def process_event(self, event: Event) -> None:
        if self.response is not None and isinstance(event, Frame):  # past the handshake
            if event.opcode in _DATA:
                self._message(event)
                return
            if event.opcode is Opcode.PING:
                self.on_ping()
        super().process_event(event)

    def _message(self, frame: Frame) -> None:
        data = frame.data if type(frame.data) is bytes else bytes(frame.data)
        if frame.opcode is Opcode.CONT:
            if self._parts is None:  # the protocol layer refuses this before it gets here
                return
            self._parts.append(data)
            if frame.fin:
                data, self._parts = b"".join(self._parts), None
                self.on_data(data)
        elif frame.fin:
            self.on_data(data)
        else:
            self._parts = [data]


class MuxConnection:
    """One combined user-data socket. ``open()`` once; after it closes, make a new one."""

    def __init__(
        self,
        conn_id: int,
        ws_base_url: str,
        sink: Sink,
        clock: Clock,
        *,
        subscribe_batch: int = 50,
        control_msgs_per_s: float = 5.0,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 20.0,
        compression: bool = False,
        reply_timeout_s: float = 10.0,
        open_timeout_s: float = 10.0,
        activity: dict[int, int] | None = None,
        on_expired: OnExpired | None = None,
        on_receipt: OnReceipt | None = None,
    ) -> None:
        self.id = conn_id
        self.url = f"{ws_base_url.rstrip('/')}/private/stream"
        self.clock = clock
        self.subscribe_batch = subscribe_batch
        self.control_interval_s = 1.0 / control_msgs_per_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.compression = compression
        self.reply_timeout_s = reply_timeout_s
        self.open_timeout_s = open_timeout_s
        self.activity = activity if activity is not None else {}
        self._sink = sink
        self._on_expired = on_expired
        self._on_receipt = on_receipt
        self.session = UserStreamSession()
        self.opened_ms: int | None = None
        self.last_frame_ms: int | None = None
        self.frames = 0
        self.pings = 0
        self.data_frames = 0
        self.published = 0
        self.control_sent = 0
        self.retiring = False  # closed on purpose (rotation, shutdown): not a drop
        self.close_reason: BaseException | None = None
        self._ws: _Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._held: deque[bytes] | None = None  # messages waiting for room in the sink
        self._drainer: asyncio.Task[None] | None = None
        self._fault: BaseException | None = None  # a bug while handing a message on
        self._writer: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[ControlReply]] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}  # key -> confirmed
        self._subscribed: set[str] = set()
        self._to_subscribe: list[str] = []
        self._to_unsubscribe: list[str] = []
        self._wake = asyncio.Event()
        self._pace_lock = asyncio.Lock()
        self._next_send = 0.0

    def __repr__(self) -> str:
        return f"MuxConnection(id={self.id}, keys={len(self.session.keys)})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (one connection attempt; the caller acquired the budget for it)."""
        socket = functools.partial(_Socket, on_data=self._deliver, on_ping=self._alive)
        ws = await connect(
            self.url, max_size=MAX_MESSAGE, ping_interval=self.ping_interval_s,
            ping_timeout=self.ping_timeout_s, open_timeout=self.open_timeout_s,
            compression="deflate" if self.compression else None,
            create_connection=cast(type[ClientConnection], socket),
        )
        assert isinstance(ws, _Socket)
        self._ws = ws
        if self._fault is not None:  # a message glued to the handshake failed
            ws.transport.abort()
        self.opened_ms = self.last_frame_ms = self.clock.now_ms()
        self._reader = asyncio.create_task(self._read(ws), name=f"mux-{self.id}-reader")
        self._writer = asyncio.create_task(self._write(), name=f"mux-{self.id}-writer")

    @property
    def is_open(self) -> bool:
        return self._ws is not None and not self._closed.is_set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def paused(self) -> bool:
        """Not reading: messages wait for room in the sink."""
        return self._held is not None

    def age_ms(self, now_ms: int) -> int:
        return 0 if self.opened_ms is None else now_ms - self.opened_ms

    def silent_ms(self, now_ms: int) -> int:
        return 0 if self.last_frame_ms is None else now_ms - self.last_frame_ms

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        """Close on purpose (not counted as a drop) and wait until the reader ended."""
        self.retiring = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 5)
        self._shutdown(MuxClosed("closed"))

    # -- subscriptions -----------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        """Every key routed on this connection (confirmed or not)."""
        return self.session.keys

    @property
    def subscribed(self) -> int:
        return len(self._subscribed)

    @property
    def confirmed_keys(self) -> set[str]:
        """The keys confirmed subscribed here (the live set: read it, do not change it)."""
        return self._subscribed

    def carries(self, key: str) -> bool:
        """``key`` is confirmed subscribed here."""
        return key in self._subscribed

    def subscribe(self, key: str, account: AccountRef) -> asyncio.Future[None]:
        """Route ``key`` to ``account`` and subscribe it (batched, paced); the future resolves
        once the exchange confirmed it. Idempotent while pending or confirmed."""
        loop = asyncio.get_running_loop()
        if key in self._subscribed:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        waiter = self._waiters.get(key)
        if waiter is not None and not waiter.done():
            return waiter
        waiter = loop.create_future()
        if self._closed.is_set():
            waiter.set_exception(MuxClosed("connection closed"))
            waiter.exception()  # retrieved: nobody else needs to see it
            return waiter
        self.session.add(key, account)
        self._waiters[key] = waiter
        if key in self._to_unsubscribe:
            self._to_unsubscribe.remove(key)
        self._to_subscribe.append(key)
        self._wake.set()
        return waiter

    def unsubscribe(self, key: str) -> None:
        """Stop routing ``key`` at once; an ``UNSUBSCRIBE`` follows (fire and forget)."""
        routed = key in self.session
        self.session.remove(key)
        waiter = self._waiters.pop(key, None)
        if key in self._to_subscribe:
            self._to_subscribe.remove(key)  # never sent
        elif (routed or key in self._subscribed) and key not in self._to_unsubscribe:
            self._to_unsubscribe.append(key)
            self._wake.set()
        if waiter is not None and not waiter.done():
            waiter.cancel()
        self._subscribed.discard(key)

    def forget(self, key: str) -> None:
        """The exchange no longer lists ``key``: treat it as not subscribed (routes stay)."""
        self._subscribed.discard(key)

    async def list_subscriptions(self) -> set[str]:
        """``LIST_SUBSCRIPTIONS``: the keys the exchange has on this socket (bare keys)."""
        reply = await self._request("LIST_SUBSCRIPTIONS", None)
        result = reply.result if isinstance(reply.result, list) else []
        return {str(item).split("@", 1)[0] for item in result}

    # -- control messages --------------------------------------------------------------------

    async def _request(self, method: str, params: list[str] | None) -> ControlReply:
        """Send one control message in its turn and wait for its reply."""
        future = await self._send_control(method, params)
        return await future

    async def _send_control(
        self, method: str, params: list[str] | None
    ) -> asyncio.Future[ControlReply]:
        async with self._pace_lock:
            loop = asyncio.get_running_loop()
            wait = self._next_send - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_send = max(loop.time(), self._next_send) + self.control_interval_s
            ws = self._ws
            if ws is None or self._closed.is_set():
                raise MuxClosed("connection closed")
            request_id = next(self._ids)
            future: asyncio.Future[ControlReply] = loop.create_future()
            self._replies[request_id] = future
            message: dict[str, Any] = {"method": method, "id": request_id}
            if params is not None:
                message["params"] = params
            try:
                await ws.send(json.dumps(message, separators=(",", ":")))
            except ConnectionClosed as exc:
                self._replies.pop(request_id, None)
                raise MuxClosed(str(exc)) from exc
            self.control_sent += 1
        loop.call_later(self.reply_timeout_s, self._expire_reply, request_id)
        return future

    def _expire_reply(self, request_id: int) -> None:
        future = self._replies.pop(request_id, None)
        if future is not None and not future.done():
            future.set_exception(TimeoutError(f"no reply to control message {request_id}"))
            future.exception()  # retrieved: a discarded request must not warn

    async def _write(self) -> None:
        """Send queued UNSUBSCRIBEs and SUBSCRIBEs in batches, paced."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._to_unsubscribe or self._to_subscribe:
                if self._to_unsubscribe:
                    batch = self._to_unsubscribe[: self.subscribe_batch]
                    del self._to_unsubscribe[: len(batch)]
                    with contextlib.suppress(MuxClosed):
                        await self._send_control("UNSUBSCRIBE", batch)
                    continue
                batch = self._to_subscribe[: self.subscribe_batch]
                del self._to_subscribe[: len(batch)]
                try:
                    future = await self._send_control("SUBSCRIBE", batch)
                except MuxClosed:
                    return
                future.add_done_callback(functools.partial(self._confirm, batch))

    def _confirm(self, keys: list[str], future: asyncio.Future[ControlReply]) -> None:
        failure: BaseException | None
        if future.cancelled():
            failure = MuxClosed("connection closed")
        else:
            failure = future.exception()
            if failure is None and future.result().error is not None:
                failure = ControlRefused(str(future.result().error))
        for key in keys:
            waiter = self._waiters.get(key)
            if waiter is None or waiter.done():
                continue  # unsubscribed meanwhile
            del self._waiters[key]
            if failure is None:
                self._subscribed.add(key)
                waiter.set_result(None)
            else:
                self.session.remove(key)
                waiter.set_exception(failure)

    # -- the socket reader -------------------------------------------------------------------

    @property
    def heard(self) -> bool:
        """A data frame or a server ping arrived since the socket opened."""
        return self.data_frames > 0 or self.pings > 0

    def _alive(self) -> None:
        self.pings += 1
        self.last_frame_ms = self.clock.now_ms()

    async def _read(self, ws: _Socket) -> None:
        """Wait for the end of the socket (messages arrive through ``_deliver``), let the
        messages held for room reach the sink, then report the connection closed."""
        reason: BaseException | None = None
        try:
            await ws.wait_closed()
            if self._drainer is not None:
                await self._drainer  # cancelled by ``_shutdown`` if ``close`` stops waiting
            closed = ws.protocol.close_exc
            if self._fault is not None:
                reason = self._fault
            elif isinstance(closed, ConnectionClosedOK):
                reason = MuxClosed(f"closed by the exchange (code {ws.close_code})")
            else:
                reason = MuxClosed(f"connection lost: {closed}")
        except asyncio.CancelledError:
            reason = MuxClosed("cancelled")
            raise
        finally:
            self._shutdown(reason)

    def _deliver(self, data: bytes) -> None:
        """A data message, from the socket's ``data_received``: handed on now, or queued
        behind earlier ones waiting for room in the sink."""
        if self._held is not None:
            self._held.append(data)
            return
        if self._fault is not None:  # the socket is being torn down
            return
        try:
            if self._frame(data):
                return
        except Exception as exc:
            self._failed(exc)
            return
        self._held = deque()  # the sink is full: stop reading until it has room
        self._reading(False)
        self._drainer = asyncio.create_task(self._drain(), name=f"mux-{self.id}-drain")

    async def _drain(self) -> None:
        held = self._held
        assert held is not None
        try:
            while True:
                await self._sink.room()
                while held:
                    if not self._frame(held.popleft()):
                        break  # full again
                else:
                    break
        except Exception as exc:
            self._failed(exc)
            return
        self._held = None
        self._reading(True)

    def _reading(self, on: bool) -> None:
        transport = self._ws.transport if self._ws is not None else None
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(RuntimeError):  # a transport closing meanwhile
            if on:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def _failed(self, exc: BaseException) -> None:
        """A bug while handing a message on must not leave the socket half-alive."""
        if self._fault is not None:
            return
        self._fault = exc
        log(logger, logging.ERROR, "stream connection reader failed", connection=self.id,
            error=repr(exc))
        if self._ws is not None:
            self._ws.transport.abort()

    def _frame(self, frame: bytes) -> bool:
        """Interpret one message; False once the sink is full."""
        started = time.perf_counter()
        now = self.clock.now_ms()
        self.frames += 1
        actions = self.session.feed(frame)
        if not actions or type(actions[0]) is not ControlReply:  # a reply comes alone
            self.last_frame_ms = now  # control replies prove nothing about the stream
            self.data_frames += 1
        room = True
        for action in actions:
            if isinstance(action, Publish):
                account = action.account
                envelope = make_envelope(account, action.payload, now, raw=action.raw)
                self.activity[account.account_id] = now
                if self._on_receipt is not None:
                    self._on_receipt(envelope, started)
                room = self._sink.offer(envelope) and room
                self.published += 1
            elif isinstance(action, KeyExpired):
                if self._on_expired is not None:
                    self._on_expired(action.account, action.listen_key)
            else:
                future = self._replies.pop(action.request_id, None)
                if future is not None and not future.done():
                    future.set_result(action)
        return room

    def _shutdown(self, reason: BaseException | None) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        failure = MuxClosed(str(reason) if reason else "closed")
        for future in list(self._replies.values()):
            if not future.done():
                future.set_exception(failure)
                future.exception()
        self._replies.clear()
        for waiter in list(self._waiters.values()):
            if not waiter.done():
                waiter.set_exception(failure)
                waiter.exception()  # a waiter nobody awaits must not warn
        self._waiters.clear()
        self._subscribed.clear()
        self._to_subscribe.clear()
        self._to_unsubscribe.clear()
        if self._writer is not None:
            self._writer.cancel()
        if self._drainer is not None:
            self._drainer.cancel()  # done already unless the reader was cancelled
