"""Position and margin arithmetic (USDT; one-way or hedge positions; cross or isolated margin).

Isolated margin, simplified: opening moves ``qty * price / leverage`` from the cross wallet into
the position's isolated wallet; closing releases the closed share of it; realized PnL and
commissions always settle in the total wallet. Maintenance margin follows tiered brackets
(``MAINT_BRACKETS``): ``notional * rate - cum`` of the bracket the notional falls in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from tradewire.simulator.model import ZERO, Account, Order, Position

TAKER_FEE = Decimal("0.0004")
MAKER_FEE = Decimal("0.0002")

Bracket = tuple[Decimal, Decimal, Decimal]  # notional floor, maintenance rate, cum amount


def _brackets(*rows: tuple[int, str]) -> list[Bracket]:
    """Brackets from (floor, rate) rows; ``cum`` keeps the margin continuous at each floor."""
    out: list[Bracket] = []
    cum, last_rate = ZERO, ZERO
    for floor, rate_text in rows:
        rate = Decimal(rate_text)
        cum += Decimal(floor) * (rate - last_rate)
        out.append((Decimal(floor), rate, cum))
        last_rate = rate
    return out


MAINT_BRACKETS: dict[str, list[Bracket]] = {
    "BTCUSDT": _brackets((0, "0.004"), (50_000, "0.005"), (600_000, "0.01"),
                         (3_000_000, "0.025"), (12_000_000, "0.05")),
    "ETHUSDT": _brackets((0, "0.005"), (50_000, "0.0065"), (600_000, "0.01"),
                         (3_000_000, "0.02"), (12_000_000, "0.05")),
}
DEFAULT_BRACKETS = _brackets((0, "0.01"), (5_000, "0.015"), (50_000, "0.02"),
                             (250_000, "0.05"), (1_000_000, "0.1"))


def signed(side: str, qty: Decimal) -> Decimal:
    return qty if side == "BUY" else -qty


PNL_STEP = Decimal("0.00000001")


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
        # to the exchange's 8 decimals: the average entry price may not terminate, and an
        # unrounded PnL would make the wallet depend on the order of additions
        realized = (closed * (price - position.entry_price) * direction).quantize(PNL_STEP)
        if new == 0:
            position.entry_price = ZERO
        elif (new > 0) != (old > 0):
            position.entry_price = price  # flipped: the remainder opened at this price
    position.amount = new
    position.realized += realized
    position.update_time = now
    return realized


def book_fill(account: Account, position: Position, side: str, qty: Decimal, price: Decimal,
              *, maker: bool, now: int) -> tuple[Decimal, Decimal]:
    """Apply a fill to the position and the wallet; (realized PnL, commission)."""
    old = position.amount
    realized = apply_fill(position, side, qty, price, now)
    fee = commission(qty, price, maker=maker)
    account.wallet += realized - fee
    account.update_time = now
    if account.is_isolated(position.symbol):
        _move_isolated(position, old, qty, price, account.leverage_of(position.symbol))
    return realized, fee


def _move_isolated(position: Position, old: Decimal, qty: Decimal, price: Decimal,
                   leverage: int) -> None:
    closed = ZERO if old == 0 or (old > 0) == (position.amount > old) else min(qty, abs(old))
    if closed:
        position.isolated_wallet -= position.isolated_wallet * closed / abs(old)
    if qty > closed:
        position.isolated_wallet += (qty - closed) * price / leverage
    if position.amount == 0:
        position.isolated_wallet = ZERO


def isolated_total(account: Account) -> Decimal:
    return sum((p.isolated_wallet for p in account.positions.values()), ZERO)


def cross_wallet(account: Account) -> Decimal:
    """The wallet minus what isolated positions hold (``cw``, ``crossWalletBalance``)."""
    return account.wallet - isolated_total(account)


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
    if order.reduces_only:
        return ZERO
    position = account.position(order.symbol, order.position_side)
    opening = opening_qty(position, order.side, order.quantity)
    return opening * order.price / account.leverage_of(order.symbol)


def available_balance(
    account: Account, marks: Mapping[str, Decimal], open_orders: Iterable[Order]
) -> Decimal:
    """Cross wallet + cross unrealized PnL - cross position margin - open-order margin."""
    value = cross_wallet(account)
    for position in account.positions.values():
        if position.amount and not account.is_isolated(position.symbol):
            mark = marks[position.symbol]
            value += unrealized(position, mark)
            value -= initial_margin(position, mark, account.leverage_of(position.symbol))
    for order in open_orders:
        value -= order_margin(account, order)
    return value


def bracket(symbol: str, notional: Decimal) -> Bracket:
    rows = MAINT_BRACKETS.get(symbol, DEFAULT_BRACKETS)
    return [row for row in rows if abs(notional) >= row[0]][-1]


def maint_margin(position: Position, mark: Decimal) -> Decimal:
    """Maintenance margin of a position at ``mark`` (tiered)."""
    if not position.amount:
        return ZERO
    notional = abs(position.amount) * mark
    _, rate, cum = bracket(position.symbol, notional)
    return notional * rate - cum


def margin_backing(account: Account, position: Position, marks: Mapping[str, Decimal]) -> Decimal:
    """What stands behind a position before its own PnL: its isolated wallet, or the cross
    wallet plus the other cross positions' unrealized PnL less their maintenance margin."""
    if account.is_isolated(position.symbol):
        return position.isolated_wallet
    value = cross_wallet(account)
    for other in account.positions.values():
        if other is not position and other.amount and not account.is_isolated(other.symbol):
            mark = marks[other.symbol]
            value += unrealized(other, mark) - maint_margin(other, mark)
    return value


def liquidation_price(account: Account, position: Position,
                      marks: Mapping[str, Decimal]) -> Decimal:
    """The mark at which margin + PnL meets maintenance (bracket of the current notional)."""
    if not position.amount:
        return ZERO
    amount, mark = position.amount, marks[position.symbol]
    _, rate, cum = bracket(position.symbol, amount * mark)
    backing = margin_backing(account, position, marks)
    price = (backing - amount * position.entry_price + cum) / (abs(amount) * rate - amount)
    return max(price, ZERO)


def unrealized_total(account: Account, marks: Mapping[str, Decimal]) -> Decimal:
    return sum(
        (unrealized(p, marks[p.symbol]) for p in account.positions.values() if p.amount), ZERO
    )
