"""The simulated exchange: a pure, clock-driven engine (no I/O, no asyncio).

Every mutating call appends the user-data events it caused to an outbox, in the exchange's
order; the adapter drains it with ``drain_events()`` and routes each ``Delivery`` to the sockets
subscribed to its ``listen_key``. Errors are raised as ``SimError(http_status, code, msg)``.

Event order (reference §4.8):

- MARKET placement: ORDER_TRADE_UPDATE NEW, ACCOUNT_UPDATE, TRADE_LITE, ORDER_TRADE_UPDATE TRADE.
- Algo placement: ALGO_UPDATE NEW. Cancels: ORDER_TRADE_UPDATE CANCELED / ALGO_UPDATE CANCELED.
- Triggered stop: ALGO_UPDATE TRIGGERING, ALGO_UPDATE TRIGGERED, ORDER_TRADE_UPDATE NEW,
  ACCOUNT_UPDATE, TRADE_LITE, ORDER_TRADE_UPDATE TRADE, ALGO_UPDATE FINISHED (then EXPIRED for
  closePosition siblings when the position went flat).
- Liquidation (``liquidation``): the symbol's orders EXPIRED, algo orders EXPIRED, then the
  LIQUIDATION order: ORDER_TRADE_UPDATE NEW, ACCOUNT_UPDATE, ORDER_TRADE_UPDATE CALCULATED.

A mark move (``set_mark_price``, or a step of an attached price path applied by
``advance_to``) fills crossed LIMIT orders, then triggers algo orders, then liquidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from tradewire.clock import Clock, SystemClock
from tradewire.simulator import errors as err
from tradewire.simulator import events, hedge, ledger, rejects
from tradewire.simulator.algos import AlgoService
from tradewire.simulator.core import Core, Delivery
from tradewire.simulator.errors import SimError
from tradewire.simulator.liquidation import Liquidator
from tradewire.simulator.listenkeys import LISTEN_KEY_TTL_MS, ListenKeys
from tradewire.simulator.market import SymbolSpec, load_exchange_info
from tradewire.simulator.matching import Matching
from tradewire.simulator.model import Account, AlgoOrder, Order, Position, Trade, random_token
from tradewire.simulator.params import AlgoRequest, OrderRequest
from tradewire.simulator.paths import PricePath
from tradewire.simulator.simclock import Timeline

MAX_BATCH_ORDERS = 5

__all__ = ["Delivery", "Engine", "SimError"]


class Engine:
    """Accounts, symbols, mark prices, orders, algo orders and listenKeys of one exchange."""

    def __init__(self, clock: Clock | None = None, *, exchange_info: dict[str, Any] | None = None,
                 listen_key_ttl_ms: int = LISTEN_KEY_TTL_MS) -> None:
        self.clock: Clock = clock or SystemClock()
        info = exchange_info if exchange_info is not None else load_exchange_info()
        self._core = Core(self.clock, info, ListenKeys(listen_key_ttl_ms))
        self._matching = Matching(self._core)
        self._algos = AlgoService(self._core, self._matching)
        self._liquidator = Liquidator(self._core, self._matching, self._algos)
        self.timeline = Timeline(self.clock, self._path_step, self.tick)
        self._emit_turn = 0

    # -- accounts and market -------------------------------------------------------------

    def create_account(
        self, balance: Decimal = Decimal("10000"), *, api_key: str | None = None,
        api_secret: str | None = None,
    ) -> Account:
        """A new account with random credentials, or the given ones; an account that already
        has the given key is returned as it is."""
        if api_key is not None and api_key in self._core.accounts:
            return self._core.accounts[api_key]
        account = Account(api_key=api_key or random_token(64),
                          api_secret=api_secret or random_token(64), wallet=balance,
                          update_time=self.clock.now_ms())
        self._core.accounts[account.api_key] = account
        return account

    def account(self, api_key: str) -> Account:
        """The account of an API key; -2015 (401) when unknown."""
        return self._core.account(api_key)

    def has_account(self, api_key: str) -> bool:
        return api_key in self._core.accounts

    def exchange_info(self) -> dict[str, Any]:
        return {**self._core.exchange_info, "serverTime": self.clock.now_ms()}

    @property
    def symbols(self) -> list[str]:
        return list(self._core.specs)

    def spec(self, symbol: str) -> SymbolSpec:
        return self._core.spec(symbol)

    def mark_price(self, symbol: str) -> Decimal:
        self._core.spec(symbol)
        return self._core.marks[symbol]

    def set_mark_price(self, symbol: str, price: Decimal) -> None:
        """Move the mark: resting LIMIT orders fill and algo orders trigger as it crosses them,
        then accounts short of maintenance margin are liquidated."""
        self._core.spec(symbol)
        if price <= 0:
            raise err.reject(err.PRICE_NOT_POSITIVE)
        self._core.marks[symbol] = price
        self._matching.on_mark(symbol)
        self._algos.on_mark(symbol)
        self._liquidator.on_mark(symbol)

    @property
    def liquidation(self) -> bool:
        """Whether mark moves liquidate accounts short of maintenance margin (default on)."""
        return self._liquidator.enabled

    @liquidation.setter
    def liquidation(self, enabled: bool) -> None:
        self._liquidator.enabled = enabled

    def set_slippage(self, bps: Decimal, symbol: str | None = None) -> None:
        """Taker fills move ``bps`` basis points against the taker: for ``symbol``, or for
        every symbol without its own setting (``None``). 0 by default."""
        if symbol is not None:
            self._core.spec(symbol)
        if bps < 0:
            raise ValueError("slippage must not be negative")
        self._core.slippage_bps[symbol] = bps

    def set_leverage(self, api_key: str, symbol: str, leverage: int) -> int:
        account = self._core.account(api_key)
        self._core.spec(symbol)
        if not 1 <= leverage <= 125:
            raise err.reject(err.INVALID_LEVERAGE)
        account.leverage[symbol] = leverage
        return leverage

    def set_position_mode(self, api_key: str, dual: bool) -> None:
        """Hedge mode (``dual``) or one-way mode, account-wide (-4059, -4067, -4068)."""
        hedge.set_position_mode(self._core, api_key, dual)

    def position_mode(self, api_key: str) -> bool:
        """True in hedge mode (``dualSidePosition``)."""
        return self._core.account(api_key).dual_side

    def set_margin_type(self, api_key: str, symbol: str, margin_type: str) -> None:
        """ISOLATED or CROSSED for one symbol (-4046, -4047, -4048)."""
        hedge.set_margin_type(self._core, api_key, symbol, margin_type)

    # -- orders --------------------------------------------------------------------------

    def place_order(self, api_key: str, req: OrderRequest) -> Order:
        return self._matching.place(api_key, req)

    def place_batch(self, api_key: str,
                    requests: Sequence[OrderRequest | SimError]) -> list[Order | SimError]:
        """``batchOrders``: up to 5 orders placed in turn; each answer (the order, or the error
        it met — parse errors passed in stay as they are) in request order."""
        self._core.account(api_key)
        if not 1 <= len(requests) <= MAX_BATCH_ORDERS:
            raise err.reject(rejects.BATCH_SIZE)
        results: list[Order | SimError] = []
        for req in requests:
            try:
                results.append(req if isinstance(req, SimError) else self.place_order(api_key, req))
            except SimError as exc:
                results.append(exc)
        return results

    def get_order(self, api_key: str, symbol: str, order_id: int | None = None,
                  client_order_id: str | None = None) -> Order:
        """-2013 when not found."""
        order = self._core.find_order(api_key, symbol, order_id, client_order_id)
        if order is None:
            raise err.reject(err.ORDER_NOT_FOUND)
        return order

    def cancel_order(self, api_key: str, symbol: str, order_id: int | None = None,
                     client_order_id: str | None = None) -> Order:
        """-2011 when not found or no longer open."""
        order = self._core.find_order(api_key, symbol, order_id, client_order_id)
        if order is None:
            raise err.reject(err.UNKNOWN_ORDER)
        return self._matching.cancel(order)

    def cancel_all_orders(self, api_key: str, symbol: str) -> list[Order]:
        self._core.spec(symbol)
        return [self._matching.cancel(o) for o in self.open_orders(api_key, symbol)]

    def open_orders(self, api_key: str, symbol: str | None = None) -> list[Order]:
        self._core.account(api_key)
        if symbol:
            self._core.spec(symbol)
        return sorted(self._core.account_open_orders(api_key, symbol), key=_order_key)

    def all_orders(self, api_key: str, symbol: str) -> list[Order]:
        self._core.spec(symbol)
        return [o for o in self._core.orders_of[api_key] if o.symbol == symbol]

    def user_trades(self, api_key: str, symbol: str) -> list[Trade]:
        self._core.spec(symbol)
        return [t for t in self._core.trades_of[api_key] if t.symbol == symbol]

    # -- algo orders ---------------------------------------------------------------------

    def place_algo_order(self, api_key: str, req: AlgoRequest) -> AlgoOrder:
        return self._algos.place(api_key, req)

    def get_algo_order(self, api_key: str, algo_id: int | None = None,
                       client_algo_id: str | None = None) -> AlgoOrder:
        algo = self._core.find_algo(api_key, algo_id, client_algo_id)
        if algo is None:
            raise err.reject(err.ORDER_NOT_FOUND)
        return algo

    def cancel_algo_order(self, api_key: str, algo_id: int | None = None,
                          client_algo_id: str | None = None) -> AlgoOrder:
        algo = self._core.find_algo(api_key, algo_id, client_algo_id)
        if algo is None:
            raise err.reject(err.UNKNOWN_ORDER)
        return self._algos.cancel(algo)

    def cancel_all_algo_orders(self, api_key: str, symbol: str) -> list[AlgoOrder]:
        self._core.spec(symbol)
        return [self._algos.cancel(a) for a in self.open_algo_orders(api_key, symbol)]

    def open_algo_orders(self, api_key: str, symbol: str | None = None) -> list[AlgoOrder]:
        self._core.account(api_key)
        if symbol:
            self._core.spec(symbol)
        return sorted(self._core.account_open_algos(api_key, symbol), key=lambda a: a.algo_id)

    def all_algo_orders(self, api_key: str, symbol: str) -> list[AlgoOrder]:
        self._core.spec(symbol)
        return [a for a in self._core.algos_of[api_key] if a.symbol == symbol]

    # -- account state -------------------------------------------------------------------

    def positions(self, api_key: str, *, include_flat: bool = False) -> list[Position]:
        account = self._core.account(api_key)
        listed = [p for s in self._core.specs for p in account.positions_of(s)]
        return listed if include_flat else [p for p in listed if p.amount]

    def order_margin(self, api_key: str, symbol: str) -> Decimal:
        account = self._core.account(api_key)
        opened = self._core.account_open_orders(api_key, symbol)
        return sum((ledger.order_margin(account, o) for o in opened), Decimal(0))

    def available_balance(self, api_key: str) -> Decimal:
        account = self._core.account(api_key)
        opened = list(self._core.account_open_orders(api_key))
        return ledger.available_balance(account, self._core.marks, opened)

    def unrealized_pnl(self, api_key: str) -> Decimal:
        return ledger.unrealized_total(self._core.account(api_key), self._core.marks)

    # -- listenKeys and time -------------------------------------------------------------

    def start_listen_key(self, api_key: str) -> str:
        self._core.account(api_key)
        return self._core.keys.start(api_key, self.clock.now_ms())

    def keepalive_listen_key(self, api_key: str) -> str:
        self._core.account(api_key)
        return self._core.keys.keepalive(api_key, self.clock.now_ms())

    def close_listen_key(self, api_key: str) -> None:
        self._core.account(api_key)
        self._core.keys.close(api_key)

    def active_listen_key(self, api_key: str) -> str | None:
        return self._core.keys.active(api_key, self.clock.now_ms())

    def listen_keys_of(self, api_key: str) -> set[str]:
        """Every key ever issued to the account (to find its sockets)."""
        return self._core.keys.issued_to(api_key)

    def tick(self) -> None:
        """Let time pass: expired listenKeys send ``listenKeyExpired`` to their subscribers."""
        now = self.clock.now_ms()
        for api_key, key in self._core.keys.expire_due(now):
            payload = events.listen_key_expired(key, now=now)
            self._core.outbox.append(Delivery(api_key, key, payload))

    def attach_path(self, symbol: str, path: PricePath, *, start_ms: int | None = None) -> None:
        """Drive the symbol's mark by ``path`` (offsets from ``start_ms``, default now; a
        random walk starts from the current mark). Replaces an attached path."""
        self._core.spec(symbol)
        start = self.clock.now_ms() if start_ms is None else start_ms
        self.timeline.schedule.attach(symbol, path, start, self._core.marks[symbol])

    def detach_path(self, symbol: str) -> None:
        self.timeline.schedule.detach(symbol)

    def advance_to(self, ms: int) -> None:
        """Apply every path step due by ``ms`` in time order (prices rounded down to the tick)
        — the clock set to each step's time; its fills, triggers, liquidations and listenKey
        expiries run — then the clock to ``ms``. Needs a ``ManualClock`` or ``SimClock``."""
        self.timeline.advance_to(ms)

    def advance(self, ms: int) -> None:
        """``advance_to(now + ms)``: cross 24 h of scripted market in one call."""
        self.advance_to(self.clock.now_ms() + ms)

    def _path_step(self, symbol: str, price: Decimal) -> None:
        self.set_mark_price(symbol, self._core.specs[symbol].to_tick(price, up=False))

    def emit_synthetic(self, count: int) -> int:
        """Load generation: ``count`` balance ``ACCOUNT_UPDATE`` events (reason ADJUSTMENT, no
        change) round-robin over the accounts with a live listenKey; the turn carries over
        between calls. Returns how many were emitted (0 when no account listens)."""
        now = self.clock.now_ms()
        holders = self._core.keys.holders(now)
        if not holders:
            return 0
        for i in range(count):
            api_key = holders[(self._emit_turn + i) % len(holders)]
            wallet = f"{self._core.accounts[api_key].wallet:.8f}"
            self._core.emit(api_key, {"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {
                "m": "ADJUSTMENT", "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": "0"}],
                "P": []}})
        self._emit_turn = (self._emit_turn + count) % len(holders)
        return count

    def drain_events(self) -> list[Delivery]:
        """The events produced since the last drain, oldest first."""
        out, self._core.outbox = self._core.outbox, []
        return out


def _order_key(order: Order) -> tuple[str, int]:
    return order.symbol, order.order_id
