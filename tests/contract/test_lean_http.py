"""``LeanHttp``: the keepalive PUT's lean HTTP/1.1 path — against the real simulator over TCP, and
against scripted raw servers for what a well-behaved server never does (chunked and EOF-framed
bodies, closed idle connections, garbage, silence, oversized answers).

Every failure must come out as the httpx error of the same meaning, so ``error_map`` turns it
into the same ``tradewire.errors`` exception as on httpx: connect failures "not sent"
(``ExchangeUnavailable``), anything after the first byte was written "maybe sent"
(``UnknownOutcome``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from tests.raw_tcp import Handler, tcp_server

from tradewire.clock import SystemClock
from tradewire.errors import ExchangeUnavailable, ListenKeyInvalid, UnknownOutcome
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.lean_http import MAX_BODY, LeanHttp
from tradewire.simulator import Engine, SimulatorServer

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TCP server on a free port running ``handler`` per connection; yields its base URL and
    the request heads it read (handlers append them)."""
    heads: list[bytes] = []
    async with tcp_server(handler) as port:
        yield f"http://127.0.0.1:{port}", heads


async def read_head(reader: asyncio.StreamReader, heads: list[bytes]) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    heads.append(head)
    return head


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return OK_HEAD + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


# --- against the simulator ------------------------------------------------------------------


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    server = SimulatorServer(engine=Engine(SystemClock()))
    async with server:
        yield server


async def sim_client(server: SimulatorServer, lean: LeanHttp | None,
                     http: httpx.AsyncClient) -> ExchangeClient:
    creds = (await http.post(f"{server.base_url}/sim/accounts", json={})).json()
    return ExchangeClient(server.base_url, creds["api_key"], creds["api_secret"], http=http,
                          lean=lean)


async def test_keepalive_puts_go_over_one_reused_connection_and_keep_the_weight_accounting(
        simulator: SimulatorServer) -> None:
    lean = LeanHttp(simulator.base_url)
    async with httpx.AsyncClient() as http:
        client = await sim_client(simulator, lean, http)
        key = await client.new_listen_key()  # POST: httpx
        for _ in range(20):
            assert await client.keepalive_listen_key() == key
        log = (await http.get(f"{simulator.base_url}/sim/stats/listen-keys")).json()
    await lean.aclose()
    assert log["totals"] == {"POST": 1, "PUT": 20, "DELETE": 0}
    assert log["failed"]["PUT"] == 0
    assert lean.connections_opened == 1
    assert client.used_weight is not None and client.used_weight >= 21  # from the PUTs' headers


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "httpx"])
async def test_an_unknown_key_is_listen_key_invalid_on_both_paths(
        simulator: SimulatorServer, lean: bool) -> None:
    """No listenKey yet: the exchange answers -1125; both paths raise ``ListenKeyInvalid``
    (the streams manager re-keys on it)."""
    transport = LeanHttp(simulator.base_url) if lean else None
    async with httpx.AsyncClient() as http:
        client = await sim_client(simulator, transport, http)
        with pytest.raises(ListenKeyInvalid):
            await client.keepalive_listen_key()
    if transport is not None:
        await transport.aclose()
        assert transport.connections_opened == 1


# --- against scripted servers ----------------------------------------------------------------


async def client_for(base_url: str, lean: LeanHttp) -> ExchangeClient:
    return ExchangeClient(base_url, "key-1", "secret-1", http=httpx.AsyncClient(), lean=lean)


