"""NOT WIRED IN (2026-11-26): ``runtime.open_runtime`` still builds the shared client on httpx's
default transport. With this transport the streams benchmark's SIGKILL failover went from
~10 s to ~60 s in three runs out of three (the surviving pod made no REST call for ~53 s after
taking the dead pod's shards over, as if its IP weight budget were spent; same code on httpx's
transport: 10.6 s). Not yet explained; find out before wiring it in (docs/benchmarks.md).

``LeanTransport``: a small HTTP/1.1 client transport for ``httpx.AsyncClient`` over asyncio.

Why: httpx's default transport (httpcore + h11 + anyio) costs ~0.7 ms of event-loop CPU per
request; the streams process sends thousands of listenKey PUTs and REST reconciliations, and
each one delays the socket readers. This transport does one plain HTTP/1.1 exchange per request
on an asyncio stream (default loop or uvloop); httpx's client layer above it still builds the
request (headers, cookies, auth) and decodes the response (``Content-Encoding``, charset).

What it does: ``http`` and ``https`` (httpx's default TLS context: certifi CA bundle, SNI = the
host, ALPN ``http/1.1``); a per-origin LIFO pool of idle keep-alive connections that expire after
``keepalive_expiry`` (checked when a request comes, not on a timer); at most ``max_connections``
open connections (a request waits up to the pool timeout for one, else ``httpx.PoolTimeout``)
and at most ``max_keepalive_connections`` idle ones; request bodies are read in full and sent
with ``Content-Length``; response bodies are read in full (``Content-Length``, chunked, or until
EOF) before the response is returned; the connect/read/write/pool timeouts of the request.

What it does not do: HTTP/2, proxies (``HTTP(S)_PROXY`` are ignored), ``Expect: 100-continue``,
upgrades (101), streaming of request or response bodies, client certificates, retries. Cookies
are httpx's own (per client).

Errors, the part that matters for money (``error_map``): before any request byte is written
only ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout`` or ``UnsupportedProtocol`` ("not
sent"); once writing has begun only ``WriteTimeout``, ``ReadTimeout``, ``ReadError`` or
``RemoteProtocolError`` ("maybe sent"); a failed write is not reported as such (it would read as
"not sent") but, like httpcore, the response is read anyway and its failure is what is raised.
An idle connection is checked before reuse (EOF, transport closing, unread bytes in the reader or
in the socket) and dropped if it is not clean, so a connection the server closed while idle never
turns a request into "maybe sent"; nothing is ever retried once its first byte is written. A
cancelled request closes its connection; only a fully read response on a connection that neither
side marked ``Connection: close`` returns it to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import SupportsIndex, cast

import httpx

Origin = tuple[str, str, int]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_HEAD = 64 * 1024
_SWEEP_EVERY_S = 1.0
_NO_BODY_STATUS = frozenset({204, 304})
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_DIGITS = re.compile(rb"[0-9]{1,18}")


class _Reader(asyncio.StreamReader):
    """A ``StreamReader`` that knows how many received bytes nobody has read yet."""

    def __init__(self) -> None:
        super().__init__(limit=_MAX_HEAD)
        self.unread = 0

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.unread += len(cast(bytes, data))
        super().feed_data(data)

    async def until(self, separator: bytes) -> bytes:
        data = await self.readuntil(separator)
        self.unread -= len(data)
        return data

    async def exactly(self, n: int) -> bytes:
        data = await self.readexactly(n)
        self.unread -= n
        return data

    async def some(self) -> bytes:
        data = await self.read(_MAX_HEAD)
        self.unread -= len(data)
        return data


@dataclass(eq=False)
class _Connection:
    origin: Origin
    reader: _Reader
    writer: asyncio.StreamWriter
    fd: int
    idle_since: float = 0.0

    def clean(self) -> bool:
        """Nothing has arrived or happened since the last response: safe to send on."""
        reader = self.reader
        if reader.unread or reader.at_eof() or reader.exception() is not None:
            return False
        return not self.writer.transport.is_closing() and not _readable(self.fd)

    def close(self) -> None:
        self.writer.transport.abort()


def _readable(fd: int) -> bool:
    """Bytes or EOF wait in the socket that the event loop has not read yet."""
    if fd < 0:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


@dataclass
class _Pool:
    """Connection accounting: idle stacks per origin, a cap on open connections, waiters."""

    max_connections: int
    max_idle: int
    expiry_s: float
    idle: dict[Origin, list[_Connection]] = field(default_factory=dict)
    idle_count: int = 0
    open: set[_Connection] = field(default_factory=set)
    opening: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    next_sweep: float = 0.0

    def take_idle(self, origin: Origin, now: float) -> _Connection | None:
        """The most recently used clean idle connection to ``origin`` (stale ones are closed)."""
        if now >= self.next_sweep:
            self.sweep(now)
        stack = self.idle.get(origin)
        while stack:
            conn = stack.pop()
            self.idle_count -= 1
            if now - conn.idle_since < self.expiry_s and conn.clean():
                return conn
            self.drop(conn)
        return None

    def reserve(self) -> bool:
        """Count one more connection about to be opened, if the cap allows (closing an idle
        connection to another origin if that is what it takes)."""
        if len(self.open) + self.opening >= self.max_connections:
            victim = next((stack[0] for stack in self.idle.values() if stack), None)
            if victim is None:
                return False
            self.idle[victim.origin].remove(victim)
            self.idle_count -= 1
            self.drop(victim)
        self.opening += 1
        return True

    def opened(self, conn: _Connection | None) -> None:
        self.opening -= 1
        if conn is None:
            self.wake()
        else:
            self.open.add(conn)

    def release(self, conn: _Connection, now: float) -> None:
        """Back to the idle stack after a complete response (closed if the stacks are full)."""
        if self.idle_count >= self.max_idle:
            self.drop(conn)
            return
        conn.idle_since = now
        self.idle.setdefault(conn.origin, []).append(conn)
        self.idle_count += 1
        self.wake()

    def drop(self, conn: _Connection) -> None:
        conn.close()
        if conn in self.open:
            self.open.discard(conn)
            self.wake()

    def sweep(self, now: float) -> None:
        for stack in self.idle.values():
            while stack and now - stack[0].idle_since >= self.expiry_s:
                self.idle_count -= 1
                self.drop(stack.pop(0))
        self.next_sweep = now + _SWEEP_EVERY_S

    def wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def wait(self, deadline: float | None) -> None:
        """Until a connection is released or closed; ``TimeoutError`` at ``deadline``."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.wake()  # we were woken but leave: pass the turn on
            waiter.cancel()
            raise

    def close_all(self) -> list[_Connection]:
        conns = list(self.open)
        for conn in conns:
            conn.writer.close()
        self.open.clear()
        self.idle.clear()
        self.idle_count = 0
        return conns


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams with a keep-alive pool; see the module docstring."""

    def __init__(
        self, *, max_connections: int = 200, max_keepalive_connections: int = 50,
        keepalive_expiry: float = 5.0, ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._pool = _Pool(max_connections, max_keepalive_connections, keepalive_expiry)
        self._ssl = ssl_context

    async def aclose(self) -> None:
        """Close every connection, idle or in use (requests in flight then fail)."""
        closing = [conn.writer.wait_closed() for conn in self._pool.close_all()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 1.0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = _origin(request)
        data = await _encode(request)
        conn = await self._acquire(origin, request, timeouts)
        try:
            response, reusable = await _exchange(conn, request, data, timeouts.get("write"),
                                                 timeouts.get("read"))
        except BaseException:  # errors and cancellation: the connection's state is unknown
            self._pool.drop(conn)
            raise
        if reusable:
            self._pool.release(conn, asyncio.get_running_loop().time())
        else:
            self._pool.drop(conn)
        return response

    async def _acquire(
        self, origin: Origin, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        pool_timeout = timeouts.get("pool")
        deadline = None if pool_timeout is None else loop.time() + pool_timeout
        while True:
            conn = self._pool.take_idle(origin, loop.time())
            if conn is not None:
                return conn
            if self._pool.reserve():
                return await self._connect(origin, request, timeouts.get("connect"))
            try:
                await self._pool.wait(deadline)
            except TimeoutError:
                raise httpx.PoolTimeout("no connection free in the pool", request=request) from None

    async def _connect(
        self, origin: Origin, request: httpx.Request, timeout: float | None
    ) -> _Connection:
        conn = None
        try:
            conn = await self._open(origin, request, timeout)
        finally:
            self._pool.opened(conn)
        return conn

    async def _open(
        self, origin: Origin, request: httpx.Request, timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        reader = _Reader()
        protocol = asyncio.StreamReaderProtocol(reader)
        tls = self._tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                transport, _ = await loop.create_connection(
                    lambda: protocol, host, port, ssl=tls,
                    server_hostname=host if tls is not None else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out",
                                       request=request) from None
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS handshake
            raise httpx.ConnectError(f"connect to {host}:{port}: {exc}", request=request) from exc
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        sock = transport.get_extra_info("socket")
        return _Connection(origin, reader, writer, sock.fileno() if sock is not None else -1)

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl


def _origin(request: httpx.Request) -> Origin:
    url = request.url
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
    if not url.raw_host:
        raise httpx.UnsupportedProtocol("request URL has no host", request=request)
    return scheme, url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[scheme]


async def _encode(request: httpx.Request) -> bytes:
    """The request's bytes: request line, httpx's headers, the whole body."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        body = await request.aread()
    headers = request.headers.raw
    if any(name.lower() == b"transfer-encoding" for name, _ in headers):  # a streamed body
        headers = [(k, v) for k, v in headers
                   if k.lower() not in (b"transfer-encoding", b"content-length")]
        headers.append((b"Content-Length", str(len(body)).encode()))
    lines = [f"{request.method} ".encode(), request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    head = b"".join(lines)
    if head.count(b"\n") != len(headers) + 2 or head.count(b"\r") != len(headers) + 2:
        raise httpx.LocalProtocolError("line break in a header or the target", request=request)
    return head + body if body else head


async def _exchange(
    conn: _Connection, request: httpx.Request, data: bytes,
    write_timeout: float | None, read_timeout: float | None,
) -> tuple[httpx.Response, bool]:
    """Send the request and read the whole response; ``(response, connection reusable)``."""
    written = await _send(conn, request, data, write_timeout)
    try:
        async with asyncio.timeout(read_timeout) as scope:
            response, reusable = await _receive(conn.reader, request, scope, read_timeout)
    except TimeoutError:
        raise httpx.ReadTimeout("timed out reading the response", request=request) from None
    except asyncio.IncompleteReadError:
        raise httpx.RemoteProtocolError("server disconnected before the response was complete",
                                        request=request) from None
    except (asyncio.LimitOverrunError, ValueError) as exc:
        raise httpx.RemoteProtocolError(f"malformed response: {exc}", request=request) from exc
    except OSError as exc:
        raise httpx.ReadError(f"reading the response: {exc}", request=request) from exc
    return response, reusable and written


async def _send(
    conn: _Connection, request: httpx.Request, data: bytes, timeout: float | None
) -> bool:
    """Write the request; False if writing failed (the response is read anyway: the server may
    have answered before closing, and if not, that read's failure is the error)."""
    writer = conn.writer
    try:
        writer.write(data)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(timeout):
                await writer.drain()
    except TimeoutError:
        raise httpx.WriteTimeout("timed out writing the request", request=request) from None
    except (OSError, RuntimeError):  # RuntimeError: uvloop's write on a closed handle
        return False
    return True


async def _receive(
    reader: _Reader, request: httpx.Request, scope: asyncio.Timeout, timeout: float | None
) -> tuple[httpx.Response, bool]:
    loop = asyncio.get_running_loop()

    def progress() -> None:  # the read timeout counts from the last bytes received
        if timeout is not None:
            scope.reschedule(loop.time() + timeout)

    while True:
        version, status, reason, headers = _parse_head(await reader.until(b"\r\n\r\n"))
        progress()
        if status >= 200:
            break
        if status == 101:
            raise httpx.RemoteProtocolError("protocol upgrades are not supported", request=request)
    framing = _Framing.of(headers)
    reusable = version == b"HTTP/1.1" and not framing.close and not _asks_close(request)
    if request.method == "HEAD" or status in _NO_BODY_STATUS:
        body = b""
    elif framing.chunked:
        body = await _read_chunked(reader, progress)
    elif framing.length is not None:
        body = await reader.exactly(framing.length)
    else:
        body, reusable = await _read_to_eof(reader, progress), False
    response = httpx.Response(status, headers=headers, stream=httpx.ByteStream(body),
                              extensions={"http_version": version, "reason_phrase": reason})
    return response, reusable


def _asks_close(request: httpx.Request) -> bool:
    return any(name.lower() == b"connection" and b"close" in value.lower()
               for name, value in request.headers.raw)


def _parse_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    """``(version, status, reason, headers)`` from the status line and header lines."""
    status_line, *lines = head[:-4].split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"bad status line {status_line[:80]!r}")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name[-1:] in b" \t" or line[:1] in b" \t":
            raise ValueError(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return version, int(code), reason, headers


@dataclass(frozen=True)
class _Framing:
    chunked: bool = False
    length: int | None = None
    close: bool = False

    @staticmethod
    def of(headers: list[tuple[bytes, bytes]]) -> _Framing:
        chunked = close = False
        lengths = set()
        for name, value in headers:
            lower = name.lower()
            if lower == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
                if not chunked:
                    raise ValueError(f"unsupported Transfer-Encoding {value[:40]!r}")
            elif lower == b"content-length":
                if not _DIGITS.fullmatch(value):
                    raise ValueError(f"bad Content-Length {value[:40]!r}")
                lengths.add(int(value))
            elif lower == b"connection":
                close = close or b"close" in value.lower()
        if len(lengths) > 1:
            raise ValueError("conflicting Content-Length headers")
        length = None if chunked or not lengths else lengths.pop()
        return _Framing(chunked, length, close)


async def _read_chunked(reader: _Reader, progress: Callable[[], None]) -> bytes:
    parts = []
    while True:
        line = await reader.until(b"\r\n")
        size_field = line[:-2].split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size_field):
            raise ValueError(f"bad chunk size {line[:40]!r}")
        size = int(size_field, 16)
        if size == 0:
            break
        chunk = await reader.exactly(size + 2)
        progress()
        if chunk[-2:] != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
        parts.append(chunk[:-2])
    while await reader.until(b"\r\n") != b"\r\n":  # trailers, ignored
        progress()
    return b"".join(parts)


async def _read_to_eof(reader: _Reader, progress: Callable[[], None]) -> bytes:
    parts = []
    while data := await reader.some():
        parts.append(data)
        progress()
    return b"".join(parts)
