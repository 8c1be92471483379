"""The event processor (Layer 3): normalise → decide → follow up at the exchange → record.

One event is handled under the ``userId:symbol`` lock in three steps:

1. read (one short transaction): skip a duplicate event id, find our order by client id, and
   let the pure state machine (``processor.state.decide``) say what the event changes;
2. follow up at the exchange outside any transaction: cancel the sibling order (idempotent —
   an order already gone counts as cancelled);
3. write (one transaction): the processed event id (unique), the trade and order changes
   (conditional on the state read in step 1) and the user's notification in the outbox.

A failure anywhere raises, so the bus retries the whole event; steps 2 and 3 are safe to repeat,
and once step 3 commits the event id makes any redelivery a no-op.

The consumer's batch path calls ``handle_many`` with the heads of its lanes (at most one event
per key): their locks are taken at once (``Locks.hold_free``), and the events whose lock was
free are applied together by the batch path below; each event gets its own answer (None, its
own error classified as below, or ``Deferred`` — its lock was busy, or it is a liquidation —
for the consumer to run it through ``handle``).

By default ``handle`` sends events the batch path too (``processor.batch_apply``): each event,
under its lock, joins a micro-batch (``processor.batch.MicroBatcher``, up to ``batch_max`` events or
``batch_wait_s``) that does steps 1-3 for all of them with one read and ONE write transaction.
Liquidations, and events the batch cannot apply safely (their trade moved since the read, two
events of one trade in one batch), take the per-event path below. ``batch_max=0`` turns
batching off.

Errors are classified for the consumer (``tradewire.bus.consumer``): a malformed event or one
the exchange's wire schema rejects is a ``PermanentError`` (DLQ at once); a database that cannot
be reached (connection refused or lost: ``OSError``, asyncpg connection errors, SQLAlchemy
``OperationalError``/``InterfaceError`` or a ``DBAPIError`` that invalidated its connection) is
re-raised as ``DependencyDown`` (the consumer pauses, no attempt spent); exchange unavailability
(``ExchangeUnavailable``, ``UnknownOutcome``, ``RateLimited``) becomes a ``TransientError``
(retried, then DLQ).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire import names
from tradewire.bus.base import Envelope
from tradewire.bus.batch_lanes import Deferred
from tradewire.domain import DomainEvent, EventKind, Leg, TradeStatus
from tradewire.errors import (
    ExchangeUnavailable,
    RateLimited,
    TransientError,
    UnknownOrder,
    UnknownOutcome,
)
from tradewire.locks.base import Locks
from tradewire.logging import bind, log
from tradewire.notify.messages import trade_embed
from tradewire.processor.batch import MicroBatcher
from tradewire.processor.batch_apply import BatchApplier, Item, Outcome
from tradewire.processor.effects import DONE_ORDER as _DONE_ORDER
from tradewire.processor.effects import (
    OrderLike,
    TradeLike,
    notice_fields,
    same_phase,
    trade_columns,
    view,
)
from tradewire.processor.effects import database as _database
from tradewire.processor.normalize import normalize
from tradewire.processor.state import Decision, decide
from tradewire.store import events, outbox, trades, users
from tradewire.store.crypto import SecretBox
from tradewire.store.tables import Order, OrderStatus, Trade
from tradewire.trading.clients import ClientPool

logger = logging.getLogger("tradewire.worker")

_SKIP = (EventKind.IGNORED, EventKind.ACCOUNT_UPDATED)
DEFAULT_BATCH_MAX = 256
DEFAULT_BATCH_WAIT_S = 0.002


@dataclass
class _Plan:
    trade: Trade
    order: Order | None
    decision: Decision


class EventProcessor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        pool: ClientPool,
        locks: Locks,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
    ) -> None:
        self.sessions = sessions
        self.box = box
        self.pool = pool
        self.locks = locks
        self.applied = 0
        self.duplicates = 0
        self.history: deque[Envelope] = deque(maxlen=256)  # applied envelopes (tests, debugging)
        self.applier = BatchApplier(sessions, self._follow_up_one, self._apply)
        self.batcher: MicroBatcher[Item, Outcome] | None = (
            MicroBatcher(self.applier, max_items=batch_max, wait_s=batch_wait_s)
            if batch_max > 0 else None
        )

    async def handle(self, envelope: Envelope) -> None:
        """The bus handler: apply one event exactly once in effect (errors classified as in the
        module docstring)."""
        with bind(userId=envelope.user_id, symbol=envelope.symbol or None):
            event = normalize(envelope)
            if event.kind in _SKIP:
                return
            try:
                async with self.locks.hold(names.lock_name(envelope.user_id, envelope.symbol)):
                    if self.batcher is None or event.kind is EventKind.LIQUIDATED:
                        outcome = await self._apply(envelope, event)
                    else:  # held while the event waits in, and is written by, a batch
                        outcome = await self.batcher.submit(Item(envelope, event))
            except (ExchangeUnavailable, UnknownOutcome, RateLimited) as exc:
                raise TransientError(f"exchange unavailable: {exc}") from exc
            if outcome is Outcome.APPLIED:
                self.applied += 1
                self.history.append(envelope)
            else:
                self.duplicates += 1
                log(logger, logging.INFO, "duplicate event ignored", eventId=event.event_id)

    async def handle_many(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """The bus batch handler (see the module docstring): one answer per envelope."""
        answers: list[BaseException | None] = [None] * len(envelopes)
        todo: dict[str, tuple[int, Item]] = {}  # lock name -> the event that takes it
        for index, envelope in enumerate(envelopes):
            try:
                event = normalize(envelope)
            except Exception as exc:
                answers[index] = exc
                continue
            if event.kind in _SKIP:
                continue
            name = names.lock_name(envelope.user_id, envelope.symbol)
            if self.batcher is None or event.kind is EventKind.LIQUIDATED or name in todo:
                answers[index] = Deferred("per-event path")
                continue
            todo[name] = (index, Item(envelope, event))
        if not todo:
            return answers
        async with self.locks.hold_free(list(todo)) as held:
            batch = [todo[name] for name in todo if name in held]
            outcomes = await self.applier([item for _, item in batch]) if batch else []
        for name in todo.keys() - held:
            answers[todo[name][0]] = Deferred("lock busy")
        for (index, item), outcome in zip(batch, outcomes, strict=True):
            answers[index] = self._answer(item, outcome)
        return answers

    def _answer(self, item: Item, outcome: Outcome | BaseException) -> BaseException | None:
        if isinstance(outcome, ExchangeUnavailable | UnknownOutcome | RateLimited):
            error = TransientError(f"exchange unavailable: {outcome}")
            error.__cause__ = outcome
            return error
        if isinstance(outcome, BaseException):
            return outcome
        if outcome is Outcome.APPLIED:
            self.applied += 1
            self.history.append(item.envelope)
        else:
            self.duplicates += 1
            log(logger, logging.INFO, "duplicate event ignored", eventId=item.event.event_id,
                userId=item.envelope.user_id, symbol=item.envelope.symbol or None)
        return None

    async def _apply(self, envelope: Envelope, event: DomainEvent) -> Outcome:
        """The per-event path (also the batch path's fallback); the caller holds the lock."""
        plans = await self._read(event)
        if plans is None:
            return Outcome.DUPLICATE
        for plan in plans:
            with bind(tradeId=plan.trade.id):
                await self._follow_up(plan.trade, plan.decision)
        return await self._write(envelope, event, plans)

    async def _read(self, event: DomainEvent) -> list[_Plan] | None:
        with _database():
            return await self._read_db(event)

    async def _read_db(self, event: DomainEvent) -> list[_Plan] | None:
        async with self.sessions() as session:
            if await events.is_processed(session, event.event_id):
                return None
            if event.kind is EventKind.LIQUIDATED:
                return await self._liquidation_plans(session, event)
            order = await trades.find_order_by_client_id(session, event.client_id or "")
            if order is None:
                return []  # not one of ours: recorded as processed, nothing else
            trade = await trades.get_trade(session, order.trade_id)
            decision = decide(view(trade), order.leg, event)
            return [_Plan(trade, order, decision)] if decision.changed else []

    async def _liquidation_plans(self, session: AsyncSession, event: DomainEvent) -> list[_Plan]:
        live = await trades.list_trades(
            session, account_id=event.account_id, symbol=event.symbol,
            status=[TradeStatus.OPEN, TradeStatus.ACTIVE],
        )
        plans = []
        for row in live:
            trade = await trades.get_trade(session, row.id)
            plans.append(_Plan(trade, None, decide(view(trade), Leg.ENTRY, event)))
        return plans

    async def _follow_up_one(self, trade: TradeLike, order: OrderLike | None,
                             decision: Decision) -> None:
        with bind(tradeId=trade.id):
            await self._follow_up(trade, decision)

    async def _follow_up(self, trade: TradeLike, decision: Decision) -> None:
        """Cancel what the decision says must go (the sibling of a filled exit)."""
        if not decision.cancel_legs:
            return
        with _database():
            async with self.sessions() as session:
                creds = await users.account_credentials(session, self.box, trade.account_id)
        client = self.pool.get(creds.account_id, creds.api_key, creds.api_secret)
        for order in trade.orders:
            if order.leg not in decision.cancel_legs or order.status in _DONE_ORDER:
                continue
            try:
                await client.cancel_algo_order(client_algo_id=order.client_order_id)
                log(logger, logging.INFO, "sibling order cancelled", leg=order.leg.value)
            except UnknownOrder:
                log(logger, logging.INFO, "sibling order already gone", leg=order.leg.value)

    async def _write(
        self, envelope: Envelope, event: DomainEvent, plans: list[_Plan]
    ) -> Outcome:
        with _database():
            async with self.sessions.begin() as session:
                if not await events.mark_processed(session, event.event_id, event.account_id,
                                                   event.kind.value):
                    return Outcome.DUPLICATE
                for plan in plans:
                    with bind(tradeId=plan.trade.id):
                        await self._record(session, envelope, event, plan)
        return Outcome.APPLIED

    async def _record(
        self, session: AsyncSession, envelope: Envelope, event: DomainEvent, plan: _Plan
    ) -> None:
        trade, decision = plan.trade, plan.decision
        updates = trade_columns(trade, decision.trade_updates)
        if updates:
            moved = await trades.update_trade(session, trade.id, only_from=same_phase(trade),
                                              **updates)
            if not moved:  # changed under us: let the bus retry with fresh state
                raise RuntimeError(f"trade {trade.id} changed concurrently; retrying")
        if plan.order is not None and decision.order_status:
            await trades.update_order(session, plan.order.id, status=decision.order_status)
        for order in trade.orders:
            if order.leg in decision.cancel_legs and order.status not in _DONE_ORDER:
                await trades.update_order(session, order.id, status=OrderStatus.CANCELED)
        if decision.notice is not None:
            await self._notify(session, envelope, trade, decision, updates)
        log(logger, logging.INFO, "trade updated", event=event.kind.value,
            status=str(updates.get("status", trade.status)))

    async def _notify(
        self, session: AsyncSession, envelope: Envelope, trade: Trade, decision: Decision,
        updates: dict[str, Any],
    ) -> None:
        user = await users.get_user(session, envelope.user_id)
        if not user.discord_webhook_url or decision.notice is None:
            return
        await outbox.enqueue_notification(
            session, user_id=user.id, webhook_url=user.discord_webhook_url,
            payload=trade_embed(decision.notice, notice_fields(trade, updates)),
        )
