"""Bulk reads and writes for the worker's batch path (SQLAlchemy Core; SQLite and PostgreSQL).

``read_batch`` loads in four statements what a batch of events needs: which event ids are
already processed, the trades (with their orders) the events' client order ids point at, and
the owners' webhooks. ``write_batch`` applies a batch in the caller's transaction:

1. processed-event rows, multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (ids in
   sorted order, so two writers never wait on each other crosswise); an id that was not
   inserted is a duplicate and its effects are dropped;
2. one ``SELECT`` of the touched trades' statuses (``FOR UPDATE`` on PostgreSQL; on SQLite the
   insert above already holds the database's write lock), checked against each change's
   ``only_from``: a change whose trade moved is reported *missed* and nothing more is written
   (the caller rolls back and falls back to the per-event path for those events);
3. trade and order updates as ``executemany`` statements (still conditional on the status);
4. outbox rows, one ``executemany`` insert.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from tradewire.domain import TradeStatus
from tradewire.errors import ConfigError
from tradewire.store._sql import dialect_name, to_json
from tradewire.store.outbox import DUE_NOW
from tradewire.store.tables import (
    Notification,
    NotificationStatus,
    Order,
    ProcessedEvent,
    Trade,
    User,
)

_TRADES = cast(Table, Trade.__table__)
_ORDERS = cast(Table, Order.__table__)
_EVENTS = cast(Table, ProcessedEvent.__table__)
_NOTIFICATIONS = cast(Table, Notification.__table__)


@dataclass
class Snapshot:
    """What ``read_batch`` found."""

    processed: set[str]
    trades: dict[int, Trade]  # by id, orders loaded
    orders: dict[str, Order]  # by client order id
    webhooks: dict[int, str | None]  # user id -> Discord webhook


@dataclass
class TradeChange:
    trade_id: int
    only_from: tuple[TradeStatus, ...]
    values: dict[str, Any]


@dataclass
class ItemWrite:
    """Everything one event writes."""

    event_id: str
    account_id: int
    kind: str
    trades: list[TradeChange] = field(default_factory=list)
    orders: list[tuple[int, str]] = field(default_factory=list)  # (order id, new status)
    notifications: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class WriteResult:
    duplicates: set[str]  # event ids already processed (by another writer): nothing written
    missed: set[str]  # event ids whose trade moved since the read: caller must roll back


async def read_batch(
    session: AsyncSession, event_ids: Collection[str], client_ids: Collection[str],
    user_ids: Collection[int],
) -> Snapshot:
    processed = set(await session.scalars(
        select(_EVENTS.c.event_id).where(_EVENTS.c.event_id.in_(list(event_ids)))
    )) if event_ids else set()
    trades: dict[int, Trade] = {}
    orders: dict[str, Order] = {}
    if client_ids:
        owning = select(Order.trade_id).where(Order.client_order_id.in_(list(client_ids)))
        query = select(Trade).where(Trade.id.in_(owning)).options(selectinload(Trade.orders))
        for trade in await session.scalars(query):
            trades[trade.id] = trade
            for order in trade.orders:
                orders[order.client_order_id] = order
    webhooks: dict[int, str | None] = {}
    if user_ids:
        rows = await session.execute(
            select(User.id, User.discord_webhook_url).where(User.id.in_(list(user_ids)))
        )
        webhooks = {row[0]: row[1] for row in rows}
    return Snapshot(processed, trades, orders, webhooks)


async def write_batch(session: AsyncSession, items: list[ItemWrite], now: int) -> WriteResult:
    """Apply ``items`` in the caller's transaction (see the module docstring)."""
    inserted = await _mark_processed(session, items, now)
    duplicates = {item.event_id for item in items} - inserted
    fresh = [item for item in items if item.event_id in inserted]
    missed = await _moved(session, fresh)
    if missed:
        return WriteResult(duplicates, missed)
    await _update_trades(session, [c for item in fresh for c in item.trades], now)
    await _update_orders(session, [o for item in fresh for o in item.orders], now)
    await _enqueue(session, [n for item in fresh for n in item.notifications], now)
    return WriteResult(duplicates, set())


