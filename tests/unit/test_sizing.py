"""Order sizes: per-user caps and a position split over several targets."""

from decimal import Decimal

from tradewire.domain import Side, Signal, Target
from tradewire.exchange.rules import Lot
from tradewire.trading.sizing import apply_caps, split_quantity

LOT = Lot(min_qty=Decimal("0.001"), max_qty=Decimal(1000), step=Decimal("0.001"))


def signal(size: str = "1000", leverage: int = 20) -> Signal:
    return Signal("s", "BTCUSDT", Side.LONG, Decimal(58000), (Target(Decimal(62000), Decimal(1)),),
                  leverage, Decimal(size))


def test_caps_lower_size_and_leverage_and_say_so() -> None:
    """A user's caps lower the signal's size and leverage, with a note for each."""
    sizing = apply_caps(signal(), max_leverage=5, max_position_usdt=Decimal(200))
    assert sizing.size_usdt == Decimal(200) and sizing.leverage == 5 and len(sizing.notes) == 2


def test_caps_never_raise_a_signal() -> None:
    """Caps above the signal change nothing."""
    sizing = apply_caps(signal("100", 3), max_leverage=50, max_position_usdt=Decimal(10_000))
    assert (sizing.size_usdt, sizing.leverage, sizing.notes) == (Decimal(100), 3, ())


def test_split_rounds_down_and_gives_the_remainder_to_the_last_target() -> None:
    """Shares 1/3 each of 0.010 → 0.003, 0.003, 0.004: always the whole quantity."""
    third = Decimal(1) / 3
    targets = [Target(Decimal(p), third) for p in (61000, 62000, 63000)]
    parts = split_quantity(Decimal("0.010"), targets, LOT)
    assert parts == [Decimal("0.003"), Decimal("0.003"), Decimal("0.004")]
    assert sum(parts) == Decimal("0.010")


def test_a_share_below_the_lot_minimum_is_skipped_and_kept_for_the_next() -> None:
    """A target whose share rounds below the minimum gets 0; the quantity moves on."""
    targets = [Target(Decimal(61000), Decimal("0.05")), Target(Decimal(62000), Decimal("0.95"))]
    assert split_quantity(Decimal("0.010"), targets, LOT) == [Decimal(0), Decimal("0.010")]
