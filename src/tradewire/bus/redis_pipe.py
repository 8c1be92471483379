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
* Connection: opened on first use (``AUTH`` and ``SELECT`` as in the URL's connection
  settings), re-opened on the next call after a loss; a loss fails every call in flight with
  ``ConnectionError`` (their commands may or may not have run). A reply that takes longer than
  ``reply_timeout_s`` closes the connection the same way (a hung Redis must not hang the
  publisher).
* ``supported(redis)``: TCP and Unix sockets; not TLS (``rediss://``) — the bus keeps redis-py
  for those.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, cast

import hiredis

_CONNECT_TIMEOUT_S = 5.0


class PipeReplyError(Exception):
    """Redis answered a command with an error (the text is Redis's)."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not ``asyncio.Transport`` instances; they have its methods
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader, waiters = self.reader, self.waiters
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if not waiters:  # a reply nobody asked for: the stream is out of step
                self._fail(ConnectionError("unexpected reply from Redis"))
                return
            future = waiters.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def _fail(self, error: BaseException) -> None:
        self.lost = error
        if self.transport is not None:
            self.transport.abort()
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: a cancelled caller must not warn


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
        assert proto.transport is not None
        futures = [loop.create_future() for _ in commands]
        proto.waiters.extend(futures)
        proto.transport.write(b"".join([hiredis.pack_command(c) for c in commands]))
        try:
            async with asyncio.timeout(self.reply_timeout_s):
                replies = [await future for future in futures]
        except TimeoutError:
            proto._fail(ConnectionError(
                f"no reply from Redis within {self.reply_timeout_s:g} s"))
            raise ConnectionError(
                f"no reply from Redis within {self.reply_timeout_s:g} s") from None
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise PipeReplyError(str(reply))
        return replies

    async def _connect(self) -> _Protocol:
        async with self._connecting:
            loop = asyncio.get_running_loop()
            if self._proto is not None and self._proto.lost is None and self._proto.loop is loop:
                return self._proto
            kwargs = self._kwargs
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                if "path" in kwargs:
                    _, proto = await loop.create_unix_connection(_Protocol, kwargs["path"])
                else:
                    _, proto = await loop.create_connection(
                        _Protocol, kwargs.get("host", "localhost"), kwargs.get("port", 6379))
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
