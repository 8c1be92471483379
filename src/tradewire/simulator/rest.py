"""The exchange's REST endpoints (reference §5), as handlers over the engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tradewire.simulator import errors as err
from tradewire.simulator import handlers, views
from tradewire.simulator import params as p
from tradewire.simulator.faults import ALGO_ORDER, ORDER
from tradewire.simulator.gateway import Call, Endpoint, Params
from tradewire.simulator.model import AlgoOrder
from tradewire.simulator.runtime import Runtime

_T = TypeVar("_T")
CANCEL_ALL_DONE = {"code": 200, "msg": "The operation of cancel all open order is done."}


def _per_symbol(with_symbol: int, without: int) -> Callable[[Params], int]:
    return lambda params: with_symbol if params.get("symbol") else without


def _window(rows: Sequence[_T], params: Params, time_of: Callable[[_T], int]) -> list[_T]:
    """startTime/endTime/limit filters of the history queries."""
    start, end = p.integer(params, "startTime"), p.integer(params, "endTime")
    limit = min(p.integer(params, "limit") or 500, 1000)
    kept = [r for r in rows if (start is None or time_of(r) >= start)
            and (end is None or time_of(r) <= end)]
    return kept[-limit:] if start is None else kept[:limit]


class Rest:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.engine = rt.engine

    # -- market data ---------------------------------------------------------------------

    def time(self, call: Call) -> Any:
        return {"serverTime": self.rt.now()}

    def exchange_info(self, call: Call) -> Any:
        return self.engine.exchange_info()

    def order_rate_limits(self, call: Call) -> Any:
        """``GET /fapi/v1/rateLimit/order``: the account's order limits (the configured ones)."""
        config = self.rt.limits.config
        return [
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
             "limit": config.orders_per_10s},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
             "limit": config.orders_per_minute},
        ]

    def _symbols(self, params: Params) -> list[str]:
        symbol = params.get("symbol")
        if symbol:
            self.engine.spec(symbol)
            return [symbol]
        return self.engine.symbols

    def premium_index(self, call: Call) -> Any:
        rows = [self._premium(s) for s in self._symbols(call.params)]
        return rows[0] if call.params.get("symbol") else rows

    def _premium(self, symbol: str) -> dict[str, Any]:
        mark = self.engine.spec(symbol).price_str(self.engine.mark_price(symbol))
        now = self.rt.now()
        return {"symbol": symbol, "markPrice": mark, "indexPrice": mark,
                "estimatedSettlePrice": mark, "lastFundingRate": "0.00010000",
                "interestRate": "0.00010000", "nextFundingTime": (now // 28_800_000 + 1)
                * 28_800_000, "time": now}

    def ticker_price(self, call: Call) -> Any:
        rows = [{"symbol": s, "price": self.engine.spec(s).price_str(self.engine.mark_price(s)),
                 "time": self.rt.now()} for s in self._symbols(call.params)]
        return rows[0] if call.params.get("symbol") else rows

    # -- account settings and listenKey --------------------------------------------------

    def leverage(self, call: Call) -> Any:
        symbol = p.required(call.params, "symbol")
        value = p.integer(call.params, "leverage")
        if value is None:
            raise err.missing("leverage")
        self.engine.set_leverage(call.api_key, symbol, value)
        return {"leverage": value, "maxNotionalValue": str(5_000_000 * 20 // value),
                "symbol": symbol}

    def listen_key_start(self, call: Call) -> Any:
        return {"listenKey": self.engine.start_listen_key(call.api_key)}

    def listen_key_keepalive(self, call: Call) -> Any:
        return {"listenKey": self.engine.keepalive_listen_key(call.api_key)}

    def listen_key_close(self, call: Call) -> Any:
        self.engine.close_listen_key(call.api_key)
        return {}

    # -- orders --------------------------------------------------------------------------

    def new_order(self, call: Call) -> Any:
        order = self.engine.place_order(call.api_key, p.parse_order(call.params))
        return views.order_body(order, self.engine.spec(order.symbol))

    def _order_ref(self, params: Params) -> tuple[str, int | None, str | None]:
        return (p.required(params, "symbol"), p.integer(params, "orderId"),
                params.get("origClientOrderId"))

    def get_order(self, call: Call) -> Any:
        order = self.engine.get_order(call.api_key, *self._order_ref(call.params))
        return views.order_body(order, self.engine.spec(order.symbol), with_time=True)

    def cancel_order(self, call: Call) -> Any:
        order = self.engine.cancel_order(call.api_key, *self._order_ref(call.params))
        return views.order_body(order, self.engine.spec(order.symbol))

    def cancel_all(self, call: Call) -> Any:
        self.engine.cancel_all_orders(call.api_key, p.required(call.params, "symbol"))
        return CANCEL_ALL_DONE

    def open_orders(self, call: Call) -> Any:
        orders = self.engine.open_orders(call.api_key, call.params.get("symbol") or None)
        return [views.order_body(o, self.engine.spec(o.symbol), with_time=True) for o in orders]

    def all_orders(self, call: Call) -> Any:
        symbol = p.required(call.params, "symbol")
        from_id = p.integer(call.params, "orderId") or 0
        orders = [o for o in self.engine.all_orders(call.api_key, symbol) if o.order_id >= from_id]
        spec = self.engine.spec(symbol)
        kept = _window(orders, call.params, lambda o: o.time)
        return [views.order_body(o, spec, with_time=True) for o in kept]

    def user_trades(self, call: Call) -> Any:
        symbol = p.required(call.params, "symbol")
        order_id, from_id = p.integer(call.params, "orderId"), p.integer(call.params, "fromId")
        trades = [t for t in self.engine.user_trades(call.api_key, symbol)
                  if (order_id is None or t.order_id == order_id)
                  and (from_id is None or t.trade_id >= from_id)]
        spec = self.engine.spec(symbol)
        return [views.trade_body(t, spec) for t in _window(trades, call.params, lambda t: t.time)]

    # -- algo orders ---------------------------------------------------------------------

    def new_algo(self, call: Call) -> Any:
        algo = self.engine.place_algo_order(call.api_key, p.parse_algo(call.params))
        self.rt.faults.algo_placed(call.api_key, algo.algo_id, self.rt.now())
        return views.algo_body(algo, self.engine.spec(algo.symbol))

    def _visible(self, algos: Sequence[AlgoOrder]) -> list[AlgoOrder]:
        """Without the algo orders a fault keeps unqueryable for now."""
        now = self.rt.now()
        return [a for a in algos if not self.rt.faults.algo_hidden(a.algo_id, now)]

    def _algo_ref(self, params: Params) -> tuple[int | None, str | None]:
        return p.integer(params, "algoId"), params.get("clientAlgoId")

    def get_algo(self, call: Call) -> Any:
        algo = self.engine.get_algo_order(call.api_key, *self._algo_ref(call.params))
        if not self._visible([algo]):
            raise err.reject(err.ORDER_NOT_FOUND)
        return views.algo_body(algo, self.engine.spec(algo.symbol))

    def cancel_algo(self, call: Call) -> Any:
        algo = self.engine.cancel_algo_order(call.api_key, *self._algo_ref(call.params))
        return views.algo_cancel_body(algo)

    def cancel_all_algos(self, call: Call) -> Any:
        self.engine.cancel_all_algo_orders(call.api_key, p.required(call.params, "symbol"))
        return CANCEL_ALL_DONE

    def open_algos(self, call: Call) -> Any:
        algos = self._visible(
            self.engine.open_algo_orders(call.api_key, call.params.get("symbol") or None))
        return [views.algo_body(a, self.engine.spec(a.symbol)) for a in algos]

    def all_algos(self, call: Call) -> Any:
        symbol = p.required(call.params, "symbol")
        spec = self.engine.spec(symbol)
        algos = _window(self._visible(self.engine.all_algo_orders(call.api_key, symbol)),
                        call.params, lambda a: a.create_time)
        return [views.algo_body(a, spec) for a in algos]

    # -- positions and balance -----------------------------------------------------------

    def position_risk_v3(self, call: Call) -> Any:
        return position_rows(self.rt, call.api_key, call.params.get("symbol"), version=3)

    def position_risk_v2(self, call: Call) -> Any:
        return position_rows(self.rt, call.api_key, call.params.get("symbol"), version=2)

    def balance(self, call: Call) -> Any:
        return balance_rows(self.rt, call.api_key)


def position_rows(rt: Runtime, api_key: str, symbol: str | None, *,
                  version: int) -> list[dict[str, Any]]:
    """v2: every symbol; v3: symbols with a position or open orders (per side in hedge mode)."""
    return handlers.position_rows(rt.engine, api_key, symbol, version=version)


def balance_rows(rt: Runtime, api_key: str) -> list[dict[str, Any]]:
    engine = rt.engine
    return views.balance_body(engine.account(api_key), engine.unrealized_pnl(api_key),
                              engine.available_balance(api_key))


def endpoints(rt: Runtime) -> list[Endpoint]:
    r = Rest(rt)
    return [
        Endpoint("GET", "/fapi/v1/ping", "NONE", lambda call: {}),
        Endpoint("GET", "/fapi/v1/time", "NONE", r.time),
        Endpoint("GET", "/fapi/v1/exchangeInfo", "NONE", r.exchange_info),
        Endpoint("GET", "/fapi/v1/premiumIndex", "NONE", r.premium_index, _per_symbol(1, 10)),
        Endpoint("GET", "/fapi/v1/ticker/price", "NONE", r.ticker_price, _per_symbol(1, 2)),
        Endpoint("GET", "/fapi/v2/ticker/price", "NONE", r.ticker_price, _per_symbol(1, 2)),
        Endpoint("POST", "/fapi/v1/leverage", "SIGNED", r.leverage),
        Endpoint("GET", "/fapi/v1/rateLimit/order", "SIGNED", r.order_rate_limits),
        Endpoint("POST", "/fapi/v1/listenKey", "USER_STREAM", r.listen_key_start),
        Endpoint("PUT", "/fapi/v1/listenKey", "USER_STREAM", r.listen_key_keepalive),
        Endpoint("DELETE", "/fapi/v1/listenKey", "USER_STREAM", r.listen_key_close),
        Endpoint("POST", "/fapi/v1/order", "SIGNED", r.new_order, 0, (1, 1), ORDER),
        Endpoint("GET", "/fapi/v1/order", "SIGNED", r.get_order),
        Endpoint("DELETE", "/fapi/v1/order", "SIGNED", r.cancel_order),
        Endpoint("DELETE", "/fapi/v1/allOpenOrders", "SIGNED", r.cancel_all),
        Endpoint("GET", "/fapi/v1/openOrders", "SIGNED", r.open_orders, _per_symbol(1, 40)),
        Endpoint("GET", "/fapi/v1/allOrders", "SIGNED", r.all_orders, 5),
        Endpoint("GET", "/fapi/v1/userTrades", "SIGNED", r.user_trades, 5),
        Endpoint("POST", "/fapi/v1/algoOrder", "SIGNED", r.new_algo, 0, (1, 1), ALGO_ORDER),
        Endpoint("GET", "/fapi/v1/algoOrder", "SIGNED", r.get_algo),
        Endpoint("DELETE", "/fapi/v1/algoOrder", "SIGNED", r.cancel_algo),
        Endpoint("DELETE", "/fapi/v1/algoOpenOrders", "SIGNED", r.cancel_all_algos),
        Endpoint("GET", "/fapi/v1/openAlgoOrders", "SIGNED", r.open_algos, _per_symbol(1, 40)),
        Endpoint("GET", "/fapi/v1/allAlgoOrders", "SIGNED", r.all_algos, 5),
        Endpoint("GET", "/fapi/v2/positionRisk", "SIGNED", r.position_risk_v2, 5),
        Endpoint("GET", "/fapi/v3/positionRisk", "SIGNED", r.position_risk_v3, 5),
        Endpoint("GET", "/fapi/v2/balance", "SIGNED", r.balance, 5),
        Endpoint("GET", "/fapi/v3/balance", "SIGNED", r.balance, 5),
        Endpoint("POST", "/fapi/v1/positionSide/dual", "SIGNED",
                 lambda c: handlers.set_position_mode(rt.engine, c.api_key, c.params)),
        Endpoint("GET", "/fapi/v1/positionSide/dual", "SIGNED",
                 lambda c: handlers.get_position_mode(rt.engine, c.api_key, c.params), 30),
        Endpoint("POST", "/fapi/v1/marginType", "SIGNED",
                 lambda c: handlers.set_margin_type(rt.engine, c.api_key, c.params)),
        Endpoint("POST", "/fapi/v1/batchOrders", "SIGNED",
                 lambda c: handlers.batch_orders(rt.engine, c.api_key, c.params), 5, (5, 1)),
    ]

