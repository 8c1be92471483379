"""Price sanity checks of a NEW signal (Cornix CX-POST / CX-10X, IDP target rule).

* every price is positive;
* the stop is on the losing side of every entry (LONG: below, SHORT: above);
* every target is on the winning side of every entry;
* no two prices are more than 10x apart.

Without entry prices (a market entry) the stop and the targets are checked against each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain
from typing import Literal

MAX_RATIO = Decimal(10)

SideName = Literal["LONG", "SHORT"]


@dataclass(frozen=True)
class Prices:
    """The prices of one signal, as written."""

    side: SideName
    entries: tuple[Decimal, ...]
    stop: Decimal | None
    targets: tuple[Decimal, ...]

    def all(self) -> list[Decimal]:
        stop = () if self.stop is None else (self.stop,)
        return list(chain(self.entries, stop, self.targets))


def infer_side(stop: Decimal | None, targets: Sequence[Decimal]) -> SideName | None:
    """LONG when every target is above the stop, SHORT when every one is below; else None."""
    if stop is None or not targets:
        return None
    if all(target > stop for target in targets):
        return "LONG"
    if all(target < stop for target in targets):
        return "SHORT"
    return None


def price_problems(prices: Prices) -> list[str]:
    """Every reason the prices cannot be traded, in plain words (empty when they can)."""
    nonpositive = [p for p in prices.all() if p <= 0]
    if nonpositive:
        return [f"price {nonpositive[0]} is not a price"]
    return [*_stop_problems(prices), *_target_problems(prices), *_ratio_problems(prices)]


def _stop_problems(prices: Prices) -> list[str]:
    stop = prices.stop
    reference = prices.entries or prices.targets
    if stop is None or not reference:
        return []
    what = "entry" if prices.entries else "take-profit"
    if prices.side == "LONG" and stop >= min(reference):
        return [f"stop-loss {stop} is not below the {what} for a LONG"]
    if prices.side == "SHORT" and stop <= max(reference):
        return [f"stop-loss {stop} is not above the {what} for a SHORT"]
    return []


def _target_problems(prices: Prices) -> list[str]:
    if not prices.entries:
        return []
    if prices.side == "LONG":
        wrong = [t for t in prices.targets if t <= max(prices.entries)]
        where = "above"
    else:
        wrong = [t for t in prices.targets if t >= min(prices.entries)]
        where = "below"
    if wrong:
        return [f"take-profit {wrong[0]} is not {where} the entry for a {prices.side}"]
    return []


def _ratio_problems(prices: Prices) -> list[str]:
    values = prices.all()
    if len(values) < 2:
        return []
    low, high = min(values), max(values)
    if high > low * MAX_RATIO:
        return [f"prices more than 10x apart ({low} and {high})"]
    return []
