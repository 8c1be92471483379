"""What an event's decision does to the books, shared by the per-event and the batch paths of
the worker: the state machine's view of a trade, the conditional-update phase, absolute trade
columns, the notification fields, and the database error classification."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, Protocol

import asyncpg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from tradewire.domain import Leg, Side, TradeStatus
from tradewire.errors import DependencyDown
from tradewire.processor.state import Decision, TradeView
from tradewire.store.tables import OrderStatus

ASYNCPG_DOWN = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError)
DONE_ORDER = frozenset({OrderStatus.CANCELED, OrderStatus.FILLED, OrderStatus.FAILED,
                        OrderStatus.REJECTED, OrderStatus.EXPIRED})


class OrderLike(Protocol):
    """What these helpers read of an order: an ORM ``Order`` or a batch ``OrderRow``."""

    @property
    def id(self) -> int: ...
    @property
    def leg(self) -> Leg: ...
    @property
    def client_order_id(self) -> str: ...
    @property
    def status(self) -> str: ...


class TradeLike(Protocol):
    """What these helpers read of a trade: an ORM ``Trade`` (orders loaded) or a batch
    ``TradeRow``."""

    @property
    def id(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def account_id(self) -> int: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> Side: ...
    @property
    def status(self) -> TradeStatus: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def entry_price(self) -> Decimal | None: ...
    @property
    def realized_pnl(self) -> Decimal: ...
    @property
    def commission(self) -> Decimal: ...
    @property
    def orders(self) -> Sequence[OrderLike]: ...


@contextlib.contextmanager
def database() -> Iterator[None]:
    """Re-raise "the database cannot be reached" as ``DependencyDown``; other errors pass."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DependencyDown(f"database unavailable: {exc.orig or exc}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc.orig, ASYNCPG_DOWN):
            raise DependencyDown(f"database connection lost: {exc.orig or exc}") from exc
        raise
    except (*ASYNCPG_DOWN, OSError) as exc:
        raise DependencyDown(f"database unavailable: {exc!r}") from exc


def view(trade: TradeLike) -> TradeView:
    """What the state machine needs to know of a trade (its orders loaded)."""
    working = frozenset(o.leg for o in trade.orders
                        if o.leg.is_exit and o.status not in DONE_ORDER)
    return TradeView(trade.status, trade.quantity, working)


def same_phase(trade: TradeLike) -> list[TradeStatus]:
    """Statuses the decision read in step 1 stays valid from. PENDING and OPEN differ only by
    the API having recorded its placement (which may land between our read and write)."""
    if trade.status in (TradeStatus.PENDING, TradeStatus.OPEN):
        return [TradeStatus.PENDING, TradeStatus.OPEN]
    return [trade.status]


def trade_columns(trade: TradeLike, changes: dict[str, Any]) -> dict[str, Any]:
    """The decision's trade changes as ``update_trade`` arguments (deltas made absolute)."""
    out = {k: v for k, v in changes.items() if not k.endswith("_delta") and k != "closed_at_ms"}
    if "closed_at_ms" in changes:
        out["closed_at"] = changes["closed_at_ms"] or None
    if "realized_pnl_delta" in changes:
        out["realized_pnl"] = trade.realized_pnl + Decimal(changes["realized_pnl_delta"])
    if "commission_delta" in changes:
        out["commission"] = trade.commission + Decimal(changes["commission_delta"])
    return {k: v for k, v in out.items() if v is not None}


def notice_fields(trade: TradeLike, updates: dict[str, Any]) -> dict[str, Any]:
    """The fields of the user's notification about this change."""
    return {
        "symbol": trade.symbol, "trade": trade.id, "side": trade.side.value,
        "quantity": updates.get("quantity", trade.quantity),
        "entry": updates.get("entry_price", trade.entry_price),
        "exit": updates.get("exit_price"),
        "realized PnL": updates.get("realized_pnl") if "exit_price" in updates else None,
        "reason": updates.get("error"),
    }


def cancelled_orders(trade: TradeLike, decision: Decision) -> list[int]:
    """Ids of the trade's working orders the decision cancels."""
    return [o.id for o in trade.orders
            if o.leg in decision.cancel_legs and o.status not in DONE_ORDER]
