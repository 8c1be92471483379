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
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire import names
from tradewire.bus.base import Envelope
from tradewire.domain import DomainEvent, EventKind, Leg, TradeStatus
from tradewire.errors import UnknownOrder
from tradewire.locks.base import Locks
from tradewire.logging import bind, log
from tradewire.notify.messages import trade_embed
from tradewire.processor.normalize import normalize
from tradewire.processor.state import Decision, TradeView, decide
from tradewire.store import events, outbox, trades, users
from tradewire.store.crypto import SecretBox
from tradewire.store.tables import Order, OrderStatus, Trade
from tradewire.trading.clients import ClientPool

logger = logging.getLogger("tradewire.worker")

_SKIP = (EventKind.IGNORED, EventKind.ACCOUNT_UPDATED)
_DONE_ORDER = {OrderStatus.CANCELED, OrderStatus.FILLED, OrderStatus.FAILED,
               OrderStatus.REJECTED, OrderStatus.EXPIRED}


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
    ) -> None:
        self.sessions = sessions
        self.box = box
        self.pool = pool
        self.locks = locks
        self.applied = 0
        self.duplicates = 0
        self.history: deque[Envelope] = deque(maxlen=256)  # applied envelopes (tests, debugging)

    async def handle(self, envelope: Envelope) -> None:
        """The bus handler: apply one event exactly once in effect."""
        with bind(userId=envelope.user_id, symbol=envelope.symbol or None):
            event = normalize(envelope)
            if event.kind in _SKIP:
                return
            async with self.locks.hold(names.lock_name(envelope.user_id, envelope.symbol)):
                await self._apply(envelope, event)

    async def _apply(self, envelope: Envelope, event: DomainEvent) -> None:
        plans = await self._read(event)
        if plans is None:
            self.duplicates += 1
            log(logger, logging.INFO, "duplicate event ignored", eventId=event.event_id)
            return
        for plan in plans:
            with bind(tradeId=plan.trade.id):
                await self._follow_up(plan)
        await self._write(envelope, event, plans)

    async def _read(self, event: DomainEvent) -> list[_Plan] | None:
        async with self.sessions() as session:
            if await events.is_processed(session, event.event_id):
                return None
            if event.kind is EventKind.LIQUIDATED:
                return await self._liquidation_plans(session, event)
            order = await trades.find_order_by_client_id(session, event.client_id or "")
            if order is None:
                return []  # not one of ours: recorded as processed, nothing else
            trade = await trades.get_trade(session, order.trade_id)
            decision = decide(_view(trade), order.leg, event)
            return [_Plan(trade, order, decision)] if decision.changed else []

    async def _liquidation_plans(self, session: AsyncSession, event: DomainEvent) -> list[_Plan]:
        live = await trades.list_trades(
            session, account_id=event.account_id, symbol=event.symbol,
            status=[TradeStatus.OPEN, TradeStatus.ACTIVE],
        )
        plans = []
        for row in live:
            trade = await trades.get_trade(session, row.id)
            plans.append(_Plan(trade, None, decide(_view(trade), Leg.ENTRY, event)))
        return plans

    async def _follow_up(self, plan: _Plan) -> None:
        """Cancel what the decision says must go (the sibling of a filled exit)."""
        if not plan.decision.cancel_legs:
            return
        async with self.sessions() as session:
            creds = await users.account_credentials(session, self.box, plan.trade.account_id)
        client = self.pool.get(creds.account_id, creds.api_key, creds.api_secret)
        for order in plan.trade.orders:
            if order.leg not in plan.decision.cancel_legs or order.status in _DONE_ORDER:
                continue
            try:
                await client.cancel_algo_order(client_algo_id=order.client_order_id)
                log(logger, logging.INFO, "sibling order cancelled", leg=order.leg.value)
            except UnknownOrder:
                log(logger, logging.INFO, "sibling order already gone", leg=order.leg.value)

    async def _write(self, envelope: Envelope, event: DomainEvent, plans: list[_Plan]) -> None:
        async with self.sessions.begin() as session:
            if not await events.mark_processed(session, event.event_id, event.account_id,
                                               event.kind.value):
                self.duplicates += 1
                return
            for plan in plans:
                with bind(tradeId=plan.trade.id):
                    await self._record(session, envelope, event, plan)
        self.applied += 1
        self.history.append(envelope)

    async def _record(
        self, session: AsyncSession, envelope: Envelope, event: DomainEvent, plan: _Plan
    ) -> None:
        trade, decision = plan.trade, plan.decision
        updates = _trade_columns(trade, decision.trade_updates)
        if updates:
            moved = await trades.update_trade(session, trade.id, only_from=_same_phase(trade),
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
        fields: dict[str, Any] = {
            "symbol": trade.symbol, "trade": trade.id, "side": trade.side.value,
            "quantity": updates.get("quantity", trade.quantity),
            "entry": updates.get("entry_price", trade.entry_price),
            "exit": updates.get("exit_price"),
            "realized PnL": updates.get("realized_pnl") if "exit_price" in updates else None,
            "reason": updates.get("error"),
        }
        await outbox.enqueue_notification(
            session, user_id=user.id, webhook_url=user.discord_webhook_url,
            payload=trade_embed(decision.notice, fields),
        )


def _view(trade: Trade) -> TradeView:
    """What the state machine needs to know of a trade (its orders loaded)."""
    working = frozenset(o.leg for o in trade.orders
                        if o.leg.is_exit and o.status not in _DONE_ORDER)
    return TradeView(trade.status, trade.quantity, working)


def _same_phase(trade: Trade) -> list[TradeStatus]:
    """Statuses the decision read in step 1 stays valid from. PENDING and OPEN differ only by
    the API having recorded its placement (which may land between our read and write)."""
    if trade.status in (TradeStatus.PENDING, TradeStatus.OPEN):
        return [TradeStatus.PENDING, TradeStatus.OPEN]
    return [trade.status]


def _trade_columns(trade: Trade, changes: dict[str, Any]) -> dict[str, Any]:
    """The decision's trade changes as ``update_trade`` arguments (deltas made absolute)."""
    out = {k: v for k, v in changes.items() if not k.endswith("_delta") and k != "closed_at_ms"}
    if "closed_at_ms" in changes:
        out["closed_at"] = changes["closed_at_ms"] or None
    if "realized_pnl_delta" in changes:
        out["realized_pnl"] = trade.realized_pnl + Decimal(changes["realized_pnl_delta"])
    if "commission_delta" in changes:
        out["commission"] = trade.commission + Decimal(changes["commission_delta"])
    return {k: v for k, v in out.items() if v is not None}
