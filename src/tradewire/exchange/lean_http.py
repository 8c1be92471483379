"""``LeanHttp``: a small HTTP/1.1 client for one origin, for the calls a streams pod makes all day.

Why: through httpx (client, httpcore, anyio, h11) one listenKey keepalive PUT costs ~1 ms of
event-loop CPU on this project's hosts, spread over a few callbacks of 0.3-0.5 ms; a streams pod
holding 5,000 accounts sends ~2.8 of them a second, and every such callback delays the socket
readers (the publish-latency tail of issue 5). Here one request is one ``transport.write`` and
the answer is parsed by ``httptools`` (llhttp, C) as the bytes arrive: 0.12-0.45 ms of
client CPU per PUT against 1.0-1.3 ms through httpx (``make bench-stream-calls``; most of what
is left is the kernel's ``send``).

Scope, on purpose narrow: requests without a body (the USER_STREAM calls: listenKey
POST/PUT/DELETE), **idempotent only** — a request on a reused keep-alive connection that the
server had already closed is sent once more on a new connection when not a byte of an answer
came back. Everything else (signed calls, order placement with its exact not-sent/maybe-sent
rule, proxies, HTTP/2) stays on the shared ``httpx.AsyncClient``; ``LeanHttp.usable_for`` says
no when a proxy applies to the origin, so such deployments keep httpx for everything.

Failures are httpx's exception types with httpx's meaning, so ``error_map`` maps both paths
alike: nothing written → ``ConnectError`` / ``ConnectTimeout`` / ``PoolTimeout``; written →
``ReadTimeout`` / ``ReadError`` / ``RemoteProtocolError`` (malformed answer, a body over
``MAX_BODY``, a connection closed mid-answer). A connection is reused only after a complete
answer that did not say ``Connection: close``, and is dropped when idle for ``idle_expiry_s``
(below the usual 5 s server keep-alive) or when the server sent bytes nobody asked for.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx

MAX_HEAD = 64 * 1024  # response status line and headers
MAX_BODY = 1024 * 1024  # the listenKey answers are ~100 bytes
_BODYLESS = ("GET", "DELETE")  # methods sent without ``Content-Length: 0``
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})
_FORBIDDEN = frozenset("\r\n\0")


@dataclass(frozen=True, slots=True)
class Answer:
    """One response: status, headers (lower-case names; repeats joined by ", "), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Stale(Exception):
    """A reused connection ended before a single byte of the answer: the request may be sent
    again on a new connection (idempotent requests only)."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; answers parsed by ``httptools`` as bytes arrive."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._head = 0
        self._received = False
        self._framed = False  # Content-Length or chunked: the body's end is known
        self._headers_done = False
        self.keep_alive = False
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for (e.g. a 408 on an idle connection)
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
            return
        if not self._headers_done:
            self._head += len(data)
            if self._head > MAX_HEAD:
                self._fail(httpx.RemoteProtocolError(f"response head over {MAX_HEAD} bytes"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._framed:
            self.keep_alive = False  # the body ran until the end of the connection
            self.on_message_complete()
        elif not self._received:
            waiter.set_exception(_Stale())
        else:
            waiter.set_exception(httpx.RemoteProtocolError(
                "server closed the connection in the middle of the answer"))

    # -- httptools callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self.keep_alive = self._parser.should_keep_alive()
        self._framed = ("content-length" in self._headers
                        or "chunked" in self._headers.get("transfer-encoding", "").lower())

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            self._fail(httpx.RemoteProtocolError(f"response body over {MAX_BODY} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            status = self._parser.get_status_code()
            waiter.set_result(Answer(status, self._headers, b"".join(self._body)))

    # -- use ---------------------------------------------------------------------------------------

    def usable(self) -> bool:
        transport = self._transport
        return not self.closed and transport is not None and not transport.is_closing()

    async def exchange(self, request: bytes) -> Answer:
        """Write one request and wait for its whole answer (``_Stale`` / httpx errors)."""
        transport = self._transport
        assert transport is not None
        self._headers, self._body, self._size, self._head = {}, [], 0, 0
        self._received = self._framed = self._headers_done = False
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        transport.write(request)
        try:
            return await waiter
        finally:
            self._waiter = None

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()


class LeanHttp:
    """Idempotent body-less requests to one origin over a few keep-alive connections."""

    def __init__(
        self, base_url: str, *, timeout_s: float = 10.0, connect_timeout_s: float = 5.0,
        max_connections: int = 16, max_idle: int = 4, idle_expiry_s: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"LeanHttp needs an http(s) URL, not {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = self._port == (443 if parts.scheme == "https" else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if default_port else f"{host}:{self._port}"
        self._prefix = parts.path.rstrip("/")
        self._tls = parts.scheme == "https"
        self._ssl = ssl_context  # https: httpx's default context, made at the first connect
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._idle_expiry_s = idle_expiry_s
        self._idle: list[_Connection] = []
        self._closed = False
        self.connections_opened = 0  # for tests and metrics

    @staticmethod
    def usable_for(base_url: str) -> bool:
        """http(s), and no proxy from the environment applies to it (httpx would use one)."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        proxies = urllib.request.getproxies()
        if not any(proxies.get(name) for name in (parts.scheme, "all")):
            return True
        return bool(urllib.request.proxy_bypass(parts.hostname))

    async def request(self, method: str, path: str, headers: dict[str, str]) -> Answer:
        """``method`` ``path`` (with its query) and ``headers``; the whole answer, any status.
        Raises httpx's transport errors (module docstring)."""
        if method not in _METHODS:
            raise ValueError(f"LeanHttp sends {sorted(_METHODS)}, not {method!r}")
        if self._closed:
            raise httpx.ConnectError("LeanHttp is closed")
        request = self._encode(method, path, headers)
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(f"no free connection within {self.timeout_s} s") from None
        try:
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._exchange(conn, request)
                except _Stale:
                    pass  # closed by the server while idle: once more on a new connection
            conn = await self._connect()
            try:
                return await self._exchange(conn, request)
            except _Stale:
                raise httpx.RemoteProtocolError(
                    "server closed the connection without answering") from None
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    def _encode(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        if not path.startswith("/") or not _FORBIDDEN.isdisjoint(path) or " " in path:
            raise ValueError(f"path must start with '/' and hold no space nor CR/LF: {path!r}")
        for name, value in headers.items():
            if not _FORBIDDEN.isdisjoint(name + value) or ":" in name:
                raise ValueError(f"header {name!r} holds CR, LF or NUL (or ':' in its name)")
        lines = [f"{method} {self._prefix}{path} HTTP/1.1", f"Host: {self._host_header}",
                 "Accept: application/json", "User-Agent: tradewire"]
        if method not in _BODYLESS:
            lines.append("Content-Length: 0")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if conn.usable() and now - conn.idle_since < self._idle_expiry_s:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._tls and self._ssl is None:
            self._ssl = httpx.create_ssl_context()  # not at start-up: most roles never PUT
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl if self._tls else None,
                    server_hostname=self._host if self._tls else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connect to {self._host_header} timed out after {self.connect_timeout_s} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"connect to {self._host_header}: {exc}") from exc
        self.connections_opened += 1
        return conn

    async def _exchange(self, conn: _Connection, request: bytes) -> Answer:
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await conn.exchange(request)
        except TimeoutError:
            conn.close()
            raise httpx.ReadTimeout(f"no answer within {self.timeout_s} s") from None
        except BaseException:
            conn.close()  # cancelled or failed: its state is unknown, never reused
            raise
        if conn.keep_alive and conn.usable() and not self._closed \
                and len(self._idle) < self._max_idle:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return answer
