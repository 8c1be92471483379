"""Symbols and their filters, read from the ``exchange_info.json`` fixture; decimal formatting."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from importlib import resources
from typing import Any

from tradewire.simulator import errors as err

DEFAULT_MARKS: dict[str, Decimal] = {
    "BTCUSDT": Decimal("60000"),
    "ETHUSDT": Decimal("3000"),
    "SOLUSDT": Decimal("150"),
    "BNBUSDT": Decimal("600"),
    "XRPUSDT": Decimal("0.6"),
}


@dataclass(frozen=True)
class SymbolSpec:
    """One symbol's trading rules (exchangeInfo filters)."""

    symbol: str
    price_precision: int
    quantity_precision: int
    min_price: Decimal
    max_price: Decimal
    tick_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    market_step_size: Decimal
    min_notional: Decimal
    multiplier_up: Decimal
    multiplier_down: Decimal
    max_num_orders: int

    def price_str(self, value: Decimal) -> str:
        return fmt(value, self.price_precision)

    def qty_str(self, value: Decimal) -> str:
        return fmt(value, self.quantity_precision)

    def to_tick(self, value: Decimal, *, up: bool) -> Decimal:
        """``value`` on the price grid (rounded up or down), never below one tick."""
        tick = self.tick_size or Decimal(1).scaleb(-self.price_precision)
        steps = ((value - self.min_price) / tick).to_integral_value(
            rounding=ROUND_CEILING if up else ROUND_FLOOR)
        return max(self.min_price + steps * tick, self.min_price or tick)

    def check_price(self, price: Decimal) -> None:
        """PRICE_FILTER: positive, within bounds, on the tick (0 disables a bound)."""
        if price <= 0:
            raise err.reject(err.PRICE_NOT_POSITIVE)
        if _decimals(price) > self.price_precision:
            raise err.reject(err.PRECISION)
        if self.min_price and price < self.min_price:
            raise err.reject(err.PRICE_BELOW_MIN)
        if self.max_price and price > self.max_price:
            raise err.reject(err.PRICE_ABOVE_MAX)
        if self.tick_size and (price - self.min_price) % self.tick_size != 0:
            raise err.reject(err.PRICE_TICK)

    def check_qty(self, qty: Decimal, *, market: bool) -> None:
        """LOT_SIZE (limit orders) or MARKET_LOT_SIZE (market orders)."""
        low, high, step = (
            (self.market_min_qty, self.market_max_qty, self.market_step_size)
            if market else (self.min_qty, self.max_qty, self.step_size)
        )
        if qty <= 0:
            raise err.reject(err.QTY_NOT_POSITIVE)
        if _decimals(qty) > self.quantity_precision:
            raise err.reject(err.PRECISION)
        if qty < low:
            raise err.reject(err.QTY_BELOW_MIN)
        if high and qty > high:
            raise err.reject(err.QTY_ABOVE_MAX)
        if step and (qty - low) % step != 0:
            raise err.reject(err.QTY_STEP)

    def check_percent_price(self, side: str, price: Decimal, mark: Decimal) -> None:
        """PERCENT_PRICE: BUY price <= mark*up, SELL price >= mark*down."""
        if side == "BUY" and price > mark * self.multiplier_up:
            raise err.reject(err.PRICE_ABOVE_CAP)
        if side == "SELL" and price < mark * self.multiplier_down:
            raise err.reject(err.PRICE_BELOW_FLOOR)


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def fmt(value: Decimal, places: int) -> str:
    """``value`` with exactly ``places`` decimals, never in exponent form."""
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


def money(value: Decimal) -> str:
    """Balances, PnL and commissions: 8 decimals, like the exchange."""
    return fmt(value, 8)


def plain(value: Decimal) -> str:
    """A decimal without exponent and without trailing zeros ("0" for zero)."""
    text = f"{value.normalize():f}"
    return "0" if text in ("-0", "0") else text


def load_exchange_info() -> dict[str, Any]:
    """The bundled exchangeInfo fixture (a fresh copy)."""
    text = resources.files("tradewire.simulator").joinpath("exchange_info.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return copy.deepcopy(data)


def parse_symbols(info: dict[str, Any]) -> dict[str, SymbolSpec]:
    return {raw["symbol"]: _spec(raw) for raw in info["symbols"]}


def _spec(raw: dict[str, Any]) -> SymbolSpec:
    filters = {f["filterType"]: f for f in raw["filters"]}
    price, lot, market = filters["PRICE_FILTER"], filters["LOT_SIZE"], filters["MARKET_LOT_SIZE"]
    percent = filters["PERCENT_PRICE"]
    return SymbolSpec(
        symbol=raw["symbol"],
        price_precision=int(raw["pricePrecision"]),
        quantity_precision=int(raw["quantityPrecision"]),
        min_price=Decimal(price["minPrice"]),
        max_price=Decimal(price["maxPrice"]),
        tick_size=Decimal(price["tickSize"]),
        min_qty=Decimal(lot["minQty"]),
        max_qty=Decimal(lot["maxQty"]),
        step_size=Decimal(lot["stepSize"]),
        market_min_qty=Decimal(market["minQty"]),
        market_max_qty=Decimal(market["maxQty"]),
        market_step_size=Decimal(market["stepSize"]),
        min_notional=Decimal(filters["MIN_NOTIONAL"]["notional"]),
        multiplier_up=Decimal(percent["multiplierUp"]),
        multiplier_down=Decimal(percent["multiplierDown"]),
        max_num_orders=int(filters["MAX_NUM_ORDERS"]["limit"]),
    )
