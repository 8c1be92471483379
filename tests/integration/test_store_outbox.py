"""The notification outbox on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.store import outbox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.store.tables import NotificationStatus

Sessions = async_sessionmaker[AsyncSession]
HOOK = "https://discord.test/api/webhooks/1/abc"
NOW = 1_800_000_000_000


async def _enqueue(sessions: Sessions, count: int, **options: int) -> list[int]:
    async with sessions.begin() as session:
        return [
            await outbox.enqueue_notification(
                session, user_id=None, webhook_url=HOOK, payload={"n": n, "pnl": Decimal("1.5")},
                **options,
            )
            for n in range(count)
        ]


async def _claim(sessions: Sessions, now: int, limit: int = 10) -> list[int]:
    async with sessions.begin() as session:
        return [row.id for row in await outbox.claim_due(session, now, limit)]


async def test_claimed_rows_are_leased_and_counted(sessions: Sessions) -> None:
    """A claim returns due rows oldest first with the attempt counted, and hides them from
    other claimers until the lease runs out."""
    ids = await _enqueue(sessions, 3)
    later = await _enqueue(sessions, 1, not_before=NOW + 5_000)
    async with sessions.begin() as session:
        claimed = await outbox.claim_due(session, NOW, 2, lease_ms=30_000)
    assert [row.id for row in claimed] == ids[:2]
    assert [row.attempts for row in claimed] == [1, 1]
    assert json.loads(claimed[0].payload) == {"n": 0, "pnl": "1.5"}
    assert claimed[0].webhook_url == HOOK and claimed[0].user_id is None
    assert await _claim(sessions, NOW) == [ids[2]]
    assert await _claim(sessions, NOW + 5_000) == later
    assert await _claim(sessions, NOW + 29_999) == []
    assert await _claim(sessions, NOW + 30_000) == ids[:2]  # their lease ran out: retried
    async with sessions() as session:
        row = await outbox.get_notification(session, ids[0])
    assert row is not None and row.attempts == 2


async def test_sent_retry_and_failed_rows(sessions: Sessions) -> None:
    """Sent and failed rows are never claimed again; a retried row is due at its new time."""
    sent, retried, failed = await _enqueue(sessions, 3)
    assert await _claim(sessions, NOW) == [sent, retried, failed]
    async with sessions.begin() as session:
        await outbox.mark_sent(session, sent, NOW + 10)
        await outbox.mark_retry(session, retried, "429 retry_after 2.5", NOW + 2_500)
        await outbox.mark_failed(session, failed, "404 unknown webhook")
    assert await _claim(sessions, NOW + 2_499) == []
    assert await _claim(sessions, NOW + 2_500) == [retried]
    async with sessions() as session:
        counts = await outbox.count_by_status(session)
        row = await outbox.get_notification(session, sent)
        gone = await outbox.get_notification(session, failed)
    assert counts == {
        NotificationStatus.PENDING: 1, NotificationStatus.SENT: 1, NotificationStatus.FAILED: 1
    }
    assert row is not None and (row.status, row.sent_at) == (NotificationStatus.SENT, NOW + 10)
    assert gone is not None and gone.last_error == "404 unknown webhook"


async def test_counts_include_every_status(sessions: Sessions) -> None:
    """An empty outbox reports zero for each status."""
    async with sessions() as session:
        assert await outbox.count_by_status(session) == dict.fromkeys(NotificationStatus, 0)


@pytest.mark.postgres
async def test_concurrent_claimers_never_share_a_row(postgres_url: str) -> None:
    """Claimers holding their transactions open skip each other's rows (SKIP LOCKED), and many
    claimers racing to drain the outbox deliver each row exactly once."""
    await upgrade(postgres_url)
    engine, sessions = create_engine_and_sessions(postgres_url, pool_size=10)
    try:
        ids = await _enqueue(sessions, 40)
        async with sessions.begin() as first, sessions.begin() as second:
            mine = [row.id for row in await outbox.claim_due(first, NOW, 5)]
            theirs = [row.id for row in await outbox.claim_due(second, NOW, 5)]
        assert mine == ids[:5] and theirs == ids[5:10]

        async def drain() -> list[int]:
            got: list[int] = []
            while batch := await _claim(sessions, NOW, 3):
                got += batch
            return got

        results = await asyncio.gather(*(drain() for _ in range(6)))
        everything = [row_id for result in results for row_id in result]
        assert sorted(everything) == ids[10:]
    finally:
        await engine.dispose()
