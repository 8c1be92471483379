"""A lean pipelined connection to Redis for the publish path (``RedisStreamsBus.publish_many``).

redis-py spends ~150 µs of CPU per call on this host (connection pool, retry wrapper, command
packing, response parsing through several layers) — more than the Redis round trip itself, and
paid once per publish call: at 1,000 events/s arriving one by one, one call each. This
connection does the least a call needs: commands packed by hiredis, written at once on one
socket, replies parsed by ``hiredis.Reader`` in ``data_received`` and handed to the waiting
futures in order (Redis answers the commands of one connection in the order sent, so calls from
several tasks pipeline on the socket without waiting for each other).

* ``call(*commands)`` -> the replies, in order; an error reply of any command raises
  ``PipeReplyError`` after every reply of the call arrived (the others ran: a Lua script that
  errs stops, what it did before stays).
* ``send(commands, on_done)`` is the same call without a task: the commands are written now
  and ``on_done`` gets the replies (or the error) from the connection's ``data_received`` —
  never from inside ``send``. It returns False, writing nothing, when there is no open
  connection on this loop (``call`` opens one). The publish path uses it so an envelope's
  bytes reach Redis in the loop turn they arrived in, and its ack is handled in the turn the
  reply arrives in: no task to start, no future to wake.
* Connection: opened on first use (``AUTH`` and ``SELECT`` as in the URL's connection
  settings), re-opened on the next call after a loss; a loss fails every call in flight with
  ``ConnectionError`` (their commands may or may not have run). When the oldest call waits
  longer than ``reply_timeout_s`` for its replies, the connection is closed the same way (a
  hung Redis must not hang the publisher); one timer per connection watches this, not one per
  call.
* ``supported(redis)``: TCP and Unix sockets; not TLS (``rediss://``) — the bus keeps redis-py
  for those.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis

_CONNECT_TIMEOUT_S = 5.0


class PipeReplyError(Exception):
    """Redis answered a command with an error (the text is Redis's)."""


OnDone = Callable[[list[Any] | BaseException], None]


class _Call:
    """One call's place in the reply order: its replies so far, and who hears the outcome."""

    __slots__ = ("count", "on_done", "replies", "sent")

    def __init__(self, count: int, on_done: OnDone, sent: float) -> None:
        self.count = count
        self.replies: list[Any] = []
        self.on_done = on_done
        self.sent = sent  # loop.time() at the write

    def outcome(self) -> list[Any] | BaseException:
        for reply in self.replies:
            if isinstance(reply, hiredis.ReplyError):
                return PipeReplyError(str(reply))
        return self.replies


class _Protocol(asyncio.Protocol):
    def __init__(self, reply_timeout_s: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.waiters: deque[_Call] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.reply_timeout_s = reply_timeout_s
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not ``asyncio.Transport`` instances; they have its methods
        self.transport = cast(asyncio.Transport, transport)

    def write(self, commands: Sequence[tuple[Any, ...]], on_done: OnDone) -> None:
        assert self.transport is not None
        self.waiters.append(_Call(len(commands), on_done, self.loop.time()))
        self.transport.write(b"".join([hiredis.pack_command(c) for c in commands]))
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self.reply_timeout_s, self._watch)

    def data_received(self, data: bytes) -> None:
        reader, waiters = self.reader, self.waiters
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not waiters:  # a reply nobody asked for: the stream is out of step
                self._fail(ConnectionError("unexpected reply from Redis"))
                return
            call = waiters[0]
            call.replies.append(reply)
            if len(call.replies) == call.count:
                waiters.popleft()
                self._tell(call.on_done, call.outcome())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def _watch(self) -> None:
        """The oldest call has waited ``reply_timeout_s``: fail the connection; else look again
        when it will have."""
        self._watchdog = None
        if not self.waiters or self.lost is not None:
            return
        waited = self.loop.time() - self.waiters[0].sent
        if waited >= self.reply_timeout_s:
            self._fail(ConnectionError(
                f"no reply from Redis within {self.reply_timeout_s:g} s"))
        else:
            self._watchdog = self.loop.call_later(self.reply_timeout_s - waited, self._watch)

    def _fail(self, error: BaseException) -> None:
        self.lost = error
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.transport is not None:
            self.transport.abort()
        while self.waiters:
            self._tell(self.waiters.popleft().on_done, error)

    def _tell(self, on_done: OnDone, outcome: list[Any] | BaseException) -> None:
        try:
            on_done(outcome)
        except Exception as exc:  # a caller's bug must not break the replies of the others
            self.loop.call_exception_handler({
                "message": "RedisPipe: a call's on_done raised", "exception": exc,
                "protocol": self})


class RedisPipe:
    """One pipelined connection; ``call`` from any number of tasks."""

    def __init__(self, connection_kwargs: dict[str, Any], *, reply_timeout_s: float = 10.0
                 ) -> None:
        self._kwargs = connection_kwargs
        self.reply_timeout_s = reply_timeout_s
        self._proto: _Protocol | None = None
        self._connecting = asyncio.Lock()
        self.connects = 0  # connections opened (statistics, tests)

    @staticmethod
    def supported(redis: Any) -> bool:
        from redis.asyncio.connection import Connection, UnixDomainSocketConnection

        cls = redis.connection_pool.connection_class
        return cls is Connection or cls is UnixDomainSocketConnection

    @classmethod
    def for_client(cls, redis: Any, **kwargs: Any) -> RedisPipe:
        return cls(dict(redis.connection_pool.connection_kwargs), **kwargs)

    async def call(self, *commands: tuple[Any, ...]) -> list[Any]:
        proto = self._proto
        loop = asyncio.get_running_loop()
        if proto is None or proto.lost is not None or proto.loop is not loop:
            proto = await self._connect()
        future: asyncio.Future[list[Any]] = loop.create_future()

        def settle(outcome: list[Any] | BaseException) -> None:
            if future.done():  # the caller was cancelled
                return
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        proto.write(commands, settle)
        return await future

    def send(self, commands: Sequence[tuple[Any, ...]], on_done: OnDone) -> bool:
        """Write ``commands`` now if a connection is open on this loop (else False, nothing
        written); ``on_done`` gets the replies, a ``PipeReplyError`` or a ``ConnectionError``,
        later, from the connection's reply handling (exceptions it raises are reported to the
        loop's exception handler, not to the other calls)."""
        proto = self._proto
        if (proto is None or proto.lost is not None
                or proto.loop is not asyncio.get_running_loop()):
            return False
        proto.write(commands, on_done)
        return True

    async def _connect(self) -> _Protocol:
        async with self._connecting:
            loop = asyncio.get_running_loop()
            if self._proto is not None and self._proto.lost is None and self._proto.loop is loop:
                return self._proto
            kwargs = self._kwargs

            def factory() -> _Protocol:
                return _Protocol(self.reply_timeout_s)

            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                if "path" in kwargs:
                    _, proto = await loop.create_unix_connection(factory, kwargs["path"])
                else:
                    _, proto = await loop.create_connection(
                        factory, kwargs.get("host", "localhost"), kwargs.get("port", 6379))
                self._proto = proto
                self.connects += 1
                hello: list[tuple[Any, ...]] = []
                if kwargs.get("password"):
                    user = kwargs.get("username")
                    hello.append(("AUTH", user, kwargs["password"]) if user
                                 else ("AUTH", kwargs["password"]))
                if kwargs.get("db"):
                    hello.append(("SELECT", int(kwargs["db"])))
                if hello:
                    try:
                        await self.call(*hello)
                    except BaseException:
                        await self.close()
                        raise
            return proto

    async def close(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.sleep(0)
