"""TRAILING_STOP_MARKET (reference §5.3): follow the best price, fire on the callback.

- SELL: activates once the price reaches ``activatePrice`` (>=), or at placement without one,
  then tracks the highest price since; fires when price <= highest * (1 - callbackRate / 100).
- BUY mirrors it: activates at price <= ``activatePrice``, tracks the lowest price, fires when
  price >= lowest * (1 + callbackRate / 100).
- An ``activatePrice`` the mark has already passed (SELL <= mark, BUY >= mark) answers -2021.
"""

from __future__ import annotations

from decimal import Decimal

from tradewire.simulator import errors as err
from tradewire.simulator.model import AlgoOrder


def check_activation(side: str, activate_price: Decimal | None, mark: Decimal) -> None:
    """-2021 when the activation price would activate the order at once."""
    if activate_price is None:
        return
    passed = activate_price <= mark if side == "SELL" else activate_price >= mark
    if passed:
        raise err.reject(err.WOULD_TRIGGER)


def start(algo: AlgoOrder, mark: Decimal) -> None:
    """At placement: without an activation price the order tracks from the current mark."""
    if algo.activate_price is None:
        algo.activated, algo.extreme = True, mark


def stop_level(algo: AlgoOrder) -> Decimal:
    """The price at which an activated order fires now."""
    rate = (algo.callback_rate or Decimal(0)) / 100
    return algo.extreme * (1 - rate) if algo.side == "SELL" else algo.extreme * (1 + rate)


def observe(algo: AlgoOrder, price: Decimal) -> bool:
    """Feed one price (in time order); True when the order fires at it."""
    selling = algo.side == "SELL"
    if not algo.activated:
        target = algo.activate_price or price
        if (price < target) if selling else (price > target):
            return False
        algo.activated, algo.extreme = True, price
    else:
        algo.extreme = max(algo.extreme, price) if selling else min(algo.extreme, price)
    return fires(algo, price)


def fires(algo: AlgoOrder, price: Decimal) -> bool:
    """Whether ``price`` is on the firing side of the current stop level."""
    if not algo.activated:
        return False
    level = stop_level(algo)
    return price <= level if algo.side == "SELL" else price >= level
