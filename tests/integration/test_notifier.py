"""The notifier against a real webhook sink over HTTP, on SQLite and PostgreSQL.

Each test queues rows in a migrated database, runs ``Notifier`` with a real ``httpx`` client
against ``WebhookSink`` served by uvicorn on a free port, and checks what the sink received and
what the outbox rows say afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.clock import Clock, ManualClock, SystemClock
from tradewire.notify.messages import alert_embed, trade_embed
from tradewire.notify.notifier import Notifier
from tradewire.notify.sink import WebhookSink
from tradewire.processor.state import Notice
from tradewire.serving import BackgroundServer
from tradewire.store import outbox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.store.tables import Notification, NotificationStatus

pytestmark = pytest.mark.timeout(20)

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL on each backend (PostgreSQL: a fresh database, dropped afterwards)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tw.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'tw.db'}"


async def migrated(url: str) -> AsyncIterator[Sessions]:
    await upgrade(url)
    engine, maker = create_engine_and_sessions(url)
    try:
        yield maker
    finally:
        await engine.dispose()


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    """Sessions on a migrated database, on each backend."""
    async for maker in migrated(db_url):
        yield maker


@pytest.fixture
async def sqlite_sessions(sqlite_url: str) -> AsyncIterator[Sessions]:
    """Sessions on a migrated SQLite database (behaviour that does not depend on the backend)."""
    async for maker in migrated(sqlite_url):
        yield maker


class Requests:
    """Wall-clock times of the webhook requests the notifier's HTTP client sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str]] = []

    async def record(self, request: httpx.Request) -> None:
        self.sent.append((time.monotonic(), request.url.path))


@pytest.fixture
def requests() -> Requests:
    return Requests()


@pytest.fixture
async def http(requests: Requests) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(event_hooks={"request": [requests.record]}) as client:
        yield client


@pytest.fixture
def sink() -> WebhookSink:
    return WebhookSink()


@pytest.fixture
async def sink_url(sink: WebhookSink) -> AsyncIterator[str]:
    """Base URL of the running sink; webhooks live under ``/hooks/<name>``."""
    async with BackgroundServer(sink.app) as server:
        yield server.base_url


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/nobody"


def entry_filled(n: int = 1) -> dict[str, Any]:
    return trade_embed(Notice.ENTRY_FILLED, {"symbol": "BTCUSDT", "n": n, "price": "60000"})


async def enqueue(sessions: Sessions, url: str, *payloads: dict[str, Any]) -> list[int]:
    async with sessions.begin() as session:
        return [
            await outbox.enqueue_notification(session, user_id=None, webhook_url=url, payload=p)
            for p in payloads
        ]


async def row(sessions: Sessions, notification_id: int) -> Notification:
    async with sessions() as session:
        found = await outbox.get_notification(session, notification_id)
    assert found is not None
    return found


async def counts(sessions: Sessions) -> dict[NotificationStatus, int]:
    async with sessions() as session:
        return await outbox.count_by_status(session)


def notifier(
    sessions: Sessions, http: httpx.AsyncClient, clock: Clock | None = None, **options: Any
) -> Notifier:
    return Notifier(sessions, http, clock or SystemClock(), poll_s=0.05, **options)


# --- delivery ----------------------------------------------------------------------------------


async def test_a_queued_message_is_delivered_once_in_discords_shape(
    sessions: Sessions, http: httpx.AsyncClient, sink: WebhookSink, sink_url: str
) -> None:
    """A queued message reaches its webhook once as a Discord embed body without our internal
    ``tradewire`` key, and its row is SENT."""
    payload = entry_filled()
    [notification_id] = await enqueue(sessions, f"{sink_url}/hooks/alice", payload)
    sender = notifier(sessions, http)

    assert await sender.send_due() == 1
    assert await sender.send_due() == 0

    [body] = sink.for_hook("alice")
    assert body == {"username": "tradewire", "embeds": payload["embeds"]}
    assert sink.titles("alice") == ["Entry filled · BTCUSDT"]
    sent = await row(sessions, notification_id)
    assert (sent.status, sent.attempts, sent.last_error) == (NotificationStatus.SENT, 1, None)
    assert sent.sent_at is not None
    assert sender.sent == 1 and sender.failed == 0


async def test_rate_limited_message_waits_for_retry_after_then_is_delivered(
    sqlite_sessions: Sessions, http: httpx.AsyncClient, requests: Requests
) -> None:
    """A 429 with ``retry_after`` 0.3 s keeps the row PENDING, and the second attempt happens no
    sooner than 0.3 s later and delivers it."""
    sink = WebhookSink(rate_limit_first=1, retry_after_s=0.3)
    async with BackgroundServer(sink.app) as server:
        sessions = sqlite_sessions
        [notification_id] = await enqueue(sessions, f"{server.base_url}/hooks/alice",
                                          entry_filled())
        clock = SystemClock()
        sender = notifier(sessions, http, clock)
        started_ms = clock.now_ms()

        assert await sender.send_due() == 1
        deferred = await row(sessions, notification_id)
        assert deferred.status == NotificationStatus.PENDING
        assert deferred.last_error is not None and "rate limited" in deferred.last_error
        assert started_ms + 300 <= deferred.next_attempt_at <= clock.now_ms() + 300
        assert await sender.send_due() == 0, "not due again before retry_after"

        await sender.drain(timeout_s=5)

    assert sink.rejected == 1 and len(sink.for_hook("alice")) == 1
    (first_at, _), (second_at, _) = requests.sent
    assert second_at - first_at >= 0.3
    sent = await row(sessions, notification_id)
    assert sent.status == NotificationStatus.SENT and sent.attempts == 2
    assert sent.sent_at is not None and sent.sent_at >= deferred.next_attempt_at


