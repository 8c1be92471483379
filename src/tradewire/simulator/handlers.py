"""Handler logic for the REST and admin endpoints the engine's newer features need.

The app layer wires these (each takes the engine, and the caller's API key and request
parameters, or the admin JSON body, and returns the JSON answer; ``SimError`` as usual):

REST (SIGNED):
- ``POST /fapi/v1/positionSide/dual`` ``dualSidePosition`` -> ``set_position_mode``
- ``GET /fapi/v1/positionSide/dual`` -> ``get_position_mode`` (weight 30 on the exchange)
- ``POST /fapi/v1/marginType`` ``symbol``, ``marginType`` -> ``set_margin_type``
- ``POST /fapi/v1/batchOrders`` ``batchOrders`` -> ``batch_orders`` (weight 5, order counters
  5 on 10 s and 1 on 1 min)
- ``GET /fapi/v2|v3/positionRisk`` -> ``position_rows``: one row per position side in hedge
  mode, isolated margin fields, tiered maintenance margin and liquidation price

Admin (no auth; a bad body raises ``ValueError`` -> 400):
- ``POST /sim/slippage`` ``{"bps", "symbol"?}`` -> ``admin_slippage``
- ``POST /sim/paths`` ``{"symbol", "kind", ...}`` -> ``admin_attach_path``;
  ``DELETE /sim/paths/{symbol}`` -> ``Engine.detach_path``
- ``POST /sim/clock/advance`` ``{"ms"}`` or ``{"to"}`` -> ``admin_advance`` (applies due path
  steps, then expires listenKeys: supersedes ``clock.advance`` + ``tick``)
- ``POST /sim/clock/speed`` ``{"speed"}`` -> ``admin_clock_speed`` (``SimClock`` only)
- ``POST /sim/liquidation`` ``{"enabled"}`` -> ``admin_liquidation``
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from tradewire.simulator import errors as err
from tradewire.simulator import ledger, views
from tradewire.simulator import params as p
from tradewire.simulator.engine import Engine
from tradewire.simulator.model import Order
from tradewire.simulator.paths import KlineReplay, PricePath, RandomWalk, ScriptedPath
from tradewire.simulator.simclock import SimClock

Body = dict[str, Any]
SUCCESS: Body = {"code": 200, "msg": "success"}


# -- REST ----------------------------------------------------------------------------------

def set_position_mode(engine: Engine, api_key: str, params: p.Params) -> Body:
    if "dualSidePosition" not in params:
        raise err.missing("dualSidePosition")
    engine.set_position_mode(api_key, p.boolean(params, "dualSidePosition"))
    return dict(SUCCESS)


def get_position_mode(engine: Engine, api_key: str, params: p.Params) -> Body:
    return {"dualSidePosition": engine.position_mode(api_key)}


def set_margin_type(engine: Engine, api_key: str, params: p.Params) -> Body:
    symbol = p.required(params, "symbol")
    margin_type = p.one_of(params, "marginType", frozenset({"ISOLATED", "CROSSED"}))
    engine.set_margin_type(api_key, symbol, margin_type)
    return dict(SUCCESS)


def batch_orders(engine: Engine, api_key: str, params: p.Params) -> list[Body]:
    """Each item's order object, or its ``{code, msg}``, in request order."""
    results = engine.place_batch(api_key, p.parse_batch(params))
    return [views.order_body(r, engine.spec(r.symbol)) if isinstance(r, Order) else r.body()
            for r in results]


def position_rows(engine: Engine, api_key: str, symbol: str | None, *,
                  version: int) -> list[Body]:
    """v2: every symbol (both sides in hedge mode); v3: positions that are open or have open
    orders on their side."""
    account = engine.account(api_key)
    marks = {s: engine.mark_price(s) for s in engine.symbols}
    rows = []
    for sym in [symbol] if symbol else engine.symbols:
        spec, mark, leverage = engine.spec(sym), marks[sym], account.leverage_of(sym)
        isolated = account.is_isolated(sym)
        orders = engine.open_orders(api_key, sym)
        for position in account.positions_of(sym):
            liquidation = ledger.liquidation_price(account, position, marks)
            if version == 2:
                rows.append(views.position_v2(position, spec, mark, leverage,
                                              isolated=isolated, liquidation=liquidation))
                continue
            mine = [o for o in orders if o.position_side == position.side]
            if position.amount or mine:
                margin = sum((ledger.order_margin(account, o) for o in mine), Decimal(0))
                rows.append(views.position_v3(position, spec, mark, leverage, margin,
                                              isolated=isolated, liquidation=liquidation))
    return rows


