"""Liquidation: when margin falls below maintenance at a mark move, the engine closes positions.

- ISOLATED position: liquidated when its isolated wallet + unrealized PnL < its maintenance
  margin (tiered, ``ledger.MAINT_BRACKETS``: 0.4 % for BTCUSDT up to 50k notional).
- CROSSED: when cross wallet + cross unrealized PnL < the cross positions' maintenance margin,
  the positions of the symbol that moved close first, then the others, until it is healthy.
- Before a symbol's positions close, its open orders EXPIRE (``er`` 5) and its open algo
  orders EXPIRE (ALGO_UPDATE), as the exchange clears them.
- The close is a LIQUIDATION order (IOC, reduce-only, ``c`` = ``autoclose-<orderId>``) filled at
  the mark as taker: ORDER_TRADE_UPDATE NEW, ACCOUNT_UPDATE, ORDER_TRADE_UPDATE CALCULATED/FILLED.
- No insurance fund: a loss beyond the margin stays in the wallet, which may go negative.
"""

from __future__ import annotations

from decimal import Decimal

from tradewire.simulator import ledger
from tradewire.simulator.algos import AlgoService
from tradewire.simulator.core import Core
from tradewire.simulator.matching import ER_LIQUIDATION, Matching
from tradewire.simulator.model import ZERO, Account, Order, Position

LIQUIDATION_PREFIX = "autoclose-"


def cross_shortfall(account: Account, marks: dict[str, Decimal]) -> bool:
    """Cross margin balance below the cross positions' maintenance margin."""
    balance, maintenance = ledger.cross_wallet(account), ZERO
    for position in _cross_positions(account):
        mark = marks[position.symbol]
        balance += ledger.unrealized(position, mark)
        maintenance += ledger.maint_margin(position, mark)
    return maintenance > 0 and balance < maintenance


def isolated_shortfall(position: Position, mark: Decimal) -> bool:
    """An isolated position's wallet + PnL below its maintenance margin."""
    if not position.amount:
        return False
    balance = position.isolated_wallet + ledger.unrealized(position, mark)
    return balance < ledger.maint_margin(position, mark)


def _cross_positions(account: Account) -> list[Position]:
    return [p for p in account.positions.values()
            if p.amount and not account.is_isolated(p.symbol)]


class Liquidator:
    """Checks the accounts holding a symbol after its mark moved; ``enabled`` switches it."""

    def __init__(self, core: Core, matching: Matching, algos: AlgoService) -> None:
        self.core = core
        self.matching = matching
        self.algos = algos
        self.enabled = True

    def on_mark(self, symbol: str) -> None:
        if not self.enabled:
            return
        for account in list(self.core.accounts.values()):
            held = [p for p in account.positions.values() if p.symbol == symbol and p.amount]
            if not held:
                continue
            if account.is_isolated(symbol):
                mark = self.core.marks[symbol]
                for position in [p for p in held if isolated_shortfall(p, mark)]:
                    self._liquidate(account, [position])
            else:
                self._check_cross(account, symbol)

    def _check_cross(self, account: Account, symbol: str) -> None:
        while cross_shortfall(account, self.core.marks):
            first = min(_cross_positions(account), key=lambda p: (p.symbol != symbol, p.symbol))
            group = [p for p in _cross_positions(account) if p.symbol == first.symbol]
            self._liquidate(account, group)

    def _liquidate(self, account: Account, positions: list[Position]) -> None:
        symbol = positions[0].symbol
        for order in sorted(self.core.account_open_orders(account.api_key, symbol),
                            key=lambda o: o.order_id):
            self.matching.expire(order, ER_LIQUIDATION)
        self.algos.expire_all(account.api_key, symbol)
        for position in positions:
            if position.amount:
                self._close(account, position)

    def _close(self, account: Account, position: Position) -> None:
        mark = self.core.marks[position.symbol]
        order_id = self.core.next_order_id(position.symbol)
        order = Order(
            api_key=account.api_key, symbol=position.symbol, order_id=order_id,
            client_order_id=f"{LIQUIDATION_PREFIX}{order_id}",
            side="SELL" if position.amount > 0 else "BUY", type="LIQUIDATION",
            quantity=abs(position.amount), price=mark, time_in_force="IOC", reduce_only=True,
            time=self.core.now(), position_side=position.side,
        )
        self.core.add_order(order)
        self.matching.emit_update(order, "NEW")
        self.matching.execute(order, order.quantity, mark, maker=False, execution="CALCULATED")
