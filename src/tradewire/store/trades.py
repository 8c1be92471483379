"""Trades and their order legs. The caller owns the transaction.

Updates are conditional when asked (``only_from``): the state machine writes a transition only
if the trade is still in a state it expects, which keeps a late or replayed event from moving a
trade backwards even if two writers race.
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from tradewire.domain import CloseReason, Leg, Side, TradeStatus
from tradewire.errors import Conflict, NotFound
from tradewire.store._sql import insert_ignoring_conflicts
from tradewire.store.tables import Order, OrderStatus, Trade
from tradewire.store.types import now_ms

MAX_LIST_LIMIT = 1000


async def create_trade(
    session: AsyncSession,
    *,
    signal_id: str,
    user_id: int,
    account_id: int,
    symbol: str,
    side: Side,
    quantity: Decimal,
    stop_loss: Decimal,
    take_profit: Decimal,
    leverage: int,
    entry_price: Decimal | None = None,
    status: TradeStatus = TradeStatus.PENDING,
    now: int | None = None,
) -> Trade:
    """A new trade; ``Conflict`` if this signal already has a trade on this account (the
    transaction stays usable)."""
    stamp = now_ms(now)
    trade_id = await session.scalar(
        insert_ignoring_conflicts(
            session, Trade, signal_id=signal_id, user_id=user_id, account_id=account_id,
            symbol=symbol, side=side, status=status, quantity=quantity, entry_price=entry_price,
            stop_loss=stop_loss, take_profit=take_profit, leverage=leverage,
            realized_pnl=Decimal(0), commission=Decimal(0), created_at=stamp, updated_at=stamp,
        ).returning(Trade.id)
    )
    if trade_id is None:
        raise Conflict(f"signal {signal_id!r} already has a trade on account {account_id}")
    return await get_trade(session, trade_id)


async def add_order(
    session: AsyncSession,
    trade_id: int,
    leg: Leg,
    client_order_id: str,
    *,
    order_type: str,
    side: str,
    quantity: Decimal,
    price: Decimal | None = None,
    trigger_price: Decimal | None = None,
    status: str = OrderStatus.NEW,
    now: int | None = None,
) -> Order:
    """Record an order leg before sending it; ``Conflict`` if the client id is already used."""
    stamp = now_ms(now)
    order_id = await session.scalar(
        insert_ignoring_conflicts(
            session, Order, trade_id=trade_id, leg=leg, client_order_id=client_order_id,
            order_type=order_type, side=side, quantity=quantity, price=price,
            trigger_price=trigger_price, status=str(status), created_at=stamp, updated_at=stamp,
        ).returning(Order.id)
    )
    if order_id is None:
        raise Conflict(f"client order id {client_order_id!r} is already used")
    order = await session.get(Order, order_id)
    assert order is not None
    return order


async def get_trade(session: AsyncSession, trade_id: int) -> Trade:
    """The trade with its orders loaded; ``NotFound``."""
    trade = await session.scalar(
        select(Trade).where(Trade.id == trade_id).options(selectinload(Trade.orders))
    )
    if trade is None:
        raise NotFound(f"trade {trade_id} does not exist")
    return trade


async def find_trade(session: AsyncSession, signal_id: str, account_id: int) -> Trade | None:
    """The trade of one signal on one account (with its orders), if any."""
    return await session.scalar(
        select(Trade)
        .where(Trade.signal_id == signal_id, Trade.account_id == account_id)
        .options(selectinload(Trade.orders))
    )


async def list_trades_for_signal(session: AsyncSession, signal_id: str) -> list[Trade]:
    """Every account's trade of one signal, in creation order (orders not loaded)."""
    query = select(Trade).where(Trade.signal_id == signal_id).order_by(Trade.id)
    return list(await session.scalars(query))


async def lock_trade(session: AsyncSession, trade_id: int) -> None:
    """Take the trade's row lock (``FOR UPDATE`` on PostgreSQL; SQLite serialises writers).

    Every writer that changes a trade AND its orders in one transaction takes the trade row
    first, as the worker's batch path does: two writers taking the two rows in opposite orders
    deadlock on PostgreSQL."""
    await session.execute(select(Trade.id).where(Trade.id == trade_id).with_for_update())


