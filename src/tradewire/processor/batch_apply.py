"""The worker's batch path: many events (each under its own ``userId:symbol`` lock, gathered by
``processor.batch.MicroBatcher``) applied with a handful of statements.

1. read (one session, four statements, ``store.batch_ops.read_batch``): processed event ids,
   the trades and orders the events' client ids point at, the owners' webhooks;
2. decide each event with the pure state machine; follow up at the exchange concurrently (an
   event whose follow-up fails gets that error alone and is left out of the write, so the bus
   retries it);
3. write (ONE transaction, ``store.batch_ops.write_batch``): processed events, trade and order
   updates, outbox rows. Events whose trade moved since the read are rolled back out of the
   batch and handed to the per-event path, as are events that must wait for another event of
   the same batch (the same event id twice, two events of one trade).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.bus.base import Envelope
from tradewire.domain import DomainEvent
from tradewire.logging import log
from tradewire.notify.messages import trade_embed
from tradewire.processor.effects import (
    OrderLike,
    TradeLike,
    cancelled_orders,
    database,
    notice_fields,
    same_phase,
    trade_columns,
    view,
)
from tradewire.processor.state import Decision, decide
from tradewire.store import batch_ops
from tradewire.store.batch_ops import ItemWrite, OrderRow, Snapshot, TradeChange, TradeRow
from tradewire.store.tables import OrderStatus
from tradewire.store.types import wall_clock_ms

logger = logging.getLogger("tradewire.worker")

_WRITE_ROUNDS = 3  # a batch shrinks by its moved events at most this often before giving up


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Item:
    envelope: Envelope
    event: DomainEvent


@dataclass
class _Prepared:
    index: int
    write: ItemWrite
    trade: TradeRow | None = None
    order: OrderRow | None = None
    decision: Decision | None = None


class _Moved(Exception):
    def __init__(self, event_ids: set[str]) -> None:
        super().__init__(f"{len(event_ids)} trades changed concurrently")
        self.event_ids = event_ids


FollowUp = Callable[[TradeLike, OrderLike | None, Decision], Awaitable[None]]
Fallback = Callable[[Envelope, DomainEvent], Awaitable[Outcome]]


class BatchApplier:
    """``MicroBatcher``'s apply function: ``await applier(items)`` → one outcome per item."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], follow_up: FollowUp,
                 fallback: Fallback) -> None:
        self.sessions, self.follow_up, self.fallback = sessions, follow_up, fallback
        self.fallbacks = 0  # events handed to the per-event path (statistics, tests)

    async def __call__(self, items: list[Item]) -> Sequence[Outcome | BaseException]:
        results: list[Outcome | BaseException | None] = [None] * len(items)
        snapshot = await self._read(items)
        ready, later = self._prepare(items, snapshot, results)
        ready = await self._follow_ups(ready, results)
        later += await self._write(ready, results)
        for index in sorted(later):
            self.fallbacks += 1
            item = items[index]
            try:
                results[index] = await self.fallback(item.envelope, item.event)
            except Exception as exc:
                results[index] = exc
        log(logger, logging.DEBUG, "batch applied", size=len(items), fallbacks=len(later))
        return [r if r is not None else RuntimeError("event left unresolved") for r in results]

    async def _read(self, items: list[Item]) -> Snapshot:
        with database():
            async with self.sessions() as session:
                return await batch_ops.read_batch(
                    session, {i.event.event_id for i in items},
                    {i.event.client_id for i in items if i.event.client_id},
                    {i.envelope.user_id for i in items},
                )

    def _prepare(
        self, items: list[Item], snapshot: Snapshot, results: list[Outcome | BaseException | None]
    ) -> tuple[list[_Prepared], list[int]]:
        ready: list[_Prepared] = []
        later: list[int] = []
        seen: set[str] = set()
        touched: set[int] = set()
        for index, item in enumerate(items):
            event_id = item.event.event_id
            if event_id in snapshot.processed:
                results[index] = Outcome.DUPLICATE
                continue
            prepared = _plan(index, item, snapshot)
            trade_id = prepared.trade.id if prepared.trade is not None else None
            if event_id in seen or (trade_id is not None and trade_id in touched):
                later.append(index)  # after this batch commits, on the per-event path
                continue
            seen.add(event_id)
            if trade_id is not None:
                touched.add(trade_id)
            ready.append(prepared)
        return ready, later

    async def _follow_ups(
        self, ready: list[_Prepared], results: list[Outcome | BaseException | None]
    ) -> list[_Prepared]:
        needed = [p for p in ready if p.decision is not None and p.decision.cancel_legs]
        if not needed:
            return ready
        outcomes = await asyncio.gather(
            *(self.follow_up(p.trade, p.order, p.decision) for p in needed
              if p.trade is not None and p.decision is not None),
            return_exceptions=True,
        )
        failed: set[int] = set()
        for prepared, outcome in zip(needed, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                results[prepared.index] = outcome
                failed.add(prepared.index)
        return [p for p in ready if p.index not in failed]

    async def _write(
        self, ready: list[_Prepared], results: list[Outcome | BaseException | None]
    ) -> list[int]:
        """Write ``ready`` in one transaction; returns the indexes left for the per-event path
        (their trade moved since the read)."""
        later: list[int] = []
        for _ in range(_WRITE_ROUNDS):
            if not ready:
                return later
            try:
                with database():
                    async with self.sessions.begin() as session:
                        written = await batch_ops.write_batch(
                            session, [p.write for p in ready], wall_clock_ms())
                        if written.missed:
                            raise _Moved(written.missed)
            except _Moved as moved:
                later += [p.index for p in ready if p.write.event_id in moved.event_ids]
                ready = [p for p in ready if p.write.event_id not in moved.event_ids]
                continue
            logs = logger.isEnabledFor(logging.INFO)
            for p in ready:
                duplicate = p.write.event_id in written.duplicates
                results[p.index] = Outcome.DUPLICATE if duplicate else Outcome.APPLIED
                if logs and not duplicate:
                    _log_applied(p)
            return later
        return later + [p.index for p in ready]


def _log_applied(p: _Prepared) -> None:
    """The per-event path's "trade updated" line, for events that changed a trade."""
    if p.trade is None or p.decision is None or not p.decision.changed:
        return
    status = next((c.values.get("status") for c in p.write.trades), None) or p.trade.status
    # the batch runs in a context of its own (nothing bound): the per-event path's bound
    # fields are passed as plain fields, same line, without a contextvars copy per event
    trade = p.trade
    log(logger, logging.INFO, "trade updated", userId=trade.user_id, symbol=trade.symbol,
        tradeId=trade.id, event=p.write.kind, status=str(status))


def _plan(index: int, item: Item, snapshot: Snapshot) -> _Prepared:
    """What one event writes, decided on the snapshot."""
    event = item.event
    write = ItemWrite(event.event_id, event.account_id, event.kind.value)
    order = snapshot.orders.get(event.client_id or "")
    trade = snapshot.trades.get(order.trade_id) if order is not None else None
    if order is None or trade is None:
        return _Prepared(index, write)  # not one of ours: recorded as processed, nothing else
    decision = decide(view(trade), order.leg, event)
    prepared = _Prepared(index, write, trade, order, decision)
    if not decision.changed:
        return prepared
    updates = trade_columns(trade, decision.trade_updates)
    if updates:
        write.trades.append(TradeChange(trade.id, tuple(same_phase(trade)), updates))
    if decision.order_status:
        write.orders.append((order.id, decision.order_status))
    write.orders += [(order_id, OrderStatus.CANCELED)
                     for order_id in cancelled_orders(trade, decision)]
    webhook = snapshot.webhooks.get(item.envelope.user_id)
    if decision.notice is not None and webhook:
        payload = trade_embed(decision.notice, notice_fields(trade, updates))
        write.notifications.append((item.envelope.user_id, webhook, payload))
    return prepared
