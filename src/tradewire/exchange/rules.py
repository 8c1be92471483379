"""Per-symbol trading rules from ``exchangeInfo`` filters (reference §5.5).

Rounding never makes an order bigger than asked: quantities round *down* to the step. Prices round
to the nearest tick. ``check`` refuses what the exchange would refuse, with ``InvalidInput``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from tradewire.errors import InvalidInput
from tradewire.exchange.wire_rest import (
    ExchangeInfo,
    LotSizeFilter,
    MinNotionalFilter,
    PriceFilter,
    SymbolInfo,
)

_ZERO = Decimal(0)


def _to_multiple(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    """``value`` rounded to a whole number of ``step`` (unchanged when the step is 0, "no rule")."""
    if step <= 0:
        return value
    return (value / step).to_integral_value(rounding=rounding) * step


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    return step <= 0 or value % step == 0


@dataclass(frozen=True)
class Lot:
    """Quantity bounds of LOT_SIZE (limit orders) or MARKET_LOT_SIZE (market orders)."""

    min_qty: Decimal = _ZERO
    max_qty: Decimal = _ZERO  # 0: no maximum
    step: Decimal = _ZERO

    @classmethod
    def of(cls, found: object) -> Lot | None:
        if not isinstance(found, LotSizeFilter):
            return None
        return cls(found.minQty, found.maxQty, found.stepSize)


@dataclass(frozen=True)
class SymbolRules:
    """What one symbol accepts: tick, lot sizes and minimum notional."""

    symbol: str
    tick_size: Decimal = _ZERO
    min_price: Decimal = _ZERO
    max_price: Decimal = _ZERO
    lot: Lot = Lot()
    market_lot: Lot = Lot()
    min_notional: Decimal = _ZERO

    @classmethod
    def from_symbol_info(cls, info: SymbolInfo) -> SymbolRules:
        price = info.filter("PRICE_FILTER")
        notional = info.filter("MIN_NOTIONAL")
        lot = Lot.of(info.filter("LOT_SIZE")) or Lot()
        return cls(
            symbol=info.symbol,
            tick_size=price.tickSize if isinstance(price, PriceFilter) else _ZERO,
            min_price=price.minPrice if isinstance(price, PriceFilter) else _ZERO,
            max_price=price.maxPrice if isinstance(price, PriceFilter) else _ZERO,
            lot=lot,
            market_lot=Lot.of(info.filter("MARKET_LOT_SIZE")) or lot,
            min_notional=notional.notional if isinstance(notional, MinNotionalFilter) else _ZERO,
        )

    @classmethod
    def from_exchange_info(cls, info: ExchangeInfo, symbol: str) -> SymbolRules:
        found = info.symbol(symbol)
        if found is None:
            raise InvalidInput(f"unknown symbol {symbol!r}", field="symbol")
        return cls.from_symbol_info(found)

    def lot_for(self, market: bool) -> Lot:
        return self.market_lot if market else self.lot

    def round_quantity(self, quantity: Decimal, market: bool) -> Decimal:
        """``quantity`` rounded down to the lot step (MARKET_LOT_SIZE when ``market``)."""
        return _to_multiple(quantity, self.lot_for(market).step, ROUND_FLOOR)

    def round_price(self, price: Decimal) -> Decimal:
        """``price`` rounded to the nearest tick (half up)."""
        return _to_multiple(price, self.tick_size, ROUND_HALF_UP)

    def quantity_for_notional(self, notional: Decimal, price: Decimal, market: bool) -> Decimal:
        """The largest valid quantity whose value at ``price`` does not exceed ``notional``."""
        if price <= 0:
            raise InvalidInput(f"{self.symbol}: price must be positive, got {price}", field="price")
        return self.round_quantity(notional / price, market)

    def check(
        self, quantity: Decimal, price: Decimal, *, market: bool, reduce_only: bool = False
    ) -> None:
        """Raise ``InvalidInput`` unless the order passes the symbol's filters.

        ``price`` is the limit price, or for a market order the mark price used for the notional.
        Reduce-only orders are exempt from the minimum notional, as on the exchange.
        """
        self._check_quantity(quantity, self.lot_for(market))
        if not market:
            self._check_price(price)
        if not reduce_only:
            self._check_notional(quantity * price)

    def _check_quantity(self, quantity: Decimal, lot: Lot) -> None:
        problem = _quantity_problem(quantity, lot)
        if problem:
            raise InvalidInput(f"{self.symbol}: quantity {quantity} {problem}", field="quantity")

    def _check_price(self, price: Decimal) -> None:
        problem = _price_problem(price, self.min_price, self.max_price, self.tick_size)
        if problem:
            raise InvalidInput(f"{self.symbol}: price {price} {problem}", field="price")

    def _check_notional(self, notional: Decimal) -> None:
        if notional < self.min_notional:
            raise InvalidInput(
                f"{self.symbol}: order value {notional} is below the minimum notional "
                f"{self.min_notional} (reduce-only orders are exempt)",
                field="quantity",
            )


def _quantity_problem(quantity: Decimal, lot: Lot) -> str:
    if quantity <= 0:
        return "must be positive"
    if quantity < lot.min_qty:
        return f"is below the minimum {lot.min_qty}"
    if lot.max_qty > 0 and quantity > lot.max_qty:
        return f"is above the maximum {lot.max_qty}"
    if not _is_multiple(quantity, lot.step):
        return f"is not a multiple of the step {lot.step}"
    return ""


def _price_problem(price: Decimal, low: Decimal, high: Decimal, tick: Decimal) -> str:
    if price <= 0:
        return "must be positive"
    if price < low or (high > 0 and price > high):
        return f"is outside [{low}, {high}]"
    if not _is_multiple(price, tick):
        return f"is not a multiple of the tick {tick}"
    return ""