async def test_chunked_and_eof_framed_bodies_are_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
                     b"7\r\n{\"liste\r\n9;ext=1\r\nnKey\": \"a\r\n2\r\nb\"\r\n1\r\n}\r\n0\r\n\r\n")
        await read_head(reader, heads)  # kept alive after a chunked answer
        writer.write(OK_HEAD + b"Connection: close\r\n\r\n{\"listenKey\": \"c\"}")
        await writer.drain()

    async with raw_server(handler) as (url, heads):
        lean = LeanHttp(url)
        first = await lean.request("PUT", "/fapi/v1/listenKey", {"X-MBX-APIKEY": "k"})
        second = await lean.request("PUT", "/fapi/v1/listenKey", {"X-MBX-APIKEY": "k"})
        assert (first.status, first.body) == (200, b'{"listenKey": "ab"}')
        assert second.body == b'{"listenKey": "c"}'
        assert lean.connections_opened == 1
        assert heads[0].startswith(b"PUT /fapi/v1/listenKey HTTP/1.1\r\n")
        assert b"\r\nX-MBX-APIKEY: k\r\n" in heads[0] and b"\r\nContent-Length: 0\r\n" in heads[0]
        # ``Connection: close`` (and an EOF-framed body): never reused
        assert (await lean.request("PUT", "/x", {})).body == b'{"listenKey": "ab"}'
        assert lean.connections_opened == 2
        await lean.aclose()


async def test_an_idle_connection_the_server_closed_is_replaced_and_the_request_sent_once() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_head(reader, heads)
        served += 1
        writer.write(answer(b'{"listenKey": "k"}'))
        await writer.drain()
        # then close without a word: the client still holds it as an idle keep-alive connection

    async with raw_server(handler) as (url, heads):
        lean = LeanHttp(url)
        for _ in range(3):
            reply = await lean.request("PUT", "/fapi/v1/listenKey", {})
            assert reply.status == 200
            await asyncio.sleep(0.05)  # the server's close arrives (or not yet: both must work)
        await lean.aclose()
    assert served == 3 and len(heads) == 3
    assert lean.connections_opened == 3


