"""``LeanTransport`` under ``httpx.AsyncClient`` against real servers on 127.0.0.1: the simulator
through ``ExchangeClient``, and a tiny asyncio HTTP/1.1 server scripted per test for the edges
(framing, keep-alive, stale connections, timeouts, pool limits, cancellation, TLS).

The error types matter most: ``error_map`` reads ConnectError/ConnectTimeout/PoolTimeout as
"not sent" (safe to retry an order) and ReadTimeout/ReadError/RemoteProtocolError as "maybe sent".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import inspect
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType

import httpx
import pytest
import uvloop

from tradewire.clock import ManualClock
from tradewire.errors import ExchangeUnavailable, UnknownOrder, UnknownOutcome
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.error_map import error_from_transport
from tradewire.exchange.transport import LeanTransport
from tradewire.simulator import Engine, SimulatorServer

NOT_SENT = ExchangeUnavailable
MAYBE_SENT = UnknownOutcome


# --- a scripted HTTP/1.1 server ---------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def reply(status: int = 200, body: bytes = b"{}", *headers: tuple[str, str],
          version: str = "HTTP/1.1", length: bool = True) -> bytes:
    lines = [f"{version} {status} Reason"] + [f"{k}: {v}" for k, v in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def echo(seen: Seen) -> bytes | None:
    return reply(200, f'{{"path": "{seen.target}"}}'.encode(), ("Content-Type", "application/json"))


@dataclass
class TinyServer:
    """Answers each request with ``answer(request)`` (``None``: never answers, waits for the client
    to hang up); ``close_idle_after_s`` closes connections idle that long; ``close_after_reply``
    closes each connection after its first answer."""

    answer: Callable[[Seen], bytes | None] = echo
    close_idle_after_s: float | None = None
    close_after_reply: bool = False
    delay_s: float = 0.0
    tls: ssl.SSLContext | None = None
    connections: int = 0
    hung_up: int = 0
    ended: int = 0
    requests: list[Seen] = field(default_factory=list)
    url: str = ""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> TinyServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://localhost:{port}" if self.tls else f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # the handlers see EOF and return
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 2)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        self.connections += 1
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.ended += 1
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            async with asyncio.timeout(self.close_idle_after_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError):
            return False
        request_line, *lines = head.decode().split("\r\n")[:-2]
        method, target, _ = request_line.split(" ")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        seen = Seen(method, target, headers, body)
        self.requests.append(seen)
        await asyncio.sleep(self.delay_s)
        answer = self.answer(seen)
        if answer is None:
            await reader.read()  # until the client hangs up
            self.hung_up += 1
            return False
        writer.write(answer)
        await writer.drain()
        return not self.close_after_reply and b"connection: close" not in answer.lower()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=2.0) as http:
        yield http


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not condition():
            await asyncio.sleep(0.01)


def classified(exc: httpx.TransportError) -> type:
    return type(error_from_transport(exc, "GET /x"))


# --- requests and responses -------------------------------------------------------------------


async def test_sends_the_request_as_httpx_built_it(client: httpx.AsyncClient) -> None:
    """Method, target with query, Host, the client's headers and the body with its length."""
    async with TinyServer() as server:
        response = await client.post(f"{server.url}/fapi/v1/order?symbol=BTCUSDT&x=%2F",
                                     content=b"a=1&b=2", headers={"X-MBX-APIKEY": "key"})
    assert response.json() == {"path": "/fapi/v1/order?symbol=BTCUSDT&x=%2F"}
    assert response.http_version == "HTTP/1.1" and response.reason_phrase == "Reason"
    [seen] = server.requests
    assert (seen.method, seen.body) == ("POST", b"a=1&b=2")
    assert seen.headers["host"] == server.url.removeprefix("http://")
    assert seen.headers["x-mbx-apikey"] == "key"
    assert seen.headers["content-length"] == "7"


async def test_a_streamed_request_body_is_sent_with_a_length(client: httpx.AsyncClient) -> None:
    """A body given as an async iterator is read in full and sent with Content-Length."""
    async def parts() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    async with TinyServer() as server:
        await client.put(f"{server.url}/x", content=parts())
    [seen] = server.requests
    assert seen.body == b"abcd" and seen.headers["content-length"] == "4"
    assert "transfer-encoding" not in seen.headers


