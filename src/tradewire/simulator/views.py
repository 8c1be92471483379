"""REST response bodies with the exchange's field names (reference §5)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tradewire.simulator import ledger
from tradewire.simulator.events import average, price_or_zero, qty_or_zero
from tradewire.simulator.market import SymbolSpec, money, plain
from tradewire.simulator.model import Account, AlgoOrder, Order, Position, Trade

Body = dict[str, Any]


def order_body(order: Order, spec: SymbolSpec, *, with_time: bool = False) -> Body:
    """``POST/GET/DELETE /fapi/v1/order`` object."""
    body: Body = {
        "clientOrderId": order.client_order_id,
        "cumQty": qty_or_zero(spec, order.executed_qty),
        "cumQuote": money(order.cum_quote) if order.cum_quote else "0",
        "executedQty": qty_or_zero(spec, order.executed_qty),
        "orderId": order.order_id,
        "avgPrice": average(spec, order.avg_price) if order.executed_qty else "0.00",
        "origQty": spec.qty_str(order.quantity),
        "price": price_or_zero(spec, order.price),
        "reduceOnly": order.reduce_only,
        "side": order.side,
        "positionSide": order.position_side,
        "status": order.status,
        "stopPrice": price_or_zero(spec, order.stop_price),
        "closePosition": order.close_position,
        "symbol": order.symbol,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "origType": order.orig_type,
        "updateTime": order.update_time,
        "workingType": order.working_type,
        "priceProtect": order.price_protect,
        "priceMatch": "NONE",
        "selfTradePreventionMode": order.self_trade_prevention,
        "goodTillDate": 0,
    }
    if order.callback_rate is not None:
        body["activatePrice"] = price_or_zero(spec, order.activate_price or Decimal(0))
        body["priceRate"] = plain(order.callback_rate)
    if with_time:
        body["time"] = order.time
    return body


def algo_body(algo: AlgoOrder, spec: SymbolSpec) -> Body:
    """``POST/GET /fapi/v1/algoOrder`` object."""
    return {
        "algoId": algo.algo_id,
        "clientAlgoId": algo.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": algo.order_type,
        "symbol": algo.symbol,
        "side": algo.side,
        "positionSide": algo.position_side,
        "timeInForce": algo.time_in_force,
        "quantity": qty_or_zero(spec, algo.quantity),
        "algoStatus": algo.status,
        "actualOrderId": algo.actual_order_id,
        "actualPrice": spec.price_str(algo.actual_price) if algo.actual_price else "",
        "triggerPrice": price_or_zero(spec, algo.trigger_price),
        "price": spec.price_str(algo.price),
        "icebergQuantity": None,
        "tpTriggerPrice": "0",
        "tpPrice": "0",
        "slTriggerPrice": "0",
        "slPrice": "0",
        "tpOrderType": "",
        "selfTradePreventionMode": algo.self_trade_prevention,
        "workingType": algo.working_type,
        "priceMatch": "NONE",
        "closePosition": algo.close_position,
        "priceProtect": algo.price_protect,
        "reduceOnly": algo.reduce_only,
        "activatePrice": price_or_zero(spec, algo.activate_price) if algo.activate_price else "",
        "callbackRate": plain(algo.callback_rate) if algo.callback_rate is not None else "",
        "createTime": algo.create_time,
        "updateTime": algo.update_time,
        "triggerTime": algo.trigger_time,
        "goodTillDate": 0,
    }


def algo_cancel_body(algo: AlgoOrder) -> Body:
    return {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id,
            "code": "200", "msg": "success"}


def trade_body(trade: Trade, spec: SymbolSpec) -> Body:
    """One ``GET /fapi/v1/userTrades`` row."""
    return {
        "buyer": trade.side == "BUY",
        "commission": money(trade.commission),
        "commissionAsset": "USDT",
        "id": trade.trade_id,
        "maker": trade.maker,
        "orderId": trade.order_id,
        "price": spec.price_str(trade.price),
        "qty": spec.qty_str(trade.qty),
        "quoteQty": money(trade.quote_qty),
        "realizedPnl": money(trade.realized_pnl),
        "side": trade.side,
        "positionSide": trade.position_side,
        "symbol": trade.symbol,
        "time": trade.time,
    }


def _position_common(
    position: Position, spec: SymbolSpec, mark: Decimal, isolated: bool, liquidation: Decimal
) -> Body:
    pnl = ledger.unrealized(position, mark)
    return {
        "symbol": position.symbol,
        "positionSide": position.side,
        "positionAmt": qty_or_zero(spec, position.amount) if position.amount else "0.000",
        "entryPrice": plain(position.entry_price.quantize(Decimal("1e-8"))),
        "breakEvenPrice": plain(ledger.breakeven(position).quantize(Decimal("1e-8"))),
        "markPrice": money(mark),
        "unRealizedProfit": money(pnl),
        "liquidationPrice": money(liquidation) if liquidation else "0",
        "isolatedMargin": money(position.isolated_wallet + pnl) if isolated else "0",
        "notional": money(position.amount * mark),
        "isolatedWallet": money(position.isolated_wallet) if isolated else "0",
        "updateTime": position.update_time,
    }


def position_v3(
    position: Position, spec: SymbolSpec, mark: Decimal, leverage: int, order_margin: Decimal,
    *, isolated: bool = False, liquidation: Decimal = Decimal(0),
) -> Body:
    """One ``GET /fapi/v3/positionRisk`` row."""
    body = _position_common(position, spec, mark, isolated, liquidation)
    margin = ledger.initial_margin(position, mark, leverage)
    body.update({
        "marginAsset": "USDT",
        "initialMargin": money(margin + order_margin),
        "maintMargin": money(ledger.maint_margin(position, mark)),
        "positionInitialMargin": money(margin),
        "openOrderInitialMargin": money(order_margin),
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
    })
    return body


def position_v2(position: Position, spec: SymbolSpec, mark: Decimal, leverage: int, *,
                isolated: bool = False, liquidation: Decimal = Decimal(0)) -> Body:
    """One ``GET /fapi/v2/positionRisk`` row."""
    body = _position_common(position, spec, mark, isolated, liquidation)
    body.update({
        "leverage": str(leverage),
        "maxNotionalValue": "5000000",
        "marginType": "isolated" if isolated else "cross",
        "isAutoAddMargin": "false",
        "isolated": isolated,
        "adlQuantile": 0,
    })
    return body


def balance_body(account: Account, unrealized: Decimal, available: Decimal) -> list[Body]:
    """``GET /fapi/v2|v3/balance``: one row per asset (USDT only here)."""
    return [{
        "accountAlias": "SgsR",
        "asset": "USDT",
        "balance": money(account.wallet),
        "crossWalletBalance": money(ledger.cross_wallet(account)),
        "crossUnPnl": money(unrealized),
        "availableBalance": money(available),
        "maxWithdrawAmount": money(min(available, account.wallet)),
        "marginAvailable": True,
        "updateTime": account.update_time,
    }]
