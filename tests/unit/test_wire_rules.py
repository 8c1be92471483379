"""Symbol rules derived from the exchangeInfo filters (reference §5.5)."""

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tradewire.errors import InvalidInput
from tradewire.exchange.rules import SymbolRules
from tradewire.exchange.wire import ExchangeInfo

WIRE = Path(__file__).parent.parent / "fixtures" / "wire"
INFO = ExchangeInfo.from_json(
    json.loads((WIRE / "rest_exchange_info.json").read_text())["responses"][0]["body"]
)
BTC = SymbolRules.from_exchange_info(INFO, "BTCUSDT")


def test_rules_come_from_the_filters() -> None:
    """Tick, lot sizes and min notional are read from the symbol's filters."""
    assert BTC.tick_size == Decimal("0.10") and BTC.min_notional == Decimal(100)
    assert BTC.lot.max_qty == Decimal(1000) and BTC.market_lot.max_qty == Decimal(120)


def test_unknown_symbol_is_invalid_input() -> None:
    """Asking for rules of a symbol the exchange does not list is refused."""
    with pytest.raises(InvalidInput, match="DOGEUSDT"):
        SymbolRules.from_exchange_info(INFO, "DOGEUSDT")


def test_quantity_rounds_down_to_the_step_never_up() -> None:
    """Quantities round down to the lot step, so an order is never larger than asked."""
    assert BTC.round_quantity(Decimal("0.0199"), market=True) == Decimal("0.019")
    assert BTC.round_quantity(Decimal("0.020"), market=False) == Decimal("0.020")
    assert BTC.quantity_for_notional(Decimal(1000), Decimal("60000"), market=True) == Decimal(
        "0.016"
    )


def test_market_orders_use_the_market_lot() -> None:
    """MARKET orders are checked against MARKET_LOT_SIZE, limit orders against LOT_SIZE."""
    BTC.check(Decimal(500), Decimal("60000.0"), market=False)
    with pytest.raises(InvalidInput, match="above the maximum 120"):
        BTC.check(Decimal(500), Decimal("60000.0"), market=True)


def test_price_rounds_to_the_nearest_tick() -> None:
    """Prices round half-up to the tick."""
    assert BTC.round_price(Decimal("58000.04")) == Decimal("58000.0")
    assert BTC.round_price(Decimal("58000.05")) == Decimal("58000.1")


@pytest.mark.parametrize(
    ("quantity", "price", "market", "field", "message"),
    [
        (Decimal("0.0005"), Decimal(60000), True, "quantity", "below the minimum 0.001"),
        (Decimal("0.0015"), Decimal(60000), True, "quantity", "not a multiple of the step"),
        (Decimal(0), Decimal(60000), True, "quantity", "must be positive"),
        (Decimal("0.001"), Decimal(60000), True, "quantity", "below the minimum notional 100"),
        (Decimal("0.010"), Decimal("60000.05"), False, "price", "not a multiple of the tick"),
        (Decimal("0.010"), Decimal("900000"), False, "price", "outside"),
    ],
)
def test_check_refuses_what_the_exchange_would_refuse(
    quantity: Decimal, price: Decimal, market: bool, field: str, message: str
) -> None:
    """check() raises InvalidInput naming the field, with a message saying why."""
    with pytest.raises(InvalidInput, match=message) as caught:
        BTC.check(quantity, price, market=market)
    assert caught.value.field == field


def test_reduce_only_orders_are_exempt_from_min_notional() -> None:
    """A small reduce-only close is accepted, as the exchange exempts it."""
    BTC.check(Decimal("0.001"), Decimal(60000), market=True, reduce_only=True)
