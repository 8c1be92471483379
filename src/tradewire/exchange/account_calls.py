"""Account settings, batches and history — the less frequent REST calls of ``ExchangeClient``
(kept apart so the client module stays readable). Mixed into ``ExchangeClient``."""

from __future__ import annotations

import json
from typing import Any

from tradewire.errors import ExchangeError, OrderRejected
from tradewire.exchange.fields import fields_of_list
from tradewire.exchange.rest import RestSession
from tradewire.exchange.signing import Params, format_value
from tradewire.exchange.wire_rest import OrderResponse

NO_CHANGE_NEEDED = (-4046, -4059)  # margin type / position mode already as asked


class AccountCalls:
    _rest: RestSession

    async def set_margin_type(self, symbol: str, margin_type: str) -> bool:
        """ISOLATED or CROSSED for one symbol; False when it already was (-4046)."""
        return await self._setting("POST", "/fapi/v1/marginType",
                                   {"symbol": symbol, "marginType": margin_type})

    async def set_position_mode(self, hedge: bool) -> bool:
        """Hedge (``True``) or one-way mode for the account; False when already so (-4059)."""
        return await self._setting("POST", "/fapi/v1/positionSide/dual",
                                   {"dualSidePosition": "true" if hedge else "false"})

    async def position_mode(self) -> bool:
        """True in hedge mode."""
        body = await self._rest.request("GET", "/fapi/v1/positionSide/dual")
        return bool(body["dualSidePosition"])

    async def order_rate_limits(self) -> list[dict[str, Any]]:
        """The account's own order limits (``GET /fapi/v1/rateLimit/order``)."""
        body = await self._rest.request("GET", "/fapi/v1/rateLimit/order")
        return [dict(row) for row in body]

    async def place_batch(self, orders: list[Params]) -> list[OrderResponse | ExchangeError]:
        """Up to 5 LIMIT/MARKET orders in one request; each item is its order or the error the
        exchange gave for it (request order kept)."""
        encoded = json.dumps([{k: format_value(v) for k, v in o.items() if v is not None}
                              for o in orders], separators=(",", ":"))
        body = await self._rest.request("POST", "/fapi/v1/batchOrders",
                                        {"batchOrders": encoded})
        return [_batch_item(item) for item in body]

    async def all_orders(self, symbol: str, limit: int = 500) -> list[OrderResponse]:
        body = await self._rest.request("GET", "/fapi/v1/allOrders",
                                        {"symbol": symbol, "limit": limit})
        return [OrderResponse.from_json(r.data) for r in fields_of_list(body, "allOrders")]

    async def user_trades(self, symbol: str, start_time_ms: int | None = None,
                          limit: int = 500) -> list[dict[str, Any]]:
        """Fills of one symbol (newest window first on the exchange; ``startTime`` filters)."""
        body = await self._rest.request("GET", "/fapi/v1/userTrades",
                                        {"symbol": symbol, "startTime": start_time_ms,
                                         "limit": limit})
        return [dict(row) for row in body]

    async def orders_since(self, symbol: str, start_time_ms: int,
                           limit: int = 1000) -> list[OrderResponse]:
        """Orders of one symbol created from ``start_time_ms`` on (``GET /fapi/v1/allOrders``
        with ``startTime``, weight 5; the exchange keeps a 7-day window)."""
        body = await self._rest.request("GET", "/fapi/v1/allOrders",
                                        {"symbol": symbol, "startTime": start_time_ms,
                                         "limit": limit})
        return [OrderResponse.from_json(r.data) for r in fields_of_list(body, "allOrders")]

    async def order_trades(self, symbol: str, order_id: int,
                           limit: int = 1000) -> list[dict[str, Any]]:
        """The fills of one order (``GET /fapi/v1/userTrades?symbol=&orderId=``, weight 5), in
        trade-id order. No time window: the exchange filters by the order itself."""
        body = await self._rest.request("GET", "/fapi/v1/userTrades",
                                        {"symbol": symbol, "orderId": order_id,
                                         "limit": limit})
        rows = [r.data for r in fields_of_list(body, "userTrades")]
        return sorted((dict(row) for row in rows), key=lambda row: int(row.get("id") or 0))

    async def cancel_all_orders(self, symbol: str) -> None:
        """Every open order of a symbol — and its algo orders, which the exchange keeps apart."""
        await self._rest.request("DELETE", "/fapi/v1/allOpenOrders", {"symbol": symbol})
        await self._rest.request("DELETE", "/fapi/v1/algoOpenOrders", {"symbol": symbol})

    async def _setting(self, method: str, path: str, params: Params) -> bool:
        try:
            await self._rest.request(method, path, params)
        except OrderRejected as exc:
            if exc.code in NO_CHANGE_NEEDED:
                return False
            raise
        return True


def _batch_item(item: Any) -> OrderResponse | ExchangeError:
    if isinstance(item, dict) and "code" in item and "orderId" not in item:
        return OrderRejected(str(item.get("msg", "")), code=int(item["code"]))
    return OrderResponse.from_json(item)