async def test_reads_a_chunked_body(client: httpx.AsyncClient) -> None:
    """Chunks (with an extension and a trailer) are joined; the connection is reused after."""
    body = b"4;ext=1\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n"
    chunked = reply(200, body, ("Transfer-Encoding", "chunked"), length=False)
    async with TinyServer(answer=lambda seen: chunked) as server:
        assert (await client.get(f"{server.url}/a")).json() == {"a": 1}
        assert (await client.get(f"{server.url}/b")).json() == {"a": 1}
    assert server.connections == 1


async def test_large_bodies_both_ways(client: httpx.AsyncClient) -> None:
    """Megabytes in a request body, a Content-Length body and a chunked body arrive whole."""
    big = bytes(range(256)) * 12_000

    def answer(seen: Seen) -> bytes:
        if seen.target == "/chunked":
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                              for part in (big[:1_000_000], big[1_000_000:]))
            return reply(200, chunks + b"0\r\n\r\n", ("Transfer-Encoding", "chunked"),
                         length=False)
        return reply(200, seen.body)

    async with TinyServer(answer=answer) as server:
        assert (await client.post(f"{server.url}/echo", content=big)).content == big
        assert (await client.get(f"{server.url}/chunked")).content == big
    assert server.connections == 1


async def test_gzip_content_encoding_is_decoded_by_httpx(client: httpx.AsyncClient) -> None:
    """The raw body is handed to httpx, which applies Content-Encoding."""
    zipped = reply(200, gzip.compress(b'{"ok": true}'), ("Content-Encoding", "gzip"))
    async with TinyServer(answer=lambda seen: zipped) as server:
        assert (await client.get(f"{server.url}/z")).json() == {"ok": True}


async def test_connection_close_is_not_reused(client: httpx.AsyncClient) -> None:
    """A response saying ``Connection: close`` closes its connection; the next one opens anew."""
    closing = reply(200, b"{}", ("Connection", "close"))
    async with TinyServer(answer=lambda seen: closing) as server:
        for _ in range(3):
            assert (await client.get(f"{server.url}/c")).status_code == 200
    assert server.connections == 3


async def test_http10_body_runs_until_eof(client: httpx.AsyncClient) -> None:
    """Without a length, the body is what arrives until the server closes."""
    unframed = reply(200, b'{"old": 1}', version="HTTP/1.0", length=False)
    async with TinyServer(answer=lambda seen: unframed, close_after_reply=True) as server:
        assert (await client.get(f"{server.url}/old")).json() == {"old": 1}
        assert (await client.get(f"{server.url}/old")).json() == {"old": 1}
    assert server.connections == 2


async def test_bodiless_answers_keep_the_connection(client: httpx.AsyncClient) -> None:
    """HEAD, 204 and 304 carry no body even with a Content-Length; 1xx is skipped."""
    def answer(seen: Seen) -> bytes:
        if seen.method == "HEAD":
            return reply(200, b"", ("Content-Length", "1234"), length=False)
        if seen.target == "/204":
            return reply(204, b"", length=False)
        return b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + reply(304, b"", length=False)

    async with TinyServer(answer=answer) as server:
        assert (await client.head(f"{server.url}/h")).headers["content-length"] == "1234"
        assert (await client.get(f"{server.url}/204")).status_code == 204
        assert (await client.get(f"{server.url}/304")).status_code == 304
        assert (await client.get(f"{server.url}/204")).content == b""
    assert server.connections == 1


# --- connection reuse and limits --------------------------------------------------------------


async def test_one_connection_for_sequential_requests(client: httpx.AsyncClient) -> None:
    """100 requests in a row share one keep-alive connection."""
    async with TinyServer() as server:
        for i in range(100):
            assert (await client.get(f"{server.url}/{i}")).json() == {"path": f"/{i}"}
    assert server.connections == 1


