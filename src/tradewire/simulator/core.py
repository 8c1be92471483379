"""The engine's shared state: clock, symbols, marks, accounts, order books, ids and the outbox."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from tradewire.clock import Clock
from tradewire.simulator import errors as err
from tradewire.simulator.listenkeys import ListenKeys
from tradewire.simulator.market import DEFAULT_MARKS, SymbolSpec, parse_symbols
from tradewire.simulator.model import Account, AlgoOrder, Order, Trade

ORDER_ID_START = 8_000_000_001
ALGO_ID_START = 4_000_000_000_000_001
TRADE_ID_START = 6_000_000_001

_T = TypeVar("_T", Order, AlgoOrder)


class Delivery(NamedTuple):
    """One event for one account; ``listen_key``: the account's live key then (None: none)."""

    api_key: str
    listen_key: str | None
    payload: dict[str, Any]


class Core:
    """State shared by the matching engine and the algo service. No I/O."""

    def __init__(self, clock: Clock, exchange_info: dict[str, Any],
                 listen_keys: ListenKeys) -> None:
        self.clock = clock
        self.exchange_info = exchange_info
        self.specs: dict[str, SymbolSpec] = parse_symbols(exchange_info)
        self.marks: dict[str, Decimal] = {
            s: DEFAULT_MARKS.get(s, Decimal(1)) for s in self.specs
        }
        self.keys = listen_keys
        self.accounts: dict[str, Account] = {}
        self.orders: dict[tuple[str, int], Order] = {}
        self.orders_of: dict[str, list[Order]] = defaultdict(list)
        self.open_orders: dict[str, dict[int, Order]] = defaultdict(dict)
        self.algos_of: dict[str, list[AlgoOrder]] = defaultdict(list)
        self.open_algos: dict[str, dict[int, AlgoOrder]] = defaultdict(dict)
        self.trades_of: dict[str, list[Trade]] = defaultdict(list)
        self.used_client_ids: dict[str, set[str]] = defaultdict(set)
        self.used_algo_ids: dict[str, set[str]] = defaultdict(set)
        self._order_ids = {s: itertools.count(ORDER_ID_START) for s in self.specs}
        self._algo_ids = itertools.count(ALGO_ID_START)  # unique: algoId alone finds an order
        self._trade_ids = {s: itertools.count(TRADE_ID_START) for s in self.specs}
        self.outbox: list[Delivery] = []
        self.slippage_bps: dict[str | None, Decimal] = {}  # symbol (None: every symbol) -> bps

    def slippage_of(self, symbol: str) -> Decimal:
        """Taker slippage in basis points: the symbol's own, else the global one, else 0."""
        return self.slippage_bps.get(symbol, self.slippage_bps.get(None, Decimal(0)))

    def now(self) -> int:
        return self.clock.now_ms()

    def spec(self, symbol: str) -> SymbolSpec:
        try:
            return self.specs[symbol]
        except KeyError:
            raise err.reject(err.INVALID_SYMBOL) from None

    def account(self, api_key: str) -> Account:
        try:
            return self.accounts[api_key]
        except KeyError:
            raise err.unauthorized(err.API_KEY_INVALID) from None

    def emit(self, api_key: str, payload: dict[str, Any]) -> None:
        self.outbox.append(Delivery(api_key, self.keys.active(api_key, self.now()), payload))

    def next_order_id(self, symbol: str) -> int:
        return next(self._order_ids[symbol])

    def next_algo_id(self) -> int:
        return next(self._algo_ids)

    def next_trade_id(self, symbol: str) -> int:
        return next(self._trade_ids[symbol])

    def add_order(self, order: Order) -> None:
        self.orders[(order.symbol, order.order_id)] = order
        self.orders_of[order.api_key].append(order)
        self.open_orders[order.symbol][order.order_id] = order

    def close_order(self, order: Order) -> None:
        self.open_orders[order.symbol].pop(order.order_id, None)

    def add_algo(self, algo: AlgoOrder) -> None:
        self.algos_of[algo.api_key].append(algo)
        self.open_algos[algo.symbol][algo.algo_id] = algo

    def close_algo(self, algo: AlgoOrder) -> None:
        self.open_algos[algo.symbol].pop(algo.algo_id, None)

    def account_open_orders(self, api_key: str, symbol: str | None = None) -> Iterator[Order]:
        symbols = [symbol] if symbol else list(self.open_orders)
        for sym in symbols:
            yield from (o for o in self.open_orders[sym].values() if o.api_key == api_key)

    def account_open_algos(self, api_key: str, symbol: str | None = None) -> Iterator[AlgoOrder]:
        symbols = [symbol] if symbol else list(self.open_algos)
        for sym in symbols:
            yield from (a for a in self.open_algos[sym].values() if a.api_key == api_key)

    def open_count(self, api_key: str, symbol: str) -> int:
        return (sum(1 for _ in self.account_open_orders(api_key, symbol))
                + sum(1 for _ in self.account_open_algos(api_key, symbol)))

    def find_order(self, api_key: str, symbol: str, order_id: int | None,
                   client_order_id: str | None) -> Order | None:
        """By orderId, or by client id (the open one, else the latest)."""
        self.account(api_key)
        self.spec(symbol)
        if order_id is None and not client_order_id:
            raise _need_one_of("orderId", "origClientOrderId")
        if order_id is not None:
            order = self.orders.get((symbol, order_id))
            return order if order is not None and order.api_key == api_key else None
        matches = [o for o in self.orders_of[api_key]
                   if o.symbol == symbol and o.client_order_id == client_order_id]
        return _prefer_open(matches)

    def find_algo(self, api_key: str, algo_id: int | None,
                  client_algo_id: str | None) -> AlgoOrder | None:
        self.account(api_key)
        if algo_id is None and not client_algo_id:
            raise _need_one_of("algoId", "clientAlgoId")
        found = [a for a in self.algos_of[api_key]
                 if (a.algo_id == algo_id if algo_id is not None
                     else a.client_algo_id == client_algo_id)]
        return _prefer_open(found)


def _need_one_of(first: str, second: str) -> err.SimError:
    return err.bad(-1102, f"Param '{first}' or '{second}' must be sent, but both were empty/null!")


def _prefer_open(found: list[_T]) -> _T | None:
    """The latest open one, else the latest one."""
    open_ones = [item for item in found if item.is_open]
    listed = open_ones or found
    return listed[-1] if listed else None