async def test_a_stale_connection_found_only_when_writing_is_retried_on_a_new_one() -> None:
    """The server closes a kept-alive connection just as the next request goes out (it reads
    it and closes without a byte): the idempotent request is sent again on a new connection.
    A fresh connection closed that way is an error: it is never sent a third time."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections
        await read_head(reader, heads)
        if number == 3:
            return  # a fresh connection closed without answering
        writer.write(answer(b'{"n": %d}' % number))
        await writer.drain()
        if number == 1:
            await read_head(reader, heads)  # the reused connection: read, then close, silent

    async with raw_server(handler) as (url, heads):
        lean = LeanHttp(url)
        assert (await lean.request("PUT", "/a", {})).body == b'{"n": 1}'
        assert (await lean.request("PUT", "/a", {})).body == b'{"n": 2}'  # sent twice
        assert len(heads) == 3 and lean.connections_opened == 2
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            await lean.request("PUT", "/a", {})  # no idle connection left: a fresh one
        assert lean.connections_opened == 3
        await lean.aclose()


async def test_a_garbage_answer_is_a_protocol_error_and_the_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (url, heads):
        lean = LeanHttp(url)
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await lean.request("PUT", "/a", {})
        client = await client_for(url, lean)
        with pytest.raises(UnknownOutcome):  # maybe sent: the money rule of ``error_map``
            await client.keepalive_listen_key()
        await lean.aclose()
    assert lean.connections_opened == 2


@pytest.mark.parametrize(("answer_bytes", "error"), [
    (OK_HEAD + b"Content-Length: 50\r\n\r\n{\"listen", "middle of the answer"),
    (OK_HEAD + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 10) + b"x" * (MAX_BODY + 10),
     "body over"),
], ids=["cut-in-the-middle", "oversized-body"])
async def test_an_answer_cut_short_or_too_long_is_a_protocol_error(
        answer_bytes: bytes, error: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(answer_bytes)
        await writer.drain()

    async with raw_server(handler) as (url, heads):
        lean = LeanHttp(url)
        with pytest.raises(httpx.RemoteProtocolError, match=error):
            await lean.request("PUT", "/a", {})
        await lean.aclose()


async def test_silence_is_a_read_timeout_and_unreachable_is_a_connect_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        await asyncio.sleep(5)

    async with raw_server(handler) as (url, heads):
        lean = LeanHttp(url, timeout_s=0.2)
        with pytest.raises(httpx.ReadTimeout):
            await lean.request("PUT", "/a", {})
        client = await client_for(url, lean)
        with pytest.raises(UnknownOutcome):
            await client.keepalive_listen_key()
        await lean.aclose()
    # the server is gone: nothing listens on the port any more
    lean = LeanHttp(url)
    with pytest.raises(httpx.ConnectError):
        await lean.request("PUT", "/a", {})
    client = await client_for(url, lean)
    with pytest.raises(ExchangeUnavailable) as caught:  # not sent: safe to retry
        await client.keepalive_listen_key()
    assert not isinstance(caught.value, UnknownOutcome)


async def test_a_429_blocks_the_ip_budget_as_on_httpx() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_head(reader, heads)
            body = b'{"code": -1003, "msg": "Too many requests"}'
            writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
                         b"X-MBX-USED-WEIGHT-1M: 2401\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    async with raw_server(handler) as (url, heads):
        lean = LeanHttp(url)
        client = await client_for(url, lean)
        task = asyncio.create_task(client.keepalive_listen_key())
        await asyncio.sleep(0.3)  # the first 429 blocked the budget for 7 s: the resend waits
        assert len(heads) == 1 and not task.done()
        assert client.used_weight == 2401
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert client.ip_budget.blocked_for_ms() > 6000
        await lean.aclose()


async def test_unsolicited_bytes_on_an_idle_connection_retire_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        writer.write(answer(b"{}"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (url, heads):
        lean = LeanHttp(url)
        await lean.request("PUT", "/a", {})
        await asyncio.sleep(0.2)
        assert (await lean.request("PUT", "/a", {})).status == 200  # not the stale 408
        assert lean.connections_opened == 2
        await lean.aclose()


async def test_a_cancelled_request_closes_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader, heads)
        await asyncio.sleep(0.3)
        writer.write(answer(b"{}"))  # the late answer of the cancelled request
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            await read_head(reader, heads)
            writer.write(answer(b'{"second": 1}'))
            await writer.drain()

    async with raw_server(handler) as (url, heads):
        lean = LeanHttp(url)
        task = asyncio.create_task(lean.request("PUT", "/a", {}))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert (await lean.request("PUT", "/a", {})).body == b"{}"  # a new connection's answer
        assert lean.connections_opened == 2
        await lean.aclose()


def test_requests_that_could_smuggle_bytes_are_refused() -> None:
    lean = LeanHttp("http://127.0.0.1:1/prefix")
    assert lean._encode("PUT", "/a?b=1", {"X-MBX-APIKEY": "k"}).startswith(
        b"PUT /prefix/a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n")
    for path, headers in [("/a b", {}), ("/a\r\nX: 1", {}), ("a", {}),
                          ("/a", {"X-MBX-APIKEY": "k\r\nEvil: 1"}), ("/a", {"X:Y": "1"})]:
        with pytest.raises(ValueError):
            lean._encode("PUT", path, headers)
    with pytest.raises(ValueError):
        asyncio.run(lean.request("PATCH", "/a", {}))
    with pytest.raises(ValueError):
        LeanHttp("ws://127.0.0.1:1")


def test_it_is_used_only_where_no_proxy_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                 "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert LeanHttp.usable_for("https://fapi.binance.com")
    assert not LeanHttp.usable_for("ftp://fapi.binance.com")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert not LeanHttp.usable_for("https://fapi.binance.com")  # httpx would use the proxy
    assert LeanHttp.usable_for("http://127.0.0.1:8090")  # no proxy for plain http
    monkeypatch.setenv("ALL_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert LeanHttp.usable_for("http://127.0.0.1:8090")
    assert not LeanHttp.usable_for("http://10.0.0.5:8090")
