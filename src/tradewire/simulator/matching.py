"""The matching engine: LIMIT and MARKET orders against the mark price, fills, cancels.

Takers fill at the mark moved against them by the symbol's slippage (``Core.slippage_bps``,
0 by default, rounded to the tick away from the taker), never past a LIMIT order's price;
resting LIMIT orders fill at their own price as makers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal

from tradewire.simulator import errors as err
from tradewire.simulator import events, hedge, ledger
from tradewire.simulator.core import Core
from tradewire.simulator.model import ZERO, Order, Trade, is_closing, random_token
from tradewire.simulator.params import OrderRequest

OrderListener = Callable[[Order], None]

ER_NONE, ER_IOC, ER_REDUCE_ONLY, ER_LIQUIDATION = 0, 2, 4, 5


class Matching:
    """Orders in the matching engine. Every change is pushed to ``core.outbox``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.listeners: list[OrderListener] = []  # told after every fill, cancel or expiry

    # -- placement -----------------------------------------------------------------------

    def place(self, api_key: str, req: OrderRequest) -> Order:
        """Validate, accept (ORDER_TRADE_UPDATE NEW) and match one order.

        Returns the order as it stood on acceptance for ``newOrderRespType=ACK``, else its
        state after matching."""
        account = self.core.account(api_key)
        self._validate(api_key, req)
        now = self.core.now()
        client_id = req.client_order_id or random_token(22)
        order = Order(
            api_key=api_key, symbol=req.symbol, order_id=self.core.next_order_id(req.symbol),
            client_order_id=client_id, side=req.side, type=req.type, quantity=req.quantity,
            price=req.price or ZERO, time_in_force=req.time_in_force,
            reduce_only=req.reduce_only, time=now, position_side=req.position_side,
            self_trade_prevention=req.self_trade_prevention,
        )
        self.core.used_client_ids[account.api_key].add(client_id)
        accepted = self.submit(order)
        return accepted if req.resp_type == "ACK" else order

    def submit(self, order: Order) -> Order:
        """Put an order in the book, announce it and match it now; returns its NEW snapshot."""
        self.core.add_order(order)
        self.emit_update(order, "NEW")
        accepted = copy.copy(order)
        mark = self.core.marks[order.symbol]
        if order.type == "MARKET" or self._crosses(order, mark):
            self.fill(order, self.taker_price(order), maker=False)
        elif order.time_in_force in ("IOC", "FOK"):
            self.expire(order, ER_IOC)
        return accepted

    def taker_price(self, order: Order) -> Decimal:
        """The mark, moved against the taker by the slippage; capped by a LIMIT price."""
        mark = self.core.marks[order.symbol]
        bps = self.core.slippage_of(order.symbol)
        buying = order.side == "BUY"
        price = mark
        if bps:
            moved = mark * (1 + bps / 10_000) if buying else mark * (1 - bps / 10_000)
            price = self.core.specs[order.symbol].to_tick(moved, up=buying)
        if order.type == "LIMIT":
            price = min(price, order.price) if buying else max(price, order.price)
        return price

    def _validate(self, api_key: str, req: OrderRequest) -> None:
        spec = self.core.spec(req.symbol)
        account = self.core.account(api_key)
        hedge.check_position_side(account, req.position_side, req.reduce_only)
        if req.client_order_id and req.client_order_id in self.core.used_client_ids[api_key]:
            raise err.reject(err.CLIENT_ID_DUPLICATED)
        mark = self.core.marks[req.symbol]
        if req.price is not None:
            spec.check_price(req.price)
            spec.check_percent_price(req.side, req.price, mark)
        spec.check_qty(req.quantity, market=req.type == "MARKET")
        position = account.position(req.symbol, req.position_side)
        reduces = req.reduce_only or is_closing(req.position_side, req.side)
        if reduces and not ledger.reducible_qty(position, req.side):
            raise err.reject(err.REDUCE_ONLY_REJECTED)
        price = req.price if req.price is not None else mark
        if not reduces and req.quantity * price < spec.min_notional:
            raise err.min_notional(spec.min_notional)
        if self.core.open_count(api_key, req.symbol) >= spec.max_num_orders:
            raise err.reject(err.MAX_OPEN_ORDERS)
        if not reduces:
            self.check_margin(api_key, req.symbol, req.side, req.quantity, price,
                              position_side=req.position_side)
        if req.time_in_force == "GTX" and req.price is not None and self._would_take(
            req.side, req.price, mark
        ):
            raise err.bad(-5022, "Due to the order could not be executed as maker, "
                                 "the Post Only order will be rejected.")

    def check_margin(self, api_key: str, symbol: str, side: str, qty: Decimal,
                     price: Decimal, *, position_side: str = "BOTH") -> None:
        """-2019 when the initial margin of the opening part exceeds the available balance."""
        account = self.core.account(api_key)
        opening = ledger.opening_qty(account.position(symbol, position_side), side, qty)
        needed = opening * price / account.leverage_of(symbol)
        orders = list(self.core.account_open_orders(api_key))
        if needed > ledger.available_balance(account, self.core.marks, orders):
            raise err.reject(err.MARGIN_INSUFFICIENT)

    # -- matching ------------------------------------------------------------------------

    @staticmethod
    def _would_take(side: str, price: Decimal, mark: Decimal) -> bool:
        return price >= mark if side == "BUY" else price <= mark

    def _crosses(self, order: Order, mark: Decimal) -> bool:
        return order.type == "LIMIT" and self._would_take(order.side, order.price, mark)

    def on_mark(self, symbol: str) -> None:
        """Fill resting LIMIT orders the mark has crossed (BUY: mark <= price; SELL: >=)."""
        mark = self.core.marks[symbol]
        for order in sorted(self.core.open_orders[symbol].values(), key=lambda o: o.order_id):
            if order.is_open and self._crosses(order, mark):
                self.fill(order, order.price, maker=True)

    def fill(self, order: Order, price: Decimal, *, maker: bool) -> None:
        """Fill what remains (reduce-only: at most the position), then expire any rest."""
        remaining = order.quantity - order.executed_qty
        if order.reduces_only:
            position = self.core.account(order.api_key).position(order.symbol,
                                                                 order.position_side)
            remaining = min(remaining, ledger.reducible_qty(position, order.side))
        if remaining > 0:
            self.execute(order, remaining, price, maker=maker)
        if order.is_open:
            self.expire(order, ER_REDUCE_ONLY)

    def execute(self, order: Order, qty: Decimal, price: Decimal, *, maker: bool,
                execution: str = "TRADE") -> None:
        """One fill: position, wallet, trade; ACCOUNT_UPDATE, TRADE_LITE (trades only) and
        ORDER_TRADE_UPDATE with ``execution`` (TRADE, or CALCULATED for a liquidation)."""
        now = self.core.now()
        account = self.core.account(order.api_key)
        position = account.position(order.symbol, order.position_side)
        realized, fee = ledger.book_fill(account, position, order.side, qty, price,
                                         maker=maker, now=now)
        order.executed_qty += qty
        order.cum_quote += qty * price
        order.status = "FILLED" if order.executed_qty >= order.quantity else "PARTIALLY_FILLED"
        order.update_time = now
        trade = Trade(
            api_key=order.api_key, symbol=order.symbol,
            trade_id=self.core.next_trade_id(order.symbol), order_id=order.order_id,
            side=order.side, price=price, qty=qty, realized_pnl=realized, commission=fee,
            maker=maker, time=now, position_side=order.position_side,
        )
        self.core.trades_of[order.api_key].append(trade)
        if not order.is_open:
            self.core.close_order(order)
        spec, mark = self.core.specs[order.symbol], self.core.marks[order.symbol]
        self.core.emit(order.api_key,
                       events.account_update(account, position, spec, mark, now=now))
        if execution == "TRADE":
            self.core.emit(order.api_key, events.trade_lite(order, trade, spec, now=now))
        self.emit_update(order, execution, trade=trade, now=now)
        self._notify(order)

    # -- cancel / expire -----------------------------------------------------------------

    def cancel(self, order: Order) -> Order:
        if not order.is_open:
            raise err.reject(err.UNKNOWN_ORDER)
        self._finish(order, "CANCELED", ER_NONE)
        return order

    def expire(self, order: Order, reason: int) -> None:
        self._finish(order, "EXPIRED", reason)

    def _finish(self, order: Order, status: str, reason: int) -> None:
        order.status = status
        order.update_time = self.core.now()
        self.core.close_order(order)
        self.emit_update(order, status, expiry_reason=reason)
        self._notify(order)

    def emit_update(self, order: Order, execution: str, *, trade: Trade | None = None,
                     expiry_reason: int = ER_NONE, now: int | None = None) -> None:
        """ORDER_TRADE_UPDATE of ``order``; ``now``: its event and transaction time (a fill
        passes its trade's time: the stream's ``T`` and the REST trade's ``time`` are one)."""
        payload = events.order_trade_update(
            order, self.core.specs[order.symbol], execution=execution,
            now=self.core.now() if now is None else now, trade=trade,
            expiry_reason=expiry_reason,
        )
        self.core.emit(order.api_key, payload)

    def _notify(self, order: Order) -> None:
        for listener in self.listeners:
            listener(order)