async def test_parallel_requests_get_their_own_answers(client: httpx.AsyncClient) -> None:
    """50 requests at once each get their own answer; a second wave reuses the connections."""
    async with TinyServer(delay_s=0.02) as server:
        for _ in range(2):
            responses = await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(50)))
            assert [r.json()["path"] for r in responses] == [f"/{i}" for i in range(50)]
    assert server.connections == 50


async def test_idle_connections_expire() -> None:
    """A connection idle longer than the keep-alive expiry is not reused."""
    transport = LeanTransport(keepalive_expiry=0.05)
    async with httpx.AsyncClient(transport=transport) as http, TinyServer() as server:
        await http.get(f"{server.url}/1")
        await asyncio.sleep(0.1)
        await http.get(f"{server.url}/2")
    assert server.connections == 2


async def test_pool_limit_waits_then_pool_timeout() -> None:
    """With every connection busy a request waits for the pool timeout, then PoolTimeout (not
    sent); a cancelled request closes its connection and frees its slot."""
    transport = LeanTransport(max_connections=1)
    timeout = httpx.Timeout(5.0, pool=0.1)

    def answer(seen: Seen) -> bytes | None:
        return None if seen.target == "/hang" else echo(seen)

    async with httpx.AsyncClient(transport=transport, timeout=timeout) as http, \
            TinyServer(answer=answer) as server:
        hanging = asyncio.create_task(http.get(f"{server.url}/hang"))
        await eventually(lambda: len(server.requests) == 1)
        with pytest.raises(httpx.PoolTimeout) as caught:
            await http.get(f"{server.url}/next")
        assert classified(caught.value) is NOT_SENT
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging
        await eventually(lambda: server.hung_up == 1)
        assert (await http.get(f"{server.url}/after")).status_code == 200
    assert server.connections == 2


async def test_a_waiting_request_gets_the_released_connection() -> None:
    """A request waiting for the pool takes the connection the first one gives back."""
    transport = LeanTransport(max_connections=1)
    async with httpx.AsyncClient(transport=transport) as http, TinyServer(delay_s=0.05) as server:
        first, second = await asyncio.gather(http.get(f"{server.url}/1"),
                                             http.get(f"{server.url}/2"))
    assert (first.json(), second.json()) == ({"path": "/1"}, {"path": "/2"})
    assert server.connections == 1


# --- stale connections: never "maybe sent" ----------------------------------------------------


async def test_server_closed_idle_connection_is_replaced(client: httpx.AsyncClient) -> None:
    """After the server closes an idle keep-alive connection, the next request goes out on a new
    one and succeeds."""
    async with TinyServer(close_idle_after_s=0.05) as server:
        await client.get(f"{server.url}/1")
        await asyncio.sleep(0.2)
        assert (await client.get(f"{server.url}/2")).json() == {"path": "/2"}
    assert server.connections == 2


async def test_unsolicited_bytes_spoil_an_idle_connection(client: httpx.AsyncClient) -> None:
    """Bytes after a complete response (a stray 408) make the connection unusable."""
    stray = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"
    async with TinyServer(answer=lambda seen: echo(seen) + stray) as server:
        await client.get(f"{server.url}/1")
        await asyncio.sleep(0.05)
        assert (await client.get(f"{server.url}/2")).json() == {"path": "/2"}
    assert server.connections == 2


@dataclass
class ThreadedServer:
    """A blocking server in a thread: it closes its first connection when told, while the event
    loop (blocked by the test) has not yet seen the FIN; then it serves one more connection."""

    listener: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    close_now: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    accepted: int = 0

    def __enter__(self) -> ThreadedServer:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close_now.set()
        self.thread.join(5)
        self.listener.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # a failed test leaves the listener closed
            self._serve()

    def _serve(self) -> None:
        self.listener.settimeout(5)
        for last in (False, True):
            conn, _ = self.listener.accept()
            self.accepted += 1
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(reply(200, b'{"n": %d}' % self.accepted))
                if not last:
                    self.close_now.wait(5)
            threading.Event().wait(0.05)  # the FIN reaches the client's socket
            self.closed.set()


