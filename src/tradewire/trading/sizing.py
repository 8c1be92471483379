"""How big each order is: per-user caps on the signal, and a position split over its targets.
Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from tradewire.domain import Signal, Target
from tradewire.exchange.rules import Lot


@dataclass(frozen=True)
class Sizing:
    size_usdt: Decimal
    leverage: int
    notes: tuple[str, ...] = ()


def apply_caps(
    signal: Signal, max_leverage: int | None, max_position_usdt: Decimal | None
) -> Sizing:
    """The signal's size and leverage, lowered to the user's caps (a cap never raises them)."""
    notes = []
    size, leverage = signal.size_usdt, signal.leverage
    if max_position_usdt is not None and size > max_position_usdt:
        notes.append(f"size capped from {size} to the user's {max_position_usdt} USDT")
        size = max_position_usdt
    if max_leverage is not None and leverage > max_leverage:
        notes.append(f"leverage capped from {leverage}x to the user's {max_leverage}x")
        leverage = max_leverage
    return Sizing(size, leverage, tuple(notes))


def split_quantity(total: Decimal, targets: Sequence[Target], lot: Lot) -> list[Decimal]:
    """The quantity each target closes: its share rounded down to the lot step, the last target
    taking the remainder. A share too small for the lot's minimum gives 0 (that target is
    skipped and its quantity stays for the following ones), so the parts always add up to
    ``total``."""
    parts: list[Decimal] = []
    left = total
    for index, target in enumerate(targets):
        if index == len(targets) - 1:
            part = left
        else:
            part = _floor(total * target.share, lot.step)
            if part < max(lot.min_qty, lot.step, Decimal(0)) or part > left:
                part = Decimal(0)
        parts.append(part)
        left -= part
    return parts


def _floor(value: Decimal, step: Decimal) -> Decimal:
    if step <= 0:
        return value
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step
