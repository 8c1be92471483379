"""The DLQ monitor's rules (error log, red alert, no repeats) on the embedded bus, a SQLite
outbox and a manual clock."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.bus.alerts import DlqMonitor
from tradewire.bus.base import DeadLetter
from tradewire.bus.embedded import EmbeddedBus
from tradewire.clock import ManualClock
from tradewire.notify.messages import RED
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.store.tables import Notification

HOOK = "https://discord.test/api/webhooks/ops"
MINUTE_MS = 60_000


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tw.db'}"
    await upgrade(url)
    engine, maker = create_engine_and_sessions(url)
    yield maker
    await engine.dispose()


async def grow(bus: EmbeddedBus, n: int) -> None:
    """Add ``n`` dead letters."""
    for i in range(n):
        await bus.publish_raw(0, b"{}")
        [message] = await bus.fetch("c", 1, 10)
        await bus.dead_letter(message, DeadLetter(
            id="", original_id=message.id, partition=0, body=b"{}", attempts=3,
            error=f"database is locked #{i}", error_type="OperationalError",
            first_failed_ms=1, last_failed_ms=2,
        ))


async def alerts(sessions: async_sessionmaker[AsyncSession]) -> list[Notification]:
    async with sessions() as session:
        return list(await session.scalars(select(Notification).order_by(Notification.id)))


@pytest.fixture
def world(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[EmbeddedBus, ManualClock, DlqMonitor]:
    bus, clock = EmbeddedBus(2), ManualClock()
    return bus, clock, DlqMonitor(bus, sessions, clock, webhook_url=HOOK)


async def test_an_empty_dlq_is_quiet(
    world: tuple[EmbeddedBus, ManualClock, DlqMonitor], caplog: pytest.LogCaptureFixture,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Size 0 writes no error line and queues no alert."""
    _, _, monitor = world
    with caplog.at_level(logging.ERROR, logger="tradewire.dlq"):
        result = await monitor.check()
    assert (result.size, result.logged, result.alerted) == (0, False, False)
    assert not caplog.records and await alerts(sessions) == []


async def test_below_ten_logs_an_error_with_the_oldest_error_but_does_not_alert(
    world: tuple[EmbeddedBus, ManualClock, DlqMonitor], caplog: pytest.LogCaptureFixture,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Size 1..9 writes an ERROR line carrying the size and the oldest entry's error only."""
    bus, _, monitor = world
    await grow(bus, 9)
    with caplog.at_level(logging.ERROR, logger="tradewire.dlq"):
        result = await monitor.check()
    assert (result.size, result.logged, result.alerted) == (9, True, False)
    [record] = caplog.records
    fields = record.__dict__["fields"]
    assert record.levelno == logging.ERROR
    assert fields["dlqSize"] == 9 and "database is locked #0" in fields["error"]
    assert await alerts(sessions) == []


async def test_a_steady_backlog_alerts_once_then_on_growth_then_after_the_cooldown(
    world: tuple[EmbeddedBus, ManualClock, DlqMonitor],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Size >= 10 queues one red operator alert; the same backlog checked every 5 minutes does
    not repeat it; growth alerts again; so does the same backlog after the cool-down."""
    bus, clock, monitor = world
    await grow(bus, 10)
    assert (await monitor.check()).reason == "new"
    [first] = await alerts(sessions)
    body = json.loads(first.payload)
    assert first.user_id is None and first.webhook_url == HOOK
    assert body["embeds"][0]["title"] == "DLQ backlog" and body["embeds"][0]["color"] == RED
    assert "10 messages" in body["embeds"][0]["description"]
    for _ in range(3):
        clock.advance(5 * MINUTE_MS)
        assert not (await monitor.check()).alerted
    await grow(bus, 2)
    clock.advance(5 * MINUTE_MS)
    assert (await monitor.check()).reason == "growth"
    assert "12 messages" in json.loads((await alerts(sessions))[-1].payload)["embeds"][0][
        "description"]
    clock.advance(55 * MINUTE_MS)
    assert not (await monitor.check()).alerted
    clock.advance(5 * MINUTE_MS)
    assert (await monitor.check()).reason == "cooldown"
    assert len(await alerts(sessions)) == 3 and monitor.alerts == 3


async def test_a_backlog_that_was_cleared_alerts_afresh(
    world: tuple[EmbeddedBus, ManualClock, DlqMonitor],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Once the DLQ fell below the threshold, a new backlog of the same size alerts again."""
    bus, clock, monitor = world
    await grow(bus, 10)
    assert (await monitor.check()).alerted
    await bus.dlq_delete([x.id for x in await bus.dlq_list()])
    assert (await monitor.check()).size == 0
    await grow(bus, 10)
    clock.advance(5 * MINUTE_MS)
    assert (await monitor.check()).reason == "new"
    assert len(await alerts(sessions)) == 2


async def test_without_a_webhook_the_alert_is_only_logged(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture,
) -> None:
    """With no alert webhook configured nothing is queued and a warning says why."""
    bus = EmbeddedBus(1)
    monitor = DlqMonitor(bus, sessions, ManualClock(), webhook_url="", alert_at=2)
    await grow(bus, 2)
    with caplog.at_level(logging.WARNING, logger="tradewire.dlq"):
        assert not (await monitor.check()).alerted
    assert any("no alert webhook" in r.getMessage() for r in caplog.records)
    assert await alerts(sessions) == []