# -- admin ---------------------------------------------------------------------------------

def _decimal(body: Mapping[str, Any], name: str) -> Decimal:
    try:
        return Decimal(str(body[name]))
    except (KeyError, InvalidOperation):
        raise ValueError(f"{name} must be a decimal") from None


def _int(body: Mapping[str, Any], name: str, default: int | None = None) -> int:
    raw = body.get(name, default)
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"{name} must be an integer")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer") from None


def admin_slippage(engine: Engine, body: Mapping[str, Any]) -> Body:
    symbol = body.get("symbol") or None
    bps = _decimal(body, "bps")
    engine.set_slippage(bps, None if symbol is None else str(symbol))
    return {"symbol": symbol, "bps": str(bps)}


def build_path(body: Mapping[str, Any]) -> PricePath:
    """``kind``: ``scripted`` (``steps``: [[offset_ms, price], ...]), ``random_walk``
    (``seed``, ``volatility`` per step, ``step_ms``, ``drift``?, ``count``?) or ``klines``
    (``csv``: rows of open time, open, high, low, close; ``interval_ms``?)."""
    kind = body.get("kind")
    try:
        if kind == "scripted":
            return ScriptedPath([(int(o), Decimal(str(v))) for o, v in body["steps"]])
        if kind == "random_walk":
            count = body.get("count")
            return RandomWalk(seed=_int(body, "seed"), volatility=float(body["volatility"]),
                              step_ms=_int(body, "step_ms"), drift=float(body.get("drift", 0)),
                              count=None if count is None else int(count))
        if kind == "klines":
            interval = body.get("interval_ms")
            return KlineReplay.from_csv(str(body["csv"]),
                                        None if interval is None else int(interval))
    except (KeyError, TypeError, InvalidOperation) as exc:
        raise ValueError(f"bad {kind} path: {exc!r}") from None
    raise ValueError("kind must be scripted, random_walk or klines")


def admin_attach_path(engine: Engine, body: Mapping[str, Any]) -> Body:
    symbol = str(body.get("symbol", ""))
    start = body.get("start_ms")
    engine.attach_path(symbol, build_path(body),
                       start_ms=None if start is None else _int(body, "start_ms"))
    return {"symbol": symbol, "kind": body.get("kind"),
            "next_step_ms": engine.timeline.schedule.next_time()}


def admin_advance(engine: Engine, body: Mapping[str, Any]) -> Body:
    if "to" in body:
        engine.advance_to(_int(body, "to"))
    else:
        engine.advance(_int(body, "ms", 0))
    return {"now": engine.clock.now_ms()}


def admin_clock_speed(engine: Engine, body: Mapping[str, Any]) -> Body:
    clock = engine.clock
    if not isinstance(clock, SimClock):
        raise ValueError("the simulator does not run on a SimClock")
    clock.set_speed(float(_decimal(body, "speed")))
    return {"now": clock.now_ms(), "speed": clock.speed}


def admin_liquidation(engine: Engine, body: Mapping[str, Any]) -> Body:
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise ValueError("enabled must be true or false")
    engine.liquidation = enabled
    return {"enabled": enabled}


MAX_EMIT = 100_000


def admin_emit(engine: Engine, body: Mapping[str, Any]) -> Body:
    """``POST /sim/bench/emit {"count": n}``: n synthetic events for load tests."""
    count = _int(body, "count", 1)
    if not 0 <= count <= MAX_EMIT:
        raise ValueError(f"count must be 0..{MAX_EMIT}")
    return {"emitted": engine.emit_synthetic(count)}
