"""The engine's shared state: clock, symbols, marks, accounts, order books, ids and the outbox."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NamedTuple

from tradewire.clock import Clock
from tradewire.simulator import errors as err
from tradewire.simulator.listenkeys import ListenKeys
from tradewire.simulator.market import DEFAULT_MARKS, SymbolSpec, parse_symbols
from tradewire.simulator.model import Account, AlgoOrder, Order, Trade

ORDER_ID_START = 8_000_000_001
ALGO_ID_START = 4_000_000_000_000_001
TRADE_ID_START = 6_000_000_001


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
