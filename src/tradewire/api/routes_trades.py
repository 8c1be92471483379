"""``GET /api/trades`` (the dead-letter queue's endpoints are in ``routes_dlq``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from tradewire.api.deps import ApiDeps, deps, require_operator
from tradewire.domain import TradeStatus
from tradewire.store import trades
from tradewire.store.tables import Trade

router = APIRouter(prefix="/api", dependencies=[Depends(require_operator)])

Deps = Annotated[ApiDeps, Depends(deps)]


def trade_json(t: Trade) -> dict[str, Any]:
    def num(value: object) -> str | None:
        return None if value is None else str(value)

    return {
        "id": t.id, "signal_id": t.signal_id, "user_id": t.user_id, "account_id": t.account_id,
        "symbol": t.symbol, "side": t.side.value, "status": t.status.value,
        "close_reason": t.close_reason.value if t.close_reason else None,
        "quantity": num(t.quantity), "entry_price": num(t.entry_price),
        "exit_price": num(t.exit_price), "stop_loss": num(t.stop_loss),
        "take_profit": num(t.take_profit), "leverage": t.leverage,
        "realized_pnl": num(t.realized_pnl), "commission": num(t.commission), "error": t.error,
        "created_at": t.created_at, "updated_at": t.updated_at, "closed_at": t.closed_at,
    }


@router.get("/trades")
async def list_trades(
    d: Deps,
    user_id: int | None = None,
    status: TradeStatus | None = None,
    symbol: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    async with d.sessions() as session:
        rows = await trades.list_trades(
            session, user_id=user_id, status=status,
            symbol=symbol.upper() if symbol else None, limit=limit,
        )
    return [trade_json(t) for t in rows]


@router.get("/trades/{trade_id}")
async def get_trade(trade_id: int, d: Deps) -> dict[str, Any]:
    async with d.sessions() as session:
        trade = await trades.get_trade(session, trade_id)
    out = trade_json(trade)
    out["orders"] = [
        {"leg": o.leg.value, "client_order_id": o.client_order_id, "type": o.order_type,
         "side": o.side, "status": o.status, "quantity": str(o.quantity),
         "price": None if o.price is None else str(o.price),
         "trigger_price": None if o.trigger_price is None else str(o.trigger_price),
         "exchange_order_id": o.exchange_order_id, "algo_id": o.algo_id, "error": o.error}
        for o in trade.orders
    ]
    return out
