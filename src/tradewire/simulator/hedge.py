"""Position mode (one-way / hedge) and margin type (CROSSED / ISOLATED), and the order rules
that depend on them (reference §5.2-§5.4).

- ``POST /fapi/v1/positionSide/dual`` is account-wide: unchanged -4059, refused with any open
  order or algo order (-4067) or any position (-4068).
- ``POST /fapi/v1/marginType`` is per symbol: unchanged -4046, open orders -4047, position -4048.
- In hedge mode ``positionSide`` LONG/SHORT is mandatory, BOTH only in one-way mode (-4061);
  ``reduceOnly`` is not accepted (-1106); closePosition must close its own side (SELL LONG,
  BUY SHORT).
"""

from __future__ import annotations

from tradewire.simulator import errors as err
from tradewire.simulator import rejects
from tradewire.simulator.core import Core
from tradewire.simulator.model import HEDGE_SIDES, Account, is_closing

MARGIN_TYPES = frozenset({"ISOLATED", "CROSSED"})


def set_position_mode(core: Core, api_key: str, dual: bool) -> None:
    account = core.account(api_key)
    if account.dual_side == dual:
        raise err.reject(rejects.NO_NEED_TO_CHANGE_POSITION_SIDE)
    if any(core.account_open_orders(api_key)) or any(core.account_open_algos(api_key)):
        raise err.reject(rejects.POSITION_SIDE_OPEN_ORDERS)
    if any(p.amount for p in account.positions.values()):
        raise err.reject(rejects.POSITION_SIDE_POSITION)
    account.dual_side = dual


def set_margin_type(core: Core, api_key: str, symbol: str, margin_type: str) -> None:
    account = core.account(api_key)
    core.spec(symbol)
    if margin_type not in MARGIN_TYPES:
        raise err.invalid_enum("marginType")
    if account.margin_type(symbol) == margin_type:
        raise err.reject(rejects.NO_NEED_TO_CHANGE_MARGIN_TYPE)
    if core.open_count(api_key, symbol):
        raise err.reject(rejects.MARGIN_TYPE_OPEN_ORDERS)
    if any(p.amount for p in account.positions.values() if p.symbol == symbol):
        raise err.reject(rejects.MARGIN_TYPE_POSITION)
    account.margin_types[symbol] = margin_type


def check_position_side(account: Account, position_side: str, reduce_only: bool) -> None:
    """-4061 when positionSide does not fit the account's mode; -1106 reduceOnly in hedge."""
    if position_side not in account.position_sides:
        raise err.reject(rejects.POSITION_SIDE_NOT_MATCH)
    if account.dual_side and reduce_only:
        raise err.not_required("reduceOnly")


def check_close_position(position_side: str, side: str) -> None:
    """Hedge mode: closePosition BUY is not allowed with LONG, nor SELL with SHORT."""
    if position_side in HEDGE_SIDES and not is_closing(position_side, side):
        raise err.reject(rejects.CLOSE_POSITION_SIDE)
