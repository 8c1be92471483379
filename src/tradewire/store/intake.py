"""The intake ledger (``intake_messages``). The caller owns the transaction.

A message is stored once per (source, channel, message_id): ``insert_message`` is an
``INSERT … ON CONFLICT DO NOTHING`` and answers None for a key already known, leaving the
transaction usable. Status changes are conditional (``only_from``) so that two operators, or an
operator and an edit, cannot both move the same message.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tradewire.store._sql import insert_ignoring_conflicts
from tradewire.store.tables import IntakeMessage, IntakeStatus
from tradewire.store.types import now_ms

MAX_LIST_LIMIT = 1000

ACCEPTED = (
    IntakeStatus.PENDING_CONFIRMATION,
    IntakeStatus.EXECUTING,
    IntakeStatus.EXECUTED,
    IntakeStatus.FAILED,
)
"""Statuses of signals that went through every check: they count for the rate limit and
make later copies of the same content duplicates."""


async def insert_message(
    session: AsyncSession, *, now: int | None = None, **values: Any
) -> int | None:
    """Store a new message; its id, or None (nothing written) when its key is already known."""
    stamp = now_ms(now)
    statement = insert_ignoring_conflicts(
        session, IntakeMessage, created_at=stamp, updated_at=stamp, **values
    ).returning(IntakeMessage.id)
    found: int | None = await session.scalar(statement)
    return found


async def get_message(session: AsyncSession, intake_id: int) -> IntakeMessage | None:
    return await session.get(IntakeMessage, intake_id)


async def get_by_key(
    session: AsyncSession, source: str, channel: str, message_id: str
) -> IntakeMessage | None:
    """The stored message with this identity, if any."""
    return await session.scalar(
        select(IntakeMessage).where(
            IntakeMessage.source == source,
            IntakeMessage.channel == channel,
            IntakeMessage.message_id == message_id,
        )
    )


async def find_same_content(
    session: AsyncSession,
    source: str,
    channel: str,
    content_hash: str,
    since_ms: int,
    *,
    exclude_id: int | None = None,
) -> IntakeMessage | None:
    """The earliest accepted message of the channel with this content hash received at or
    after ``since_ms`` (other than ``exclude_id``)."""
    statement = (
        select(IntakeMessage)
        .where(
            IntakeMessage.source == source,
            IntakeMessage.channel == channel,
            IntakeMessage.received_at_ms >= since_ms,
            IntakeMessage.content_hash == content_hash,
            IntakeMessage.status.in_(ACCEPTED),
        )
        .order_by(IntakeMessage.id)
        .limit(1)
    )
    if exclude_id is not None:
        statement = statement.where(IntakeMessage.id != exclude_id)
    return await session.scalar(statement)


async def count_accepted_since(
    session: AsyncSession,
    source: str,
    channel: str,
    since_ms: int,
    *,
    exclude_id: int | None = None,
) -> int:
    """How many signals of the channel received at or after ``since_ms`` passed every check."""
    statement = select(func.count(IntakeMessage.id)).where(
        IntakeMessage.source == source,
        IntakeMessage.channel == channel,
        IntakeMessage.received_at_ms >= since_ms,
        IntakeMessage.status.in_(ACCEPTED),
    )
    if exclude_id is not None:
        statement = statement.where(IntakeMessage.id != exclude_id)
    return int(await session.scalar(statement) or 0)


async def update_message(
    session: AsyncSession,
    intake_id: int,
    *,
    only_from: Collection[IntakeStatus] | None = None,
    now: int | None = None,
    **changes: Any,
) -> bool:
    """Set ``changes`` (column=value; None values are written) and ``updated_at``; with
    ``only_from``, only if the status is one of those. True if the row was updated."""
    statement = update(IntakeMessage).where(IntakeMessage.id == intake_id)
    if only_from is not None:
        statement = statement.where(IntakeMessage.status.in_(list(only_from)))
    statement = statement.values(**changes, updated_at=now_ms(now)).returning(IntakeMessage.id)
    return await session.scalar(statement) is not None


async def list_messages(
    session: AsyncSession, *, status: IntakeStatus | None = None, limit: int = 100
) -> list[IntakeMessage]:
    """Messages, newest first, optionally of one status."""
    statement = select(IntakeMessage).order_by(IntakeMessage.id.desc())
    if status is not None:
        statement = statement.where(IntakeMessage.status == status)
    rows = await session.scalars(statement.limit(max(1, min(limit, MAX_LIST_LIMIT))))
    return list(rows)
