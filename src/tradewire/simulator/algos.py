"""The Algo Service: conditional orders held until the mark reaches their trigger price.

Lifecycle: NEW -> TRIGGERING -> TRIGGERED (an order ``ai`` placed in the matching engine, with
``c`` = clientAlgoId) -> FINISHED once that order is filled or cancelled. REJECTED when the
engine refuses the order at trigger time; EXPIRED for closePosition orders when their position
goes flat, and for every algo order of a symbol being liquidated; CANCELED on request.
TRAILING_STOP_MARKET orders follow ``trailing``; the others the trigger rule in ``model.fires``.
"""

from __future__ import annotations

from decimal import Decimal

from tradewire.simulator import errors as err
from tradewire.simulator import events, hedge, ledger, trailing
from tradewire.simulator.core import Core
from tradewire.simulator.matching import Matching
from tradewire.simulator.model import ZERO, AlgoOrder, Order, fires, is_closing, random_token
from tradewire.simulator.params import AlgoRequest

REDUCE_ONLY_REJECT = "Reduce Only reject"
MARGIN_REJECT = "Margin is insufficient."


class AlgoService:
    def __init__(self, core: Core, matching: Matching) -> None:
        self.core = core
        self.matching = matching
        matching.listeners.append(self._on_order)

    def place(self, api_key: str, req: AlgoRequest) -> AlgoOrder:
        """Validate and hold a conditional order (ALGO_UPDATE NEW)."""
        self._validate(api_key, req)
        now = self.core.now()
        algo_client_id = req.client_algo_id or random_token(22)
        algo = AlgoOrder(
            api_key=api_key, symbol=req.symbol, algo_id=self.core.next_algo_id(),
            client_algo_id=algo_client_id, side=req.side, order_type=req.type,
            quantity=req.quantity or ZERO, trigger_price=req.trigger_price or ZERO,
            price=req.price or ZERO, time_in_force=req.time_in_force,
            reduce_only=req.reduce_only, close_position=req.close_position,
            working_type=req.working_type, price_protect=req.price_protect, create_time=now,
            self_trade_prevention=req.self_trade_prevention, position_side=req.position_side,
            activate_price=req.activate_price, callback_rate=req.callback_rate,
        )
        if algo.is_trailing:
            trailing.start(algo, self.core.marks[req.symbol])
        self.core.used_algo_ids[api_key].add(algo_client_id)
        self.core.add_algo(algo)
        self._emit(algo)
        return algo

    def _validate(self, api_key: str, req: AlgoRequest) -> None:
        spec = self.core.spec(req.symbol)
        hedge.check_position_side(self.core.account(api_key), req.position_side, req.reduce_only)
        if req.close_position:
            hedge.check_close_position(req.position_side, req.side)
        if req.client_algo_id and req.client_algo_id in self.core.used_algo_ids[api_key]:
            raise err.reject(err.CLIENT_ID_DUPLICATED)
        mark = self.core.marks[req.symbol]
        for price in (req.trigger_price, req.price, req.activate_price):
            if price is not None:
                spec.check_price(price)
        if req.quantity is not None:
            spec.check_qty(req.quantity, market=req.type.endswith("_MARKET"))
            plain = not (req.reduce_only or req.close_position
                         or is_closing(req.position_side, req.side))
            notional = req.price or req.trigger_price or req.activate_price or mark
            if plain and req.quantity * notional < spec.min_notional:
                raise err.min_notional(spec.min_notional)
        if self.core.open_count(api_key, req.symbol) >= spec.max_num_orders:
            raise err.reject(err.MAX_OPEN_ORDERS)
        if req.trigger_price is None:
            trailing.check_activation(req.side, req.activate_price, mark)
        elif fires(req.type, req.side, req.trigger_price, mark):
            raise err.reject(err.WOULD_TRIGGER)

    def cancel(self, algo: AlgoOrder) -> AlgoOrder:
        if not algo.is_open:
            raise err.reject(err.UNKNOWN_ORDER)
        self._close(algo, "CANCELED")
        return algo

    def on_mark(self, symbol: str) -> None:
        """Trigger every open algo order of ``symbol`` whose condition the mark now meets."""
        mark = self.core.marks[symbol]
        for algo in sorted(self.core.open_algos[symbol].values(), key=lambda a: a.algo_id):
            if algo.status != "NEW":
                continue
            if trailing.observe(algo, mark) if algo.is_trailing else algo.fires_at(mark):
                self._trigger(algo)

    def expire_all(self, api_key: str, symbol: str) -> None:
        """The symbol is being liquidated: its open algo orders end EXPIRED."""
        for algo in sorted(self.core.account_open_algos(api_key, symbol), key=lambda a: a.algo_id):
            self._close(algo, "EXPIRED")

    def _trigger(self, algo: AlgoOrder) -> None:
        now = self.core.now()
        algo.status, algo.trigger_time, algo.update_time = "TRIGGERING", now, now
        self._emit(algo)
        qty, reason = self._sizing(algo)
        if reason:
            algo.reject_reason = reason
            self._close(algo, "REJECTED")
            return
        order = self._child_order(algo, qty)
        algo.status, algo.actual_order_id = "TRIGGERED", str(order.order_id)
        self.core.close_algo(algo)
        self._emit(algo)
        self.matching.submit(order)

    def _sizing(self, algo: AlgoOrder) -> tuple[Decimal, str]:
        """The quantity to send at trigger time, or the reason it cannot be sent."""
        position = self.core.account(algo.api_key).position(algo.symbol, algo.position_side)
        if algo.reduces_only:
            reducible = ledger.reducible_qty(position, algo.side)
            if not reducible:
                return ZERO, REDUCE_ONLY_REJECT
            return (reducible if algo.close_position else min(algo.quantity, reducible)), ""
        price = algo.price or self.core.marks[algo.symbol]
        try:
            self.matching.check_margin(algo.api_key, algo.symbol, algo.side, algo.quantity, price,
                                       position_side=algo.position_side)
        except err.SimError:
            return ZERO, MARGIN_REJECT
        return algo.quantity, ""

    def _child_order(self, algo: AlgoOrder, qty: Decimal) -> Order:
        return Order(
            api_key=algo.api_key, symbol=algo.symbol,
            order_id=self.core.next_order_id(algo.symbol), client_order_id=algo.client_algo_id,
            side=algo.side, type="MARKET" if algo.is_market else "LIMIT", quantity=qty,
            price=ZERO if algo.is_market else algo.price, time_in_force=algo.time_in_force,
            reduce_only=algo.reduce_only or algo.close_position, time=self.core.now(),
            position_side=algo.position_side, orig_type=algo.order_type,
            stop_price=algo.trigger_price, close_position=algo.close_position,
            working_type=algo.working_type, price_protect=algo.price_protect,
            self_trade_prevention=algo.self_trade_prevention, algo_id=algo.algo_id,
            activate_price=algo.activate_price, callback_rate=algo.callback_rate,
        )

    def _on_order(self, order: Order) -> None:
        """After a fill/cancel/expiry: finish the algo order behind it; expire closePosition
        orders when the position is flat."""
        if order.algo_id is not None and not order.is_open:
            self._finish(order)
        account = self.core.account(order.api_key)
        if not order.executed_qty:
            return
        for algo in list(self.core.account_open_algos(order.api_key, order.symbol)):
            flat = not account.position(algo.symbol, algo.position_side).amount
            if flat and algo.close_position and algo.status == "NEW":
                self._close(algo, "EXPIRED")

    def _finish(self, order: Order) -> None:
        algo = next((a for a in self.core.algos_of[order.api_key]
                     if a.algo_id == order.algo_id and a.symbol == order.symbol), None)
        if algo is None or algo.status != "TRIGGERED":
            return
        algo.actual_price, algo.executed_qty = order.avg_price, order.executed_qty
        self._close(algo, "FINISHED")

    def _close(self, algo: AlgoOrder, status: str) -> None:
        algo.status, algo.update_time = status, self.core.now()
        self.core.close_algo(algo)
        self._emit(algo)

    def _emit(self, algo: AlgoOrder) -> None:
        spec = self.core.specs[algo.symbol]
        self.core.emit(algo.api_key, events.algo_update(algo, spec, now=self.core.now()))