async def test_fin_not_yet_seen_by_the_loop_is_detected(client: httpx.AsyncClient) -> None:
    """A FIN sitting in the socket, not yet read by the event loop, still retires the idle
    connection before the next request is written on it."""
    with ThreadedServer() as server:
        assert (await client.get(server.url)).json() == {"n": 1}
        server.close_now.set()
        assert server.closed.wait(5)  # blocks the loop: it cannot process the FIN
        assert (await client.get(server.url)).json() == {"n": 2}
    assert server.accepted == 2


# --- failures and how error_map reads them ----------------------------------------------------


async def test_refused_port_is_connect_error(client: httpx.AsyncClient) -> None:
    """Nobody listening: ConnectError, "not sent"."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as caught:
        await client.get(f"http://127.0.0.1:{port}/x")
    assert caught.value.request.url.port == port
    assert classified(caught.value) is NOT_SENT


async def test_unsupported_scheme(client: httpx.AsyncClient) -> None:
    """A scheme other than http/https: UnsupportedProtocol, "not sent"."""
    transport = LeanTransport()
    with pytest.raises(httpx.UnsupportedProtocol) as caught:
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/x"))
    assert classified(caught.value) is NOT_SENT


async def test_server_that_never_answers_is_read_timeout() -> None:
    """Accepted and read but never answered: ReadTimeout, "maybe sent"."""
    async with httpx.AsyncClient(transport=LeanTransport(), timeout=0.2) as http, \
            TinyServer(answer=lambda seen: None) as server:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await http.post(f"{server.url}/fapi/v1/order", content=b"x=1")
        assert classified(caught.value) is MAYBE_SENT
        await eventually(lambda: server.hung_up == 1)  # the connection was closed


async def test_server_that_stops_reading_is_write_timeout() -> None:
    """A body the server never reads fills the socket buffers: WriteTimeout, "maybe sent"."""
    release = asyncio.Event()

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    timeout = httpx.Timeout(5.0, write=0.2)
    try:
        async with httpx.AsyncClient(transport=LeanTransport(), timeout=timeout) as http:
            with pytest.raises(httpx.WriteTimeout) as caught:
                await http.post(f"http://127.0.0.1:{port}/x", content=b"x" * 64_000_000)
        assert classified(caught.value) is MAYBE_SENT
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_aclose_closes_idle_connections() -> None:
    """Closing the client closes its keep-alive connections."""
    async with TinyServer() as server:
        async with httpx.AsyncClient(transport=LeanTransport()) as http:
            await asyncio.gather(*(http.get(f"{server.url}/{i}") for i in range(3)))
        await eventually(lambda: server.ended == server.connections)


async def test_disconnect_without_answer_is_maybe_sent(client: httpx.AsyncClient) -> None:
    """The server reads the request and closes: RemoteProtocolError, "maybe sent"."""
    async with TinyServer(answer=lambda seen: b"", close_after_reply=True) as server:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client.post(f"{server.url}/fapi/v1/order", content=b"x=1")
    assert classified(caught.value) is MAYBE_SENT


async def test_truncated_or_malformed_answers_are_maybe_sent(client: httpx.AsyncClient) -> None:
    """A body cut short and a garbled status line: RemoteProtocolError."""
    cut = reply(200, b"{}", ("Content-Length", "10"), length=False)
    async with TinyServer(answer=lambda seen: cut, close_after_reply=True) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{server.url}/cut")
    async with TinyServer(answer=lambda seen: b"HTTP/1.1 2OO OK\r\n\r\n") as server:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{server.url}/garbled")


async def test_header_injection_is_refused_before_sending(client: httpx.AsyncClient) -> None:
    """A header value with a line break is never written."""
    async with TinyServer() as server:
        with pytest.raises(httpx.LocalProtocolError):
            await client.get(f"{server.url}/x", headers={"X-A": "1\r\nX-B: 2"})
    assert server.requests == []


# --- TLS --------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def certificate(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    yield _self_signed(tmp_path)


async def test_https_verifies_the_server_by_host_name(certificate: tuple[Path, Path]) -> None:
    """https with SNI and hostname checks: trusted certificate works and the connection is reused;
    an untrusted one is ConnectError ("not sent")."""
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with TinyServer(tls=server_tls) as server:
        async with httpx.AsyncClient(transport=LeanTransport(ssl_context=trusting)) as http:
            for _ in range(3):
                assert (await http.get(f"{server.url}/s")).json() == {"path": "/s"}
        async with httpx.AsyncClient(transport=LeanTransport()) as http:
            with pytest.raises(httpx.ConnectError) as caught:
                await http.get(f"{server.url}/s")
    assert classified(caught.value) is NOT_SENT
    assert server.connections == 1  # the refused handshake never reached the handler


# --- the real exchange client on the simulator ------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(engine=Engine(clock)) as server:
        yield server


async def _exchange_client(
    sim: SimulatorServer, clock: ManualClock, timeout: float = 5.0
) -> ExchangeClient:
    async with httpx.AsyncClient(base_url=sim.base_url, transport=LeanTransport()) as admin:
        account = (await admin.post("/sim/accounts", json={"balance": "10000"})).json()
    http = httpx.AsyncClient(transport=LeanTransport(), timeout=timeout)
    return ExchangeClient(sim.base_url, account["api_key"], account["api_secret"], http=http,
                          clock=clock, own_http=True)


async def test_exchange_client_over_the_simulator(
    sim: SimulatorServer, clock: ManualClock
) -> None:
    """Listen keys, placing, querying and cancelling an order, and an exchange error, over real
    sockets."""
    client = await _exchange_client(sim, clock)
    try:
        key = await client.new_listen_key()
        for _ in range(20):
            assert await client.keepalive_listen_key() in ("", key)
        placed = await client.place_order("BTCUSDT", "BUY", "LIMIT", Decimal("0.010"),
                                          Decimal("50000"), client_order_id="lean-1")
        queried = await client.get_order("BTCUSDT", client_order_id="lean-1")
        assert queried.orderId == placed.orderId
        cancelled = await client.cancel_order("BTCUSDT", client_order_id="lean-1")
        assert cancelled.status == "CANCELED"
        with pytest.raises(UnknownOrder):
            await client.get_order("BTCUSDT", client_order_id="never-placed")
        await client.close_listen_key()
    finally:
        await client.close()


async def test_slow_exchange_answer_is_unknown_outcome(
    sim: SimulatorServer, clock: ManualClock
) -> None:
    """A simulator answer slower than the read timeout surfaces as UnknownOutcome."""
    client = await _exchange_client(sim, clock, timeout=0.2)
    try:
        async with httpx.AsyncClient(base_url=sim.base_url, transport=LeanTransport()) as admin:
            await admin.post("/sim/faults/slow", json={"ms": 1000})
        with pytest.raises(UnknownOutcome):
            await client.get_order("BTCUSDT", client_order_id="slow-1")
    finally:
        await client.close()


# --- the same on uvloop (the CLI's event loop) ------------------------------------------------

ON_UVLOOP = [
    test_sends_the_request_as_httpx_built_it, test_reads_a_chunked_body,
    test_large_bodies_both_ways,
    test_connection_close_is_not_reused, test_http10_body_runs_until_eof,
    test_one_connection_for_sequential_requests, test_parallel_requests_get_their_own_answers,
    test_pool_limit_waits_then_pool_timeout, test_server_closed_idle_connection_is_replaced,
    test_unsolicited_bytes_spoil_an_idle_connection, test_fin_not_yet_seen_by_the_loop_is_detected,
    test_refused_port_is_connect_error, test_server_that_never_answers_is_read_timeout,
    test_server_that_stops_reading_is_write_timeout, test_aclose_closes_idle_connections,
    test_disconnect_without_answer_is_maybe_sent, test_https_verifies_the_server_by_host_name,
]


@pytest.mark.parametrize("case", ON_UVLOOP, ids=lambda case: case.__name__.removeprefix("test_"))
def test_on_uvloop(case: Callable[..., Awaitable[None]], tmp_path: Path) -> None:
    """The same behaviour on uvloop."""
    async def run() -> None:
        wants = inspect.signature(case).parameters
        if "certificate" in wants:
            await case(_self_signed(tmp_path))
        elif "client" in wants:
            async with httpx.AsyncClient(transport=LeanTransport(), timeout=2.0) as http:
                await case(http)
        else:
            await case()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