async def find_order_by_client_id(session: AsyncSession, client_id: str) -> Order | None:
    """The order with this client id, its ``trade`` loaded, or None (a foreign order)."""
    return await session.scalar(
        select(Order).where(Order.client_order_id == client_id).options(joinedload(Order.trade))
    )


LIVE_TRADE_STATUSES = (TradeStatus.PENDING, TradeStatus.OPEN, TradeStatus.ACTIVE)


async def live_trades_of_accounts(
    session: AsyncSession, account_ids: Collection[int]
) -> list[Trade]:
    """The trades of these accounts that are still live (PENDING, OPEN or ACTIVE), each with its
    orders loaded, ordered by account then trade id: one query for the trades (plus the
    orders' select-in load), however many accounts. No accounts: no query."""
    ids = sorted(set(account_ids))
    if not ids:
        return []
    query = (
        select(Trade)
        .where(Trade.account_id.in_(ids), Trade.status.in_(list(LIVE_TRADE_STATUSES)))
        .options(selectinload(Trade.orders))
        .order_by(Trade.account_id, Trade.id)
    )
    return list(await session.scalars(query))


async def list_trades(
    session: AsyncSession,
    *,
    user_id: int | None = None,
    status: TradeStatus | Collection[TradeStatus] | None = None,
    symbol: str | None = None,
    account_id: int | None = None,
    limit: int = 100,
) -> list[Trade]:
    """Newest first, filtered; orders are not loaded (use ``get_trade``)."""
    query = select(Trade)
    if user_id is not None:
        query = query.where(Trade.user_id == user_id)
    if account_id is not None:
        query = query.where(Trade.account_id == account_id)
    if symbol is not None:
        query = query.where(Trade.symbol == symbol)
    if isinstance(status, TradeStatus):
        query = query.where(Trade.status == status)
    elif status is not None:
        query = query.where(Trade.status.in_(list(status)))
    query = query.order_by(Trade.id.desc()).limit(max(1, min(limit, MAX_LIST_LIMIT)))
    return list(await session.scalars(query))


async def update_trade(
    session: AsyncSession,
    trade_id: int,
    *,
    only_from: Collection[TradeStatus] | None = None,
    status: TradeStatus | None = None,
    close_reason: CloseReason | None = None,
    quantity: Decimal | None = None,
    entry_price: Decimal | None = None,
    exit_price: Decimal | None = None,
    realized_pnl: Decimal | None = None,
    commission: Decimal | None = None,
    error: str | None = None,
    closed_at: int | None = None,
    now: int | None = None,
) -> bool:
    """Set the given fields (None leaves a field as it is) and ``updated_at``. With
    ``only_from``, only if the trade's status is one of those. True if the row was updated."""
    changes = _given(
        status=status, close_reason=close_reason, quantity=quantity, entry_price=entry_price,
        exit_price=exit_price, realized_pnl=realized_pnl, commission=commission, error=error,
        closed_at=closed_at,
    )
    statement = update(Trade).where(Trade.id == trade_id)
    if only_from is not None:
        statement = statement.where(Trade.status.in_(list(only_from)))
    statement = statement.values(**changes, updated_at=now_ms(now)).returning(Trade.id)
    return await session.scalar(statement) is not None


async def update_order(
    session: AsyncSession,
    order_id: int,
    *,
    only_from: Collection[str] | None = None,
    status: str | None = None,
    exchange_order_id: int | None = None,
    algo_id: int | None = None,
    quantity: Decimal | None = None,
    price: Decimal | None = None,
    trigger_price: Decimal | None = None,
    error: str | None = None,
    now: int | None = None,
) -> bool:
    """Like ``update_trade`` for one order (``only_from``: its current status)."""
    changes = _given(
        status=None if status is None else str(status), exchange_order_id=exchange_order_id,
        algo_id=algo_id, quantity=quantity, price=price, trigger_price=trigger_price, error=error,
    )
    statement = update(Order).where(Order.id == order_id)
    if only_from is not None:
        statement = statement.where(Order.status.in_([str(s) for s in only_from]))
    statement = statement.values(**changes, updated_at=now_ms(now)).returning(Order.id)
    return await session.scalar(statement) is not None


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}
