"""The simulator's state: accounts, positions, orders, algo orders, trades."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal(0)
_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int) -> str:
    """Random letters and digits, like the exchange's API keys, listenKeys and client ids."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))

OPEN_ORDER_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
OPEN_ALGO_STATUSES = frozenset({"NEW", "TRIGGERING"})


@dataclass
class Position:
    """One-way mode position (positionSide BOTH)."""

    symbol: str
    amount: Decimal = ZERO  # signed: > 0 long, < 0 short
    entry_price: Decimal = ZERO
    realized: Decimal = ZERO  # accumulated realized PnL, before fees (``cr``)
    update_time: int = 0


@dataclass
class Account:
    api_key: str
    api_secret: str
    wallet: Decimal
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    update_time: int = 0

    def position(self, symbol: str) -> Position:
        if symbol not in self.positions:
            self.positions[symbol] = Position(symbol)
        return self.positions[symbol]

    def leverage_of(self, symbol: str) -> int:
        return self.leverage.get(symbol, 20)


@dataclass
class Order:
    """An order in the matching engine (LIMIT or MARKET; MARKET/LIMIT children of algo orders)."""

    api_key: str
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    quantity: Decimal
    price: Decimal
    time_in_force: str
    reduce_only: bool
    time: int
    orig_type: str = ""
    stop_price: Decimal = ZERO
    close_position: bool = False
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    self_trade_prevention: str = "EXPIRE_MAKER"
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    algo_id: int | None = None  # set on the order a triggered algo order placed

    def __post_init__(self) -> None:
        self.orig_type = self.orig_type or self.type
        self.update_time = self.update_time or self.time

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ORDER_STATUSES

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO


@dataclass
class AlgoOrder:
    """A conditional order held by the Algo Service until it triggers."""

    api_key: str
    symbol: str
    algo_id: int
    client_algo_id: str
    side: str
    order_type: str  # STOP_MARKET, TAKE_PROFIT_MARKET, STOP, TAKE_PROFIT
    quantity: Decimal
    trigger_price: Decimal
    price: Decimal
    time_in_force: str
    reduce_only: bool
    close_position: bool
    working_type: str
    price_protect: bool
    create_time: int
    self_trade_prevention: str = "EXPIRE_MAKER"
    status: str = "NEW"
    actual_order_id: str = ""
    actual_price: Decimal = ZERO
    executed_qty: Decimal = ZERO
    trigger_time: int = 0
    update_time: int = 0
    reject_reason: str = ""

    def __post_init__(self) -> None:
        self.update_time = self.update_time or self.create_time

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ALGO_STATUSES

    @property
    def is_market(self) -> bool:
        return self.order_type.endswith("_MARKET")

    def fires_at(self, price: Decimal) -> bool:
        return fires(self.order_type, self.side, self.trigger_price, price)


def fires(order_type: str, side: str, trigger: Decimal, price: Decimal) -> bool:
    """Trigger rule: STOP BUY >=, STOP SELL <=; TAKE_PROFIT BUY <=, TAKE_PROFIT SELL >=."""
    upward = (side == "BUY") == order_type.startswith("STOP")
    return price >= trigger if upward else price <= trigger


@dataclass(frozen=True)
class Trade:
    api_key: str
    symbol: str
    trade_id: int
    order_id: int
    side: str
    price: Decimal
    qty: Decimal
    realized_pnl: Decimal
    commission: Decimal
    maker: bool
    time: int

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty
