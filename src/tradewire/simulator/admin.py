"""Admin surface for tests and demos (no auth): accounts, mark prices, faults, clock.

- ``POST /sim/accounts`` ``{"balance": "10000"}`` (optional) -> ``{"api_key", "api_secret"}``;
  with ``{"api_key", "api_secret"}`` the account gets those credentials (idempotent: a restarted
  built-in simulator is handed back the accounts a database already knows)
- ``GET /sim/accounts/{api_key}`` -> balance, positions, open orders, open algo orders, and
  ``listening``: how many user-data sockets are subscribed to the account's active listenKey
- ``POST /sim/mark-price`` ``{"symbol", "price"}`` -> runs fills and triggers
- ``POST /sim/faults/drop-connections`` ``{"api_key": ..}`` (optional) -> closes user sockets
- ``POST /sim/clock/advance`` ``{"ms": n}`` (ManualClock only) -> expires due listenKeys
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tradewire.clock import ManualClock
from tradewire.simulator import views
from tradewire.simulator.errors import SimError
from tradewire.simulator.gateway import json_response
from tradewire.simulator.market import money
from tradewire.simulator.rest import balance_rows, position_rows
from tradewire.simulator.runtime import Runtime


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise AdminError(400, "body is not JSON") from None
    if not isinstance(body, dict):
        raise AdminError(400, "body must be a JSON object")
    return body


def _decimal(body: dict[str, Any], name: str, default: str | None = None) -> Decimal:
    raw = body.get(name, default)
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        raise AdminError(400, f"{name} must be a decimal") from None


AdminHandler = Callable[[Request], Awaitable[Any]]


def _route(rt: Runtime, path: str, method: str, handler: AdminHandler) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request)
        except AdminError as exc:
            return json_response({"error": str(exc)}, exc.status)
        except SimError as exc:
            return json_response(exc.body(), exc.http_status)
        finally:
            rt.publish()
        return json_response(result)

    return Route(path, endpoint, methods=[method])


def admin_routes(rt: Runtime) -> list[Route]:
    engine = rt.engine

    async def create_account(request: Request) -> Any:
        body = await _json_body(request)
        given = body.get("api_key"), body.get("api_secret")
        if any(given) and not all(isinstance(v, str) and len(v) >= 8 for v in given):
            raise AdminError(400, "api_key and api_secret must both be strings of 8+ chars")
        account = engine.create_account(
            _decimal(body, "balance", "10000"),
            api_key=given[0] or None, api_secret=given[1] or None,
        )
        return {"api_key": account.api_key, "api_secret": account.api_secret}

    async def show_account(request: Request) -> Any:
        api_key = request.path_params["api_key"]
        if not engine.has_account(api_key):
            raise AdminError(404, "unknown api_key")
        return account_snapshot(rt, api_key)

    async def mark_price(request: Request) -> Any:
        body = await _json_body(request)
        symbol = str(body.get("symbol", ""))
        engine.set_mark_price(symbol, _decimal(body, "price"))
        return {"symbol": symbol, "price": str(body["price"])}

    async def drop_connections(request: Request) -> Any:
        api_key = (await _json_body(request)).get("api_key")
        keys = engine.listen_keys_of(str(api_key)) if api_key else None
        return {"dropped": rt.hub.drop(keys)}

    async def advance_clock(request: Request) -> Any:
        body = await _json_body(request)
        clock = engine.clock
        if not isinstance(clock, ManualClock):
            raise AdminError(409, "the simulator runs on the system clock")
        clock.advance(int(body.get("ms", 0)))
        rt.tick()
        return {"now": clock.now_ms()}

    return [
        _route(rt, "/sim/accounts", "POST", create_account),
        _route(rt, "/sim/accounts/{api_key}", "GET", show_account),
        _route(rt, "/sim/mark-price", "POST", mark_price),
        _route(rt, "/sim/faults/drop-connections", "POST", drop_connections),
        _route(rt, "/sim/clock/advance", "POST", advance_clock),
    ]


def account_snapshot(rt: Runtime, api_key: str) -> dict[str, Any]:
    """Everything a test asserts on, in the exchange's REST shapes."""
    engine = rt.engine
    account = engine.account(api_key)
    return {
        "api_key": api_key,
        "balance": money(account.wallet),
        "available_balance": money(engine.available_balance(api_key)),
        "balances": balance_rows(rt, api_key),
        "positions": [row for row in position_rows(rt, api_key, None, version=3)
                      if Decimal(row["positionAmt"])],
        "open_orders": [views.order_body(o, engine.spec(o.symbol), with_time=True)
                        for o in engine.open_orders(api_key)],
        "open_algo_orders": [views.algo_body(a, engine.spec(a.symbol))
                             for a in engine.open_algo_orders(api_key)],
        "leverage": dict(account.leverage),
        "listen_key": engine.active_listen_key(api_key),
        "listening": rt.hub.listeners(engine.active_listen_key(api_key)),
    }
