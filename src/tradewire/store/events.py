"""Processed-event ledger: exactly-once effects under at-least-once delivery.

The worker calls ``mark_processed`` first, in the same transaction as the state change and the
outbox rows; on False it skips the effects (a duplicate), and a rollback forgets the mark so
a redelivery is processed again.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tradewire.store._sql import insert_ignoring_conflicts
from tradewire.store.tables import ProcessedEvent
from tradewire.store.types import now_ms


async def mark_processed(
    session: AsyncSession, event_id: str, account_id: int, kind: str, *, now: int | None = None
) -> bool:
    """True the first time ``event_id`` is marked, False for a duplicate; never aborts the
    transaction. On PostgreSQL a concurrent transaction marking the same id waits for this one
    and then gets False (or True if this one rolled back)."""
    statement = insert_ignoring_conflicts(
        session, ProcessedEvent, event_id=event_id, account_id=account_id, kind=str(kind),
        processed_at=now_ms(now),
    ).returning(ProcessedEvent.event_id)
    return await session.scalar(statement) is not None


async def is_processed(session: AsyncSession, event_id: str) -> bool:
    found = await session.scalar(
        select(ProcessedEvent.event_id).where(ProcessedEvent.event_id == event_id)
    )
    return found is not None
