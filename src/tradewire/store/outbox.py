"""Notification outbox: rows written with the state change, delivered later by the notifier.

Claiming takes a lease: ``claim_due`` moves the claimed rows' ``next_attempt_at`` to
``now + lease_ms`` and counts the attempt, so the notifier can commit the claim at once and send
outside any transaction. Another notifier cannot claim those rows until the lease runs out (a
notifier that died mid-send is retried then). On PostgreSQL the candidate rows are selected with
``FOR UPDATE SKIP LOCKED`` so concurrent claimers neither block nor share rows; on SQLite the
database lock serialises writers, and the conditional update makes a stale candidate list harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tradewire.store._sql import dialect_name, to_json
from tradewire.store.tables import Notification, NotificationStatus
from tradewire.store.types import now_ms

DEFAULT_LEASE_MS = 60_000
DUE_NOW = 0
MAX_ERROR_LENGTH = 2_000


async def enqueue_notification(
    session: AsyncSession,
    *,
    user_id: int | None,
    webhook_url: str,
    payload: Mapping[str, Any],
    not_before: int | None = None,
    now: int | None = None,
) -> int:
    """Queue a webhook message (``user_id`` None: an operator alert); returns its id.
    Without ``not_before`` the row is due at once whatever the notifier's clock says
    (``next_attempt_at`` 0)."""
    row = Notification(
        user_id=user_id, webhook_url=webhook_url, payload=to_json(payload),
        status=NotificationStatus.PENDING, attempts=0, created_at=now_ms(now),
        next_attempt_at=DUE_NOW if not_before is None else not_before,
    )
    session.add(row)
    await session.flush()
    return row.id


async def claim_due(
    session: AsyncSession, now: int, limit: int, *, lease_ms: int = DEFAULT_LEASE_MS
) -> list[Notification]:
    """Up to ``limit`` pending rows due at ``now`` (epoch ms), oldest first, leased to the caller
    for ``lease_ms`` with ``attempts`` incremented. Commit soon after claiming."""
    candidates = (
        select(Notification.id)
        .where(Notification.status == NotificationStatus.PENDING)
        .where(Notification.next_attempt_at <= now)
        .order_by(Notification.next_attempt_at, Notification.id)
        .limit(limit)
    )
    if dialect_name(session) == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(await session.scalars(candidates))
    if not ids:
        return []
    claimed = await session.scalars(
        update(Notification)
        .where(Notification.id.in_(ids))
        .where(Notification.status == NotificationStatus.PENDING)
        .where(Notification.next_attempt_at <= now)
        .values(next_attempt_at=now + lease_ms, attempts=Notification.attempts + 1)
        .returning(Notification),
        execution_options={"populate_existing": True},
    )
    position = {row_id: index for index, row_id in enumerate(ids)}
    return sorted(claimed, key=lambda row: position[row.id])


async def mark_sent(session: AsyncSession, notification_id: int, now: int) -> None:
    await _set(session, notification_id, status=NotificationStatus.SENT, sent_at=now)


async def mark_retry(
    session: AsyncSession, notification_id: int, error: str, next_attempt_at: int
) -> None:
    """Keep the row pending and try again at ``next_attempt_at``."""
    await _set(
        session, notification_id, status=NotificationStatus.PENDING,
        last_error=error[:MAX_ERROR_LENGTH], next_attempt_at=next_attempt_at,
    )


async def mark_failed(session: AsyncSession, notification_id: int, error: str) -> None:
    """Give up on the row (it stays for inspection)."""
    await _set(
        session, notification_id, status=NotificationStatus.FAILED,
        last_error=error[:MAX_ERROR_LENGTH],
    )


async def count_by_status(session: AsyncSession) -> dict[NotificationStatus, int]:
    """Row count per status, every status present (zero included)."""
    counts = dict.fromkeys(NotificationStatus, 0)
    rows = await session.execute(
        select(Notification.status, func.count()).group_by(Notification.status)
    )
    for status, count in rows:
        counts[status] = count
    return counts


async def get_notification(session: AsyncSession, notification_id: int) -> Notification | None:
    return await session.get(Notification, notification_id)


async def _set(session: AsyncSession, notification_id: int, **values: Any) -> None:
    await session.execute(
        update(Notification).where(Notification.id == notification_id).values(**values)
    )
