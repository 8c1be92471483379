"""Signal intake ledger: the caller's ``signal_id`` is accepted at most once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tradewire.store._sql import insert_ignoring_conflicts, to_json
from tradewire.store.tables import SignalRecord, SignalStatus
from tradewire.store.types import now_ms


async def record_signal(
    session: AsyncSession,
    signal_id: str,
    symbol: str,
    side: str,
    payload: Mapping[str, Any] | str,
    *,
    status: SignalStatus = SignalStatus.ACCEPTED,
    now: int | None = None,
) -> bool:
    """Store a received signal; False (and nothing written) when ``signal_id`` is already
    known. The surrounding transaction stays usable either way."""
    statement = insert_ignoring_conflicts(
        session, SignalRecord, signal_id=signal_id, symbol=symbol, side=side,
        payload=to_json(payload), status=status, created_at=now_ms(now),
    ).returning(SignalRecord.id)
    return await session.scalar(statement) is not None


async def get_signal(session: AsyncSession, signal_id: str) -> SignalRecord | None:
    """The stored signal with the caller's id, if any."""
    return await session.scalar(select(SignalRecord).where(SignalRecord.signal_id == signal_id))