async def test_rate_limits_alone_never_exhaust_the_attempts(
    sqlite_sessions: Sessions, http: httpx.AsyncClient
) -> None:
    """A message answered 429 more often than ``max_attempts`` is rescheduled each time after
    ``retry_after`` and delivered once the webhook accepts it."""
    sink = WebhookSink(rate_limit_first=3, retry_after_s=0.3)
    async with BackgroundServer(sink.app) as server:
        sessions = sqlite_sessions
        [notification_id] = await enqueue(sessions, f"{server.base_url}/hooks/alice",
                                          entry_filled())
        clock = ManualClock()
        sender = notifier(sessions, http, clock, max_attempts=2)
        for _ in range(3):
            assert await sender.send_due() == 1
            assert (await row(sessions, notification_id)).status == NotificationStatus.PENDING
            clock.advance(300)
        assert await sender.send_due() == 1

    assert sink.rejected == 3 and len(sink.for_hook("alice")) == 1
    assert (await row(sessions, notification_id)).status == NotificationStatus.SENT


async def test_a_refused_message_fails_at_once_with_the_status(
    sessions: Sessions, http: httpx.AsyncClient, sink: WebhookSink, sink_url: str,
    requests: Requests,
) -> None:
    """A webhook answering 404 marks the row FAILED with the status in ``last_error`` and the
    message is never tried again."""
    [notification_id] = await enqueue(sessions, f"{sink_url}/nohooks/x", entry_filled())
    clock = ManualClock()
    sender = notifier(sessions, http, clock)

    assert await sender.send_due() == 1
    clock.advance(24 * 3600 * 1000)
    assert await sender.send_due() == 0

    failed = await row(sessions, notification_id)
    assert failed.status == NotificationStatus.FAILED and failed.attempts == 1
    assert failed.last_error is not None and "404" in failed.last_error
    assert len(requests.sent) == 1 and sink.messages == []
    assert sender.failed == 1 and sender.sent == 0


async def test_an_unreachable_webhook_backs_off_then_fails_after_max_attempts(
    sessions: Sessions, http: httpx.AsyncClient, requests: Requests
) -> None:
    """Connection failures are retried after 2 s, then 4 s, ... and after ``max_attempts``
    attempts the row is FAILED; no attempt happens before its back-off has passed."""
    [notification_id] = await enqueue(sessions, closed_port_url(), alert_embed("t", "d"))
    clock = ManualClock()
    sender = notifier(sessions, http, clock, max_attempts=3)

    for attempt, backoff_ms in ((1, 2_000), (2, 4_000)):
        assert await sender.send_due() == 1
        pending = await row(sessions, notification_id)
        assert (pending.status, pending.attempts) == (NotificationStatus.PENDING, attempt)
        assert pending.last_error is not None and "unreachable" in pending.last_error
        assert pending.next_attempt_at == clock.now_ms() + backoff_ms
        clock.advance(backoff_ms - 1)
        assert await sender.send_due() == 0, f"attempt {attempt + 1} came before its back-off"
        clock.advance(1)

    assert await sender.send_due() == 1
    failed = await row(sessions, notification_id)
    assert (failed.status, failed.attempts) == (NotificationStatus.FAILED, 3)
    assert failed.last_error is not None and "after 3 attempts" in failed.last_error
    clock.advance(3600 * 1000)
    assert await sender.send_due() == 0
    assert len(requests.sent) == 3 and sender.failed == 1


async def test_two_notifiers_draining_one_outbox_send_each_message_once(
    db_url: str, sink: WebhookSink, sink_url: str
) -> None:
    """Two notifiers (each with its own engine, as in two processes) draining the same outbox
    at the same time deliver every message exactly once."""
    await upgrade(db_url)
    engines = [create_engine_and_sessions(db_url) for _ in range(2)]
    try:
        payloads = [alert_embed(f"alert {n}", "d") for n in range(30)]
        ids = await enqueue(engines[0][1], f"{sink_url}/hooks/ops", *payloads)
        async with httpx.AsyncClient() as http:
            senders = [notifier(maker, http, batch=4) for _, maker in engines]
            await asyncio.gather(*(sender.drain(timeout_s=10) for sender in senders))

        titles = [body["embeds"][0]["title"] for body in sink.for_hook("ops")]
        assert sorted(titles) == sorted(f"alert {n}" for n in range(30))
        assert len(titles) == len(set(titles)) == 30
        assert sum(sender.sent for sender in senders) == 30
        assert all(sender.sent > 0 for sender in senders), "both notifiers took part"
        assert (await counts(engines[0][1]))[NotificationStatus.SENT] == len(ids)
    finally:
        for engine, _ in engines:
            await engine.dispose()


async def test_drain_returns_once_nothing_is_pending(
    sqlite_sessions: Sessions, http: httpx.AsyncClient, sink: WebhookSink, sink_url: str
) -> None:
    """``drain()`` sends every due message, returns once no row is PENDING (FAILED rows do not
    hold it up), and returns at once on an empty outbox."""
    sessions = sqlite_sessions
    sender = notifier(sessions, http, batch=2)
    await asyncio.wait_for(sender.drain(), 1)

    await enqueue(sessions, f"{sink_url}/hooks/bob", *(entry_filled(n) for n in range(5)))
    await enqueue(sessions, f"{sink_url}/nohooks/x", entry_filled(99))
    await sender.drain(timeout_s=5)

    assert [body["embeds"][0]["fields"][0]["value"] for body in sink.for_hook("bob")] == [
        "0", "1", "2", "3", "4"
    ]
    assert await counts(sessions) == {
        NotificationStatus.PENDING: 0, NotificationStatus.SENT: 5, NotificationStatus.FAILED: 1
    }
