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
ONE_WAY_SIDES = ("BOTH",)
HEDGE_SIDES = ("LONG", "SHORT")
TRAILING = "TRAILING_STOP_MARKET"


def is_closing(position_side: str, side: str) -> bool:
    """Hedge mode: SELL on LONG and BUY on SHORT only reduce that position."""
    return (position_side, side) in (("LONG", "SELL"), ("SHORT", "BUY"))


@dataclass
class Position:
    """A position keyed by (symbol, side): BOTH in one-way mode, LONG/SHORT in hedge mode."""

    symbol: str
    side: str = "BOTH"
    amount: Decimal = ZERO  # signed: > 0 long, < 0 short (a SHORT position is <= 0)
    entry_price: Decimal = ZERO
    realized: Decimal = ZERO  # accumulated realized PnL, before fees (``cr``)
    isolated_wallet: Decimal = ZERO  # margin held by an ISOLATED position (``iw``)
    update_time: int = 0


@dataclass
class Account:
    """A USDT futures account. ``wallet`` is the total wallet balance (``wb``), isolated
    wallets included; the cross wallet (``cw``) is ``wallet`` minus them."""

    api_key: str
    api_secret: str
    wallet: Decimal
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    margin_types: dict[str, str] = field(default_factory=dict)  # symbol -> ISOLATED/CROSSED
    dual_side: bool = False  # hedge mode (positionSide LONG/SHORT)
    update_time: int = 0

    def position(self, symbol: str, side: str = "BOTH") -> Position:
        key = (symbol, side)
        if key not in self.positions:
            self.positions[key] = Position(symbol, side)
        return self.positions[key]

    @property
    def position_sides(self) -> tuple[str, ...]:
        return HEDGE_SIDES if self.dual_side else ONE_WAY_SIDES

    def positions_of(self, symbol: str) -> list[Position]:
        """The symbol's positions in the account's mode (BOTH, or LONG and SHORT)."""
        return [self.position(symbol, side) for side in self.position_sides]

    def leverage_of(self, symbol: str) -> int:
        return self.leverage.get(symbol, 20)

    def margin_type(self, symbol: str) -> str:
        return self.margin_types.get(symbol, "CROSSED")

    def is_isolated(self, symbol: str) -> bool:
        return self.margin_type(symbol) == "ISOLATED"


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
    position_side: str = "BOTH"
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
    activate_price: Decimal | None = None  # trailing stop children only
    callback_rate: Decimal | None = None

    @property
    def reduces_only(self) -> bool:
        """May only shrink a position: reduceOnly, closePosition, or a hedge-mode close."""
        return self.reduce_only or self.close_position or is_closing(self.position_side, self.side)

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
    order_type: str  # STOP_MARKET, TAKE_PROFIT_MARKET, STOP, TAKE_PROFIT, TRAILING_STOP_MARKET
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
    position_side: str = "BOTH"
    activate_price: Decimal | None = None  # trailing: where tracking starts (None: at once)
    callback_rate: Decimal | None = None  # trailing: percent, 0.1-10
    activated: bool = False  # trailing: tracking the extreme (``ia``)
    extreme: Decimal = ZERO  # trailing: highest (SELL) / lowest (BUY) price since activation
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

    @property
    def is_trailing(self) -> bool:
        return self.order_type == TRAILING

    @property
    def reduces_only(self) -> bool:
        return self.reduce_only or self.close_position or is_closing(self.position_side, self.side)

    def fires_at(self, price: Decimal) -> bool:
        """STOP/TAKE_PROFIT rule; trailing orders are judged in ``trailing``."""
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
    position_side: str = "BOTH"

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty
