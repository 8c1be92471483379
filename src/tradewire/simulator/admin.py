"""Admin surface for tests and demos (no auth): accounts, mark prices, faults, clock.

- ``POST /sim/accounts`` ``{"balance": "10000"}`` (optional) -> ``{"api_key", "api_secret"}``;
  with ``{"api_key", "api_secret"}`` the account gets those credentials (idempotent: a restarted
  built-in simulator is handed back the accounts a database already knows)
- ``GET /sim/accounts/{api_key}`` -> balance, positions, open orders, open algo orders, and
  ``listening``: how many user-data sockets are subscribed to the account's active listenKey
- ``POST /sim/mark-price`` ``{"symbol", "price"}`` -> runs fills and triggers
- ``POST /sim/clock/advance`` ``{"ms": n}`` or ``{"to": epoch_ms}`` (ManualClock/SimClock
  only) -> plays attached price paths and expires due listenKeys on the way
- ``POST /sim/clock/speed`` ``{"speed": 60}`` (SimClock only): simulated time runs 60x
- ``POST /sim/paths`` (see ``handlers.build_path``): attach a scripted path, a seeded random
  walk or a kline CSV replay to a symbol; ``DELETE /sim/paths/{symbol}`` detaches it
- ``POST /sim/slippage`` ``{"bps", "symbol"?}``; ``POST /sim/liquidation`` ``{"enabled"}``
- ``POST /sim/bench/emit`` ``{"count": n}`` -> ``{"emitted": n}``: load generation — n balance
  ACCOUNT_UPDATE events round-robin over the accounts with a live listenKey
- ``POST /sim/bench/pace`` ``{"count": n, "rate": r}``, ``GET /sim/bench/pace``: the same events
  spread evenly at ``r`` per second by the simulator itself (``pacer.py``)
- ``POST /sim/limits/reset`` -> forgets weight and order counters, bans and connection attempts

Faults (``faults.py``; the same as ``runtime.faults`` from Python). ``api_key`` is optional
where shown ``?``: without it the fault applies to every account; with it, it must be known.
The answers are ``GET /sim/faults`` (what is armed), except for drop-connections.

- ``GET /sim/faults`` -> what is armed, per account (``"*"``: every account)
- ``POST /sim/faults/drop-connections`` ``{"api_key"?, "listen_key"?, "code"?: 1011}`` ->
  ``{"dropped": n}``: closes the sockets of a listenKey, of an account, or all
- ``POST /sim/faults/silence`` / ``.../unsilence`` ``{"api_key"}`` or ``{"listen_key"}``: the
  sockets stay open and get no events (those produced meanwhile are lost)
- ``POST /sim/faults/unknown-outcome``
  ``{"api_key"?, "count"?: 1, "code"?: -1000, "endpoints"?: ["order", "algoOrder"]}``: the next
  ``count`` placements are executed but answered 503 "Unknown error, please check your request
  or try again later."
- ``POST /sim/faults/throttle`` ``{"api_key"?, "count"?: 1, "endpoints"?: ["order"]}``: the next
  ``count`` placements are refused with 503 -1008 (reduceOnly/closePosition pass)
- ``POST /sim/faults/slow`` ``{"ms", "api_key"?}``: REST answers leave ``ms`` later (0 disarms)
- ``POST /sim/faults/hide-algos`` ``{"ms", "api_key"?, "count"?}``: algo orders placed from now
  on (the next ``count`` of them, or all) are not queryable for ``ms`` (engine clock)
- ``POST /sim/faults/clear`` -> disarms every fault
- Events produced while an account has no socket are never replayed: no call needed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tradewire.clock import ManualClock
from tradewire.simulator import handlers, views
from tradewire.simulator.errors import SimError
from tradewire.simulator.gateway import json_response
from tradewire.simulator.market import money
from tradewire.simulator.pacer import pace_routes
from tradewire.simulator.rest import balance_rows, position_rows
from tradewire.simulator.runtime import Runtime
from tradewire.simulator.stats import stats_routes


class AdminError(Exception):
    """A 400/404/409 answer ``{"error": message}``."""

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
        except ValueError as exc:  # a fault refused its arguments
            return json_response({"error": str(exc)}, 400)
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

    async def advance_clock(request: Request) -> Any:
        body = await _json_body(request)
        if not isinstance(engine.clock, ManualClock):
            raise AdminError(409, "the simulator runs on the system clock")
        return _engine_call(rt, handlers.admin_advance, body)

    async def reset_limits(request: Request) -> Any:
        rt.limits.reset()
        rt.connections.reset()
        return {"reset": True}

    return [
        _route(rt, "/sim/accounts", "POST", create_account),
        _route(rt, "/sim/accounts/{api_key}", "GET", show_account),
        _route(rt, "/sim/mark-price", "POST", mark_price),
        _route(rt, "/sim/clock/advance", "POST", advance_clock),
        *engine_routes(rt),
        _route(rt, "/sim/limits/reset", "POST", reset_limits),
        *fault_routes(rt),
        *stats_routes(rt),
        *pace_routes(rt),
    ]


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int:
    raw = body.get(name, default)
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise AdminError(400, f"{name} must be an integer")
    return raw


def _names(body: dict[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = body.get(name, list(default))
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise AdminError(400, f"{name} must be a list of strings")
    return tuple(raw)


async def _fault_target(rt: Runtime,
                        request: Request) -> tuple[dict[str, Any], str | None, str | None]:
    """The body, and the ``api_key`` (a known account) and ``listen_key`` it names."""
    body = await _json_body(request)
    api_key, listen_key = body.get("api_key"), body.get("listen_key")
    if api_key is not None and not (isinstance(api_key, str) and rt.engine.has_account(api_key)):
        raise AdminError(404, "unknown api_key")
    if listen_key is not None and not isinstance(listen_key, str):
        raise AdminError(400, "listen_key must be a string")
    return body, api_key, listen_key


def fault_routes(rt: Runtime) -> list[Route]:
    """``/sim/faults/*`` over ``rt.faults`` (bodies in the module docstring)."""
    faults = rt.faults

    async def target(request: Request) -> tuple[dict[str, Any], str | None, str | None]:
        return await _fault_target(rt, request)

    async def show(request: Request) -> Any:
        return faults.snapshot()

    async def drop(request: Request) -> Any:
        body, api_key, listen_key = await target(request)
        return {"dropped": faults.drop_connections(api_key, listen_key,
                                                   code=_int(body, "code", 1011))}

    async def silence(request: Request) -> Any:
        _, api_key, listen_key = await target(request)
        faults.silence(api_key, listen_key)
        return faults.snapshot()

    async def unsilence(request: Request) -> Any:
        _, api_key, listen_key = await target(request)
        faults.unsilence(api_key, listen_key)
        return faults.snapshot()

    async def unknown_outcome(request: Request) -> Any:
        body, api_key, _ = await target(request)
        faults.unknown_outcome(api_key, _int(body, "count", 1), code=_int(body, "code", -1000),
                               endpoints=_names(body, "endpoints", ("order", "algoOrder")))
        return faults.snapshot()

    async def throttle(request: Request) -> Any:
        body, api_key, _ = await target(request)
        faults.throttle(api_key, _int(body, "count", 1),
                        endpoints=_names(body, "endpoints", ("order",)))
        return faults.snapshot()

    async def slow(request: Request) -> Any:
        body, api_key, _ = await target(request)
        faults.slow(_int(body, "ms"), api_key)
        return faults.snapshot()

    async def hide_algos(request: Request) -> Any:
        body, api_key, _ = await target(request)
        count = None if body.get("count") is None else _int(body, "count")
        faults.hide_algos(_int(body, "ms"), api_key, count)
        return faults.snapshot()

    async def clear(request: Request) -> Any:
        faults.clear()
        return faults.snapshot()

    return [
        _route(rt, "/sim/faults", "GET", show),
        _route(rt, "/sim/faults/drop-connections", "POST", drop),
        _route(rt, "/sim/faults/silence", "POST", silence),
        _route(rt, "/sim/faults/unsilence", "POST", unsilence),
        _route(rt, "/sim/faults/unknown-outcome", "POST", unknown_outcome),
        _route(rt, "/sim/faults/throttle", "POST", throttle),
        _route(rt, "/sim/faults/slow", "POST", slow),
        _route(rt, "/sim/faults/hide-algos", "POST", hide_algos),
        _route(rt, "/sim/faults/clear", "POST", clear),
    ]


EngineHandler = Callable[[Any, Mapping[str, Any]], Any]


def _engine_call(rt: Runtime, handler: EngineHandler, body: dict[str, Any]) -> Any:
    try:
        return handler(rt.engine, body)
    except (ValueError, KeyError, TypeError) as exc:  # a bad body: say what is wrong
        raise AdminError(400, str(exc)) from None


def engine_routes(rt: Runtime) -> list[Route]:
    """Market and time controls (``handlers.admin_*``): clock speed, slippage, price paths,
    liquidation on/off."""

    def post(path: str, handler: EngineHandler) -> Route:
        async def call(request: Request) -> Any:
            return _engine_call(rt, handler, await _json_body(request))

        return _route(rt, path, "POST", call)

    async def detach_path(request: Request) -> Any:
        rt.engine.detach_path(request.path_params["symbol"])
        return {"detached": request.path_params["symbol"]}

    return [
        post("/sim/clock/speed", handlers.admin_clock_speed),
        post("/sim/slippage", handlers.admin_slippage),
        post("/sim/paths", handlers.admin_attach_path),
        _route(rt, "/sim/paths/{symbol}", "DELETE", detach_path),
        post("/sim/liquidation", handlers.admin_liquidation),
        post("/sim/bench/emit", handlers.admin_emit),
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
