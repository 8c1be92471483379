"""User-data stream payloads with the exchange's exact field names (reference §4).

Numbers are strings except ids, times and booleans.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tradewire.simulator import ledger
from tradewire.simulator.market import SymbolSpec, money, plain
from tradewire.simulator.model import Account, AlgoOrder, Order, Position, Trade

Payload = dict[str, Any]


def qty_or_zero(spec: SymbolSpec, value: Decimal) -> str:
    return spec.qty_str(value) if value else "0"


def price_or_zero(spec: SymbolSpec, value: Decimal) -> str:
    return spec.price_str(value) if value else "0"


def average(spec: SymbolSpec, value: Decimal) -> str:
    """An average price: on the tick when it is, else up to 8 decimals."""
    if not value:
        return "0"
    on_tick = value.quantize(Decimal(1).scaleb(-spec.price_precision))
    return spec.price_str(value) if on_tick == value else plain(value.quantize(Decimal("1e-8")))


def order_trade_update(
    order: Order, spec: SymbolSpec, *, execution: str, now: int,
    trade: Trade | None = None, expiry_reason: int = 0,
) -> Payload:
    """``ORDER_TRADE_UPDATE`` for one execution (NEW, TRADE, CANCELED, EXPIRED, CALCULATED)."""
    body: Payload = {
        "s": order.symbol, "c": order.client_order_id, "S": order.side, "o": order.type,
        "f": order.time_in_force, "q": spec.qty_str(order.quantity),
        "p": price_or_zero(spec, order.price), "ap": average(spec, order.avg_price),
        "sp": price_or_zero(spec, order.stop_price), "x": execution, "X": order.status,
        "i": order.order_id,
        "l": qty_or_zero(spec, trade.qty) if trade else "0",
        "z": qty_or_zero(spec, order.executed_qty),
        "L": price_or_zero(spec, trade.price) if trade else "0",
    }
    if trade is not None and trade.commission:
        body.update({"N": "USDT", "n": money(trade.commission)})
    body.update({
        "T": now, "t": trade.trade_id if trade else 0, "b": "0", "a": "0",
        "m": trade.maker if trade else False, "R": order.reduce_only,
        "wt": order.working_type, "ot": order.orig_type, "ps": order.position_side,
        "cp": order.close_position,
    })
    if order.callback_rate is not None:
        body.update({"AP": price_or_zero(spec, order.activate_price or Decimal(0)),
                     "cr": plain(order.callback_rate)})
    body.update({
        "pP": order.price_protect, "si": 0, "ss": 0,
        "rp": money(trade.realized_pnl) if trade else "0",
        "V": order.self_trade_prevention, "pm": "NONE", "gtd": 0, "er": str(expiry_reason),
    })
    return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": body}


def algo_update(algo: AlgoOrder, spec: SymbolSpec, *, now: int) -> Payload:
    """``ALGO_UPDATE`` carrying the algo order's current status."""
    triggered = bool(algo.actual_order_id)
    body: Payload = {
        "caid": algo.client_algo_id, "aid": algo.algo_id, "at": "CONDITIONAL",
        "o": algo.order_type, "s": algo.symbol, "S": algo.side, "ps": algo.position_side,
        "f": algo.time_in_force, "q": qty_or_zero(spec, algo.quantity), "X": algo.status,
        "ai": algo.actual_order_id,
        "ap": spec.price_str(algo.actual_price) if algo.actual_price else "0.00000",
        "aq": spec.qty_str(algo.executed_qty) if algo.executed_qty else "0.00000",
        "act": ("MARKET" if algo.is_market else "LIMIT") if triggered else "0",
        "tp": price_or_zero(spec, algo.trigger_price), "p": spec.price_str(algo.price),
        "V": algo.self_trade_prevention, "wt": algo.working_type, "pm": "NONE",
        "cp": algo.close_position, "pP": algo.price_protect,
        "R": algo.reduce_only or algo.close_position, "tt": algo.trigger_time, "gtd": 0,
        "rm": algo.reject_reason,
    }
    if algo.is_trailing:
        body["ia"] = algo.activated
    return {"e": "ALGO_UPDATE", "T": now, "E": now, "o": body}


def position_entry(position: Position, spec: SymbolSpec, mark: Decimal, *,
                   isolated: bool = False) -> Payload:
    return {
        "s": position.symbol, "pa": qty_or_zero(spec, position.amount),
        "ep": plain(position.entry_price.quantize(Decimal("1e-8"))),
        "bep": plain(ledger.breakeven(position).quantize(Decimal("1e-8"))),
        "cr": money(position.realized), "up": money(ledger.unrealized(position, mark)),
        "mt": "isolated" if isolated else "cross",
        "iw": money(position.isolated_wallet) if isolated else "0", "ps": position.side,
    }


def account_update(
    account: Account, position: Position, spec: SymbolSpec, mark: Decimal, *, now: int,
    reason: str = "ORDER",
) -> Payload:
    """``ACCOUNT_UPDATE`` after a fill: the USDT balance and the one changed position."""
    balance = {"a": "USDT", "wb": money(account.wallet),
               "cw": money(ledger.cross_wallet(account)), "bc": "0"}
    entry = position_entry(position, spec, mark, isolated=account.is_isolated(position.symbol))
    return {
        "e": "ACCOUNT_UPDATE", "E": now, "T": now,
        "a": {"m": reason, "B": [balance], "P": [entry]},
    }


def trade_lite(order: Order, trade: Trade, spec: SymbolSpec, *, now: int) -> Payload:
    return {
        "e": "TRADE_LITE", "E": now, "T": now, "s": order.symbol,
        "q": spec.qty_str(order.quantity), "p": price_or_zero(spec, order.price),
        "m": trade.maker, "c": order.client_order_id, "S": order.side,
        "L": spec.price_str(trade.price), "l": spec.qty_str(trade.qty),
        "t": trade.trade_id, "i": order.order_id,
    }


def listen_key_expired(listen_key: str, *, now: int) -> Payload:
    return {"e": "listenKeyExpired", "E": now, "listenKey": listen_key}

