"""Bulk reads and writes for the worker's batch path (SQLAlchemy Core; SQLite and PostgreSQL).

``read_batch`` loads in four statements what a batch of events needs: which event ids are
already processed, the trades (with their orders) the events' client order ids point at, and
the owners' webhooks — as plain rows (``TradeRow``/``OrderRow``, SQLAlchemy Core), not ORM
objects. ``write_batch`` applies a batch in the caller's transaction:

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
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, bindparam, column, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tradewire.domain import Leg, Side, TradeStatus
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


@dataclass(slots=True)
class OrderRow:
    """The columns of an ``orders`` row the batch path reads (plain values, no ORM state)."""

    id: int
    trade_id: int
    leg: Leg
    client_order_id: str
    status: str


@dataclass(slots=True)
class TradeRow:
    """The columns of a ``trades`` row the batch path reads, with its orders (by id)."""

    id: int
    user_id: int
    account_id: int
    symbol: str
    side: Side
    status: TradeStatus
    quantity: Decimal
    entry_price: Decimal | None
    realized_pnl: Decimal
    commission: Decimal
    orders: list[OrderRow] = field(default_factory=list)


_TRADE_COLUMNS = [_TRADES.c[name] for name in (
    "id", "user_id", "account_id", "symbol", "side", "status", "quantity", "entry_price",
    "realized_pnl", "commission")]
_ORDER_COLUMNS = [_ORDERS.c[name] for name in (
    "id", "trade_id", "leg", "client_order_id", "status")]


@dataclass
class Snapshot:
    """What ``read_batch`` found."""

    processed: set[str]
    trades: dict[int, TradeRow]  # by id, orders loaded
    orders: dict[str, OrderRow]  # by client order id
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
    if dialect_name(session) == "postgresql":
        return await _pg_read_batch(session, event_ids, client_ids, user_ids)
    processed = set(await session.scalars(
        select(_EVENTS.c.event_id).where(_EVENTS.c.event_id.in_(list(event_ids)))
    )) if event_ids else set()
    trades: dict[int, TradeRow] = {}
    orders: dict[str, OrderRow] = {}
    if client_ids:  # Core rows, not ORM objects: no identity map, no instance state per row
        owning = select(_ORDERS.c.trade_id).where(
            _ORDERS.c.client_order_id.in_(list(client_ids)))
        for row in await session.execute(
            select(*_TRADE_COLUMNS).where(_TRADES.c.id.in_(owning))
        ):
            trades[row[0]] = TradeRow(*row)
        if trades:
            query = (select(*_ORDER_COLUMNS).where(_ORDERS.c.trade_id.in_(list(trades)))
                     .order_by(_ORDERS.c.id))
            for row in await session.execute(query):
                _add_order(trades, orders, OrderRow(*row))
    webhooks: dict[int, str | None] = {}
    if user_ids:
        rows = await session.execute(
            select(User.id, User.discord_webhook_url).where(User.id.in_(list(user_ids)))
        )
        webhooks = {row[0]: row[1] for row in rows}
    return Snapshot(processed, trades, orders, webhooks)


def _add_order(trades: dict[int, TradeRow], orders: dict[str, OrderRow], order: OrderRow
               ) -> None:
    trades[order.trade_id].orders.append(order)
    orders[order.client_order_id] = order


async def _pg_read_batch(
    session: AsyncSession, event_ids: Collection[str], client_ids: Collection[str],
    user_ids: Collection[int],
) -> Snapshot:
    """``read_batch`` on PostgreSQL: fixed statements over arrays (prepared once per
    connection, nothing built or compiled per batch) and the trades with their orders in one
    join: three statements."""
    processed = set(await session.scalars(
        _PG_PROCESSED, {"ids": list(event_ids)})) if event_ids else set()
    trades: dict[int, TradeRow] = {}
    orders: dict[str, OrderRow] = {}
    if client_ids:
        width = len(_TRADE_COLUMNS)
        for row in await session.execute(_PG_TRADES_AND_ORDERS, {"cids": list(client_ids)}):
            trade = trades.get(row[0])
            if trade is None:
                trade = trades[row[0]] = TradeRow(*row[:width])
            _add_order(trades, orders, OrderRow(*row[width:]))
    webhooks: dict[int, str | None] = {}
    if user_ids:
        rows = await session.execute(_PG_WEBHOOKS, {"ids": list(user_ids)})
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
    if dialect_name(session) == "postgresql":
        rows = await session.execute(_PG_LOCK_TRADES, {"ids": ids})
    else:
        rows = await session.execute(
            select(_TRADES.c.id, _TRADES.c.status).where(_TRADES.c.id.in_(ids)))
    status = {row[0]: row[1] for row in rows}
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

_PG_PROCESSED = text(
    "SELECT event_id FROM processed_events WHERE event_id = ANY(CAST(:ids AS varchar[]))"
)
_PG_TRADES_AND_ORDERS = text(
    f"SELECT {', '.join(f't.{c.name}' for c in _TRADE_COLUMNS)}, "
    f"{', '.join(f'o.{c.name} AS o_{c.name}' for c in _ORDER_COLUMNS)} "
    "FROM trades t JOIN orders o ON o.trade_id = t.id WHERE t.id IN (SELECT trade_id FROM "
    "orders WHERE client_order_id = ANY(CAST(:cids AS varchar[]))) ORDER BY o.id"
).columns(*(column(c.name, c.type) for c in _TRADE_COLUMNS),
          *(column(f"o_{c.name}", c.type) for c in _ORDER_COLUMNS))
_PG_WEBHOOKS = text(
    "SELECT id, discord_webhook_url FROM users WHERE id = ANY(CAST(:ids AS bigint[]))"
)
_PG_LOCK_TRADES = text(  # in id order, so two writers never wait on each other crosswise
    "SELECT id, status FROM trades WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id "
    "FOR UPDATE"
).columns(_TRADES.c.id, _TRADES.c.status)
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
