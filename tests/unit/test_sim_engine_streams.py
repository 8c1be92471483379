"""The simulator's edges without a network: socket fan-out, control messages, signing, limits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest

from tradewire.simulator.core import Delivery
from tradewire.simulator.errors import SimError
from tradewire.simulator.gateway import check_timestamp, split_signature, verify_signature
from tradewire.simulator.hub import Hub, Session
from tradewire.simulator.limits import LimitConfig, Limits
from tradewire.simulator.streams import Control, parse_subscriptions


class FakeSocket:
    """Records what is sent; ``gate`` (when set) blocks every send until opened."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.sent: list[str] = []
        self.closed: int | None = None
        self.gate = gate

    async def send_text(self, data: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed = code


def event(name: str, n: int = 0) -> dict[str, object]:
    return {"e": name, "E": n}


async def test_slow_socket_does_not_block_others() -> None:
    """Each socket drains its own queue: a stuck peer delays only itself, order is kept."""
    hub = Hub()
    gate = asyncio.Event()
    slow, fast = FakeSocket(gate), FakeSocket()
    sessions = [Session(slow, combined=False), Session(fast, combined=False)]
    for session in sessions:
        hub.add(session)
        hub.subscribe(session, "k1")
    senders = [asyncio.create_task(s.send_loop()) for s in sessions]
    hub.dispatch([Delivery("acct", "k1", event("ORDER_TRADE_UPDATE", i)) for i in range(3)])
    for _ in range(5):
        await asyncio.sleep(0)
    assert [json.loads(m)["E"] for m in fast.sent] == [0, 1, 2]
    assert slow.sent == []
    gate.set()
    for session in sessions:
        session.close(1000, drop_pending=False)
    await asyncio.gather(*senders)
    assert [json.loads(m)["E"] for m in slow.sent] == [0, 1, 2]


async def test_combined_sessions_wrap_and_filters_apply() -> None:
    """Combined sockets get {"stream","data"}; an events filter passes only the named events
    (listenKeyExpired always); deliveries without a live key go nowhere."""
    hub = Hub()
    socket = FakeSocket()
    session = Session(socket, combined=True)
    hub.add(session)
    hub.subscribe(session, "k1", frozenset({"ORDER_TRADE_UPDATE"}))
    hub.dispatch([
        Delivery("a", "k1", event("ACCOUNT_UPDATE")),
        Delivery("a", "k1", event("ORDER_TRADE_UPDATE")),
        Delivery("a", None, event("ORDER_TRADE_UPDATE")),
        Delivery("a", "k2", event("ORDER_TRADE_UPDATE")),
        Delivery("a", "k1", event("listenKeyExpired")),
    ])
    session.close(1000, drop_pending=False)
    await session.send_loop()
    assert [json.loads(m) for m in socket.sent] == [
        {"stream": "k1", "data": event("ORDER_TRADE_UPDATE")},
        {"stream": "k1", "data": event("listenKeyExpired")},
    ]


async def test_overflowing_queue_closes_the_socket() -> None:
    """A consumer too slow to keep up is disconnected rather than buffering forever."""
    hub = Hub()
    socket = FakeSocket()
    session = Session(socket, combined=False, max_queue=2)
    hub.add(session)
    hub.subscribe(session, "k")
    hub.dispatch([Delivery("a", "k", event("X", i)) for i in range(5)])
    await session.send_loop()
    assert (socket.sent, socket.closed) == ([], 1008)


async def test_drop_closes_only_the_chosen_keys() -> None:
    """drop(keys) closes the sessions subscribed to those keys; drop() closes all."""
    hub = Hub()
    one, two = Session(FakeSocket(), combined=False), Session(FakeSocket(), combined=False)
    for session, key in ((one, "k1"), (two, "k2")):
        hub.add(session)
        hub.subscribe(session, key)
    assert hub.drop({"k1"}) == 1
    assert (one.closing, two.closing) == (True, False)
    assert hub.drop() == 2


def test_stream_query_pairs_listen_keys_with_their_events() -> None:
    """Repeated listenKey/events pairs: each events list belongs to the key before it."""
    query = b"listenKey=k1&events=ORDER_TRADE_UPDATE/ACCOUNT_UPDATE&listenKey=k2"
    assert parse_subscriptions(query) == [
        ("k1", frozenset({"ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"})), ("k2", None)]


def test_control_messages() -> None:
    """SUBSCRIBE/UNSUBSCRIBE answer result null, LIST the keys; bad input answers an error."""
    hub = Hub()
    session = Session(FakeSocket(), combined=True)
    control = Control(hub, session)
    subscribe = json.dumps({"method": "SUBSCRIBE", "params": ["k1", "k2"], "id": 1})
    assert control.handle(subscribe) == {"result": None, "id": 1}
    assert control.handle('{"method":"LIST_SUBSCRIPTIONS","id":2}') == {
        "result": ["k1", "k2"], "id": 2}
    unsubscribe = json.dumps({"method": "UNSUBSCRIBE", "params": ["k1"], "id": 3})
    assert control.handle(unsubscribe) == {"result": None, "id": 3}
    assert control.handle('{"method":"LIST_SUBSCRIPTIONS","id":4}')["result"] == ["k2"]
    assert control.handle("not json")["code"] == 3
    assert control.handle('{"method":"SUBSCRIBE","params":[],"id":-1}')["code"] == 2


def test_signature_may_end_the_body_or_the_query() -> None:
    """The signed payload is query + body without the trailing signature parameter."""
    assert split_signature(b"a=1", b"b=2&signature=ff") == (b"a=1b=2", "ff")
    assert split_signature(b"a=1&signature=ee", b"") == (b"a=1", "ee")
    assert split_signature(b"a=1", b"b=2") is None


def test_signature_is_hex_hmac_sha256_case_insensitive() -> None:
    """Upper-case hex is accepted; a missing signature is -1102."""
    payload = b"symbol=BTCUSDT&timestamp=1"
    digest = hmac.new(b"secret", payload, hashlib.sha256).hexdigest().upper()
    verify_signature("secret", payload + b"&signature=" + digest.encode(), b"", {})
    with pytest.raises(SimError) as excinfo:
        verify_signature("secret", payload, b"", {})
    assert excinfo.value.code == -1102


def test_missing_timestamp_is_1102() -> None:
    with pytest.raises(SimError) as excinfo:
        check_timestamp({}, 1000)
    assert excinfo.value.code == -1102


def test_weight_and_order_limits() -> None:
    """Weight over the minute budget is 429 -1003; orders over 10 s budget 429 -1015;
    counters reset with the next window."""
    limits = Limits(LimitConfig(ip_weight_per_minute=10, orders_per_10s=2))
    assert limits.charge_weight("ip", 10, 0) == 10
    with pytest.raises(SimError) as weight:
        limits.charge_weight("ip", 1, 59_999)
    assert (weight.value.http_status, weight.value.code) == (429, -1003)
    assert limits.charge_weight("ip", 1, 60_000) == 1
    assert limits.charge_order("acct", 0) == (1, 1)
    limits.charge_order("acct", 1)
    with pytest.raises(SimError) as orders:
        limits.charge_order("acct", 2)
    assert (orders.value.http_status, orders.value.code) == (429, -1015)
    assert limits.charge_order("acct", 10_000)[0] == 1
