"""Position and margin arithmetic (one-way mode, cross margin, USDT)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from tradewire.simulator.model import ZERO, Account, Order, Position

TAKER_FEE = Decimal("0.0004")
MAKER_FEE = Decimal("0.0002")


def signed(side: str, qty: Decimal) -> Decimal:
    return qty if side == "BUY" else -qty


def apply_fill(position: Position, side: str, qty: Decimal, price: Decimal, now: int) -> Decimal:
    """Move ``position`` by a fill and return the realized PnL (before fees) of that fill."""
    delta = signed(side, qty)
    old = position.amount
    new = old + delta
    realized = ZERO
    if old == 0 or (old > 0) == (delta > 0):
        total = abs(old) + qty
        position.entry_price = (abs(old) * position.entry_price + qty * price) / total
    else:
        closed = min(qty, abs(old))
        direction = 1 if old > 0 else -1
        realized = closed * (price - position.entry_price) * direction
        if new == 0:
            position.entry_price = ZERO
        elif (new > 0) != (old > 0):
            position.entry_price = price  # flipped: the remainder opened at this price
    position.amount = new
    position.realized += realized
    position.update_time = now
    return realized


def commission(qty: Decimal, price: Decimal, *, maker: bool) -> Decimal:
    return qty * price * (MAKER_FEE if maker else TAKER_FEE)


def unrealized(position: Position, mark: Decimal) -> Decimal:
    return position.amount * (mark - position.entry_price) if position.amount else ZERO


def breakeven(position: Position) -> Decimal:
    """Entry price moved by the round-trip taker fee."""
    if not position.amount:
        return ZERO
    factor = 1 + TAKER_FEE if position.amount > 0 else 1 - TAKER_FEE
    return position.entry_price * factor


def opening_qty(position: Position, side: str, qty: Decimal) -> Decimal:
    """How much of an order of ``qty`` would increase exposure (the rest reduces the position)."""
    delta = signed(side, qty)
    if position.amount == 0 or (position.amount > 0) == (delta > 0):
        return qty
    return max(ZERO, qty - abs(position.amount))


def reducible_qty(position: Position, side: str) -> Decimal:
    """How much a reduce-only order on ``side`` may fill: the opposite position's size."""
    if position.amount == 0 or (position.amount > 0) == (side == "BUY"):
        return ZERO
    return abs(position.amount)


def initial_margin(position: Position, mark: Decimal, leverage: int) -> Decimal:
    return abs(position.amount) * mark / leverage


def order_margin(account: Account, order: Order) -> Decimal:
    if order.reduce_only or order.close_position:
        return ZERO
    opening = opening_qty(account.position(order.symbol), order.side, order.quantity)
    return opening * order.price / account.leverage_of(order.symbol)


def available_balance(
    account: Account, marks: Mapping[str, Decimal], open_orders: Iterable[Order]
) -> Decimal:
    """Wallet + unrealized PnL - position margin - open-order margin (cross margin)."""
    value = account.wallet
    for position in account.positions.values():
        if position.amount:
            mark = marks[position.symbol]
            value += unrealized(position, mark)
            value -= initial_margin(position, mark, account.leverage_of(position.symbol))
    for order in open_orders:
        value -= order_margin(account, order)
    return value


def unrealized_total(account: Account, marks: Mapping[str, Decimal]) -> Decimal:
    return sum(
        (unrealized(p, marks[p.symbol]) for p in account.positions.values() if p.amount), ZERO
    )