async def _mark_processed(session: AsyncSession, items: list[ItemWrite], now: int) -> set[str]:
    if not items:
        return set()
    rows = [{"event_id": item.event_id, "account_id": item.account_id, "kind": item.kind,
             "processed_at": now} for item in sorted(items, key=lambda i: i.event_id)]
    name = dialect_name(session)
    statement: postgresql.Insert | sqlite.Insert
    if name == "postgresql":
        return set(await session.scalars(_PG_MARK_PROCESSED, {
            "ids": [r["event_id"] for r in rows], "accounts": [r["account_id"] for r in rows],
            "kinds": [r["kind"] for r in rows], "now": now}))
    if name == "sqlite":
        statement = sqlite.insert(_EVENTS).on_conflict_do_nothing()
    else:
        raise ConfigError(f"unsupported database dialect {name!r}")
    # executemany with RETURNING: SQLAlchemy's "insertmanyvalues" sends multi-row INSERTs
    # from one cached compiled statement
    return set(await session.scalars(statement.returning(_EVENTS.c.event_id), rows))


async def _moved(session: AsyncSession, items: Iterable[ItemWrite]) -> set[str]:
    """Event ids whose trade change no longer applies (status outside ``only_from``)."""
    expected = [(item.event_id, change) for item in items for change in item.trades]
    if not expected:
        return set()
    ids = sorted({change.trade_id for _, change in expected})
    query = select(_TRADES.c.id, _TRADES.c.status).where(_TRADES.c.id.in_(ids))
    if dialect_name(session) == "postgresql":
        query = query.order_by(_TRADES.c.id).with_for_update()
    status = {row[0]: row[1] for row in await session.execute(query)}
    return {event_id for event_id, change in expected
            if status.get(change.trade_id) not in change.only_from}


async def _update_trades(session: AsyncSession, changes: list[TradeChange], now: int) -> None:
    if dialect_name(session) == "postgresql":
        await _pg_update_trades(session, changes, now)
        return
    groups: dict[tuple[tuple[str, ...], tuple[TradeStatus, ...]], list[dict[str, Any]]]
    groups = defaultdict(list)
    for change in changes:
        columns = tuple(sorted(change.values))
        params = {f"v_{k}": v for k, v in change.values.items()}
        groups[(columns, change.only_from)].append({"b_id": change.trade_id, **params})
    for (columns, only_from), params_list in groups.items():
        statement = (
            update(_TRADES)
            .where(_TRADES.c.id == bindparam("b_id"),  # IN (...) cannot be executemany'd
                   or_(*(_TRADES.c.status == status for status in only_from)))
            .values({**{c: bindparam(f"v_{c}", type_=_TRADES.c[c].type) for c in columns},
                     "updated_at": now})
        )
        await session.execute(statement, params_list)


async def _update_orders(session: AsyncSession, changes: list[tuple[int, str]], now: int) -> None:
    if not changes:
        return
    if dialect_name(session) == "postgresql":
        await session.execute(_PG_UPDATE_ORDERS, {
            "ids": [order_id for order_id, _ in changes],
            "statuses": [str(status) for _, status in changes], "now": now})
        return
    statement = (
        update(_ORDERS)
        .where(_ORDERS.c.id == bindparam("b_id"))
        .values(status=bindparam("v_status"), updated_at=now)
    )
    await session.execute(
        statement, [{"b_id": order_id, "v_status": str(status)} for order_id, status in changes]
    )


async def _enqueue(
    session: AsyncSession, rows: list[tuple[int, str, dict[str, Any]]], now: int
) -> None:
    if not rows:
        return
    if dialect_name(session) == "postgresql":
        await session.execute(_PG_ENQUEUE, {
            "users": [row[0] for row in rows], "urls": [row[1] for row in rows],
            "payloads": [to_json(row[2]) for row in rows], "now": now,
            "pending": NotificationStatus.PENDING.value, "due": DUE_NOW})
        return
    await session.execute(insert(_NOTIFICATIONS), [
        {"user_id": user_id, "webhook_url": url, "payload": to_json(payload),
         "status": NotificationStatus.PENDING, "attempts": 0, "created_at": now,
         "next_attempt_at": DUE_NOW}
        for user_id, url, payload in rows
    ])


# --- PostgreSQL: one statement per step over unnest()ed arrays. The SQL text never varies
# with the batch size, so asyncpg prepares each statement once per connection. ---

_PG_MARK_PROCESSED = text(
    "INSERT INTO processed_events (event_id, account_id, kind, processed_at) "
    "SELECT v.event_id, v.account_id, v.kind, :now FROM unnest(CAST(:ids AS varchar[]), "
    "CAST(:accounts AS bigint[]), CAST(:kinds AS varchar[])) AS v(event_id, account_id, kind) "
    "ORDER BY v.event_id ON CONFLICT DO NOTHING RETURNING event_id"
)
_PG_UPDATE_ORDERS = text(
    "UPDATE orders SET status = v.status, updated_at = :now FROM unnest(CAST(:ids AS bigint[]), "
    "CAST(:statuses AS varchar[])) AS v(id, status) WHERE orders.id = v.id"
)
_PG_ENQUEUE = text(
    "INSERT INTO notifications (user_id, webhook_url, payload, status, attempts, created_at, "
    "next_attempt_at) SELECT v.user_id, v.url, v.payload, :pending, 0, :now, :due "
    "FROM unnest(CAST(:users AS bigint[]), CAST(:urls AS varchar[]), CAST(:payloads AS text[])) "
    "AS v(user_id, url, payload)"
)
_PG_TRADE_ARRAYS = {  # trade column -> element type of its unnest() array
    "status": "varchar", "close_reason": "varchar", "error": "text", "closed_at": "bigint",
    "quantity": "numeric", "entry_price": "numeric", "exit_price": "numeric",
    "realized_pnl": "numeric", "commission": "numeric",
}


def _pg_value(value: Any) -> Any:
    return value.value if isinstance(value, StrEnum) else value


async def _pg_update_trades(session: AsyncSession, changes: list[TradeChange], now: int) -> None:
    """One ``UPDATE ... FROM unnest(...)`` per (columns, only_from) group, conditional on the
    status like the per-event path."""
    groups: dict[tuple[tuple[str, ...], tuple[TradeStatus, ...]], list[TradeChange]]
    groups = defaultdict(list)
    for change in changes:
        groups[(tuple(sorted(change.values)), change.only_from)].append(change)
    for (columns, only_from), group in groups.items():
        unknown = set(columns) - set(_PG_TRADE_ARRAYS)
        if unknown:
            raise ValueError(f"unexpected trade columns {sorted(unknown)}")
        arrays = ", ".join(f"CAST(:c_{c} AS {_PG_TRADE_ARRAYS[c]}[])" for c in columns)
        statement = text(
            f"UPDATE trades SET {', '.join(f'{c} = v.{c}' for c in columns)}, updated_at = :now "
            f"FROM unnest(CAST(:ids AS bigint[]), {arrays}) AS v(id, {', '.join(columns)}) "
            "WHERE trades.id = v.id AND trades.status = ANY(CAST(:only_from AS varchar[]))"
        )
        params: dict[str, Any] = {f"c_{c}": [_pg_value(ch.values[c]) for ch in group]
                                  for c in columns}
        params.update(ids=[ch.trade_id for ch in group], now=now,
                      only_from=[status.value for status in only_from])
        await session.execute(statement, params)
