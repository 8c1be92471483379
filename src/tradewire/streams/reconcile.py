"""Reconciliation after a stream gap: a REST snapshot → the events the stream may have missed.

After any gap in an account's user-data stream (reconnect, ``listenKeyExpired``, a new shard
owner, start-up) the manager calls ``Reconciler.reconcile`` (or ``reconcile_many``). What it
looks at is scoped by the database: only the account's live trades (PENDING, OPEN, ACTIVE) and,
of those, the order legs not yet final (``processor.effects.DONE_ORDER``). An account with no
live trade costs one database query and no REST weight at all.

Per symbol with such legs, only symbol-scoped calls (never the 40-weight symbol-less ones):

1. probe — ``GET /fapi/v1/openOrders?symbol`` (1) if an entry leg is pending, and
   ``GET /fapi/v1/openAlgoOrders?symbol`` (1) if an exit leg is. A leg found open and as the
   database knows it (an entry without new fills, an algo order still ``NEW``) needs nothing
   more: a quiet account costs 1-2 weight per symbol;
2. for each other leg — ``GET /fapi/v1/order`` / ``GET /fapi/v1/algoOrder`` by client id (1);
   a triggered algo order's engine order by ``actualOrderId`` (1); and for an order with fills,
   ``GET /fapi/v1/userTrades?symbol&orderId`` (5) for its trade ids, prices, commissions.

An order the exchange does not know (-2013: not placed yet, or not yet queryable) yields
nothing: absence is never taken for a cancel. Exchange errors other than that propagate (the
caller retries the reconciliation later); nothing partial is returned.

The payloads are shaped exactly like the exchange's events (reference §4.1, §4.2) plus a
top-level ``"synthetic": true``, and each has the SAME event id
(``exchange.event_ids.event_id``) as the real event the exchange sent for that state, so a real
event seen too is a harmless duplicate for the worker:

- every fill of an order → ``ORDER_TRADE_UPDATE`` ``x=TRADE`` (``X`` PARTIALLY_FILLED, or FILLED
  on the last fill of a filled order), ``t`` = trade id, ``z`` = cumulative quantity after it;
- an order that ended without filling fully → ``x=X=CANCELED`` or ``x=EXPIRED`` with its ``X``;
- an algo order no longer waiting → ``ALGO_UPDATE`` with its current status (TRIGGERED,
  FINISHED, CANCELED, EXPIRED, REJECTED). A triggered stop-loss or take-profit also yields the
  fills of its engine order, whose ``c`` is the algo order's ``clientAlgoId``;
- a stop or target found EXPIRED (the exchange expires a symbol's algo orders when it
  liquidates it) → ``GET /fapi/v1/allOrders?symbol&startTime`` (5) for liquidation orders
  (``c`` = ``autoclose-…``) since then, whose fills become ``x=CALCULATED`` events.

They come back ordered by exchange time (``E``), each order's own events in exchange order.
``E``/``T`` are the fill's time (or the order's last update), so the worker records when the
trade really closed; ``synthetic_envelope`` wraps one for the bus with ``Envelope.synthetic``
set, which keeps it out of the event-age histogram (``metrics``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.bus.base import Envelope
from tradewire.clock import Clock, SystemClock
from tradewire.domain import Leg, TradeStatus
from tradewire.errors import UnknownOrder
from tradewire.exchange.budget import request_cost
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.event_ids import event_id, event_symbol
from tradewire.exchange.fields import Fields
from tradewire.exchange.signing import Params
from tradewire.exchange.wire_rest import AlgoOrderResponse, OrderResponse
from tradewire.logging import log
from tradewire.processor.effects import DONE_ORDER
from tradewire.processor.normalize import LIQUIDATION_PREFIX
from tradewire.store import trades as trade_store
from tradewire.store.tables import OrderStatus
from tradewire.store.tables import Trade as TradeRow
from tradewire.streams.session import AccountRef

logger = logging.getLogger("tradewire.streams.reconcile")

SYNTHETIC = "synthetic"  # the top-level key marking a payload made by reconciliation
Payload = dict[str, Any]

WAITING_ALGO = frozenset({"NEW", "TRIGGERING"})  # still in the Algo Service: nothing missed
ENDED_ORDER = {"CANCELED": "CANCELED", "EXPIRED": "EXPIRED", "EXPIRED_IN_MATCH": "EXPIRED"}
_NOT_FILLED = frozenset({str(OrderStatus.NEW), str(OrderStatus.PLACED)})
_DONE = frozenset(str(s) for s in DONE_ORDER)
_AVG_QUANTUM = Decimal("1e-8")
LIQUIDATION_LOOKBACK_MS = 60_000  # how far before our algo order's expiry to look for one


# --- what the database knows ------------------------------------------------------------------


@dataclass(frozen=True)
class PendingLeg:
    """An order leg of a live trade that is not final in the database."""

    trade_id: int
    leg: Leg
    client_id: str
    status: str  # the orders.status column
    trade_quantity: Decimal  # the trade's quantity (the entry's filled quantity once partial)


@dataclass(frozen=True)
class LiveTrade:
    trade_id: int
    account_id: int
    symbol: str
    status: TradeStatus
    legs: tuple[PendingLeg, ...]  # only the legs not yet final

    @classmethod
    def of(cls, row: TradeRow) -> Self:
        legs = tuple(
            PendingLeg(row.id, o.leg, o.client_order_id, o.status, row.quantity)
            for o in row.orders if o.status not in _DONE
        )
        return cls(row.id, row.account_id, row.symbol, row.status, legs)


# --- REST rows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fill:
    """One ``GET /fapi/v1/userTrades`` row."""

    id: int
    order_id: int
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    realized_pnl: Decimal
    maker: bool
    time: int

    @classmethod
    def from_json(cls, data: object) -> Self:
        r = Fields(data, "userTrades row")
        return cls(
            id=r.integer("id"), order_id=r.integer("orderId"), price=r.decimal("price"),
            qty=r.decimal("qty"), commission=r.decimal_or_zero("commission"),
            commission_asset=r.opt_text("commissionAsset"),
            realized_pnl=r.decimal_or_zero("realizedPnl"), maker=r.opt_flag("maker"),
            time=r.opt_integer("time"),
        )


# --- payload builders (pure) ---------------------------------------------------------------------


def _num(value: Decimal) -> str:
    return format(value, "f")


def _avg(value: Decimal) -> str:
    return format(value.quantize(_AVG_QUANTUM).normalize(), "f") if value else "0"


def order_payloads(order: OrderResponse, fills: Iterable[Fill], *,
                   client_id: str | None = None, execution: str = "TRADE") -> list[Payload]:
    """The ``ORDER_TRADE_UPDATE`` events of what happened to one engine order: one per fill
    (``fills``: its ``userTrades`` rows), then the cancel/expiry if it ended unfilled or partly
    filled. ``client_id`` overrides ``c`` (a triggered algo order's engine order carries the
    algo order's ``clientAlgoId``); ``execution`` is the fills' ``x`` (``CALCULATED`` for a
    liquidation). A NEW order without fills yields nothing.

    Cumulative quantities are counted back from the order's ``executedQty``, so fills older
    than the exchange's history window do not shift them."""
    own = sorted((f for f in fills if f.order_id == order.orderId), key=lambda f: f.id)
    cid = client_id or order.clientOrderId
    cumulative = order.executedQty
    quote = order.avgPrice * order.executedQty
    rows: list[tuple[Fill, Decimal, Decimal]] = []
    for fill in reversed(own):
        if cumulative <= 0:
            break
        rows.append((fill, cumulative, quote / cumulative))
        cumulative -= fill.qty
        quote -= fill.price * fill.qty
    rows.reverse()
    payloads: list[Payload] = []
    for n, (fill, filled, average) in enumerate(rows):
        last = n == len(rows) - 1
        status = "FILLED" if last and order.status == "FILLED" else "PARTIALLY_FILLED"
        shown = order.avgPrice if last else average
        payloads.append(_order_event(order, cid, execution, status, filled, shown, fill.time,
                                     fill))
    if order.executedQty > 0 and not rows:
        log(logger, logging.WARNING, "filled order without trade rows; fills not synthesised",
            symbol=order.symbol, orderId=order.orderId)
    ended = ENDED_ORDER.get(order.status)
    if ended is not None:
        payloads.append(_order_event(order, cid, ended, order.status, order.executedQty,
                                     order.avgPrice, order.updateTime, None))
    return payloads


def _order_event(order: OrderResponse, cid: str, execution: str, status: str,
                 filled: Decimal, average: Decimal, when: int, fill: Fill | None) -> Payload:
    body: Payload = {
        "s": order.symbol, "c": cid, "S": order.side, "o": order.type,
        "f": order.timeInForce or "GTC", "q": _num(order.origQty), "p": _num(order.price),
        "ap": _avg(average), "sp": _num(order.stopPrice), "x": execution, "X": status,
        "i": order.orderId, "l": _num(fill.qty) if fill else "0", "z": _num(filled),
        "L": _num(fill.price) if fill else "0",
    }
    if fill is not None and fill.commission:
        body.update({"N": fill.commission_asset or "USDT", "n": _num(fill.commission)})
    body.update({
        "T": when, "t": fill.id if fill else 0, "b": "0", "a": "0",
        "m": fill.maker if fill else False, "R": order.reduceOnly,
        "wt": order.workingType or "CONTRACT_PRICE", "ot": order.origType or order.type,
        "ps": order.positionSide, "cp": order.closePosition, "pP": False, "si": 0, "ss": 0,
        "rp": _num(fill.realized_pnl) if fill else "0", "V": "EXPIRE_MAKER", "pm": "NONE",
        "gtd": 0, "er": "0",
    })
    return {"e": "ORDER_TRADE_UPDATE", "E": when, "T": when, "o": body, SYNTHETIC: True}


def algo_payload(algo: AlgoOrderResponse, *, executed_qty: Decimal = Decimal(0)) -> Payload:
    """The ``ALGO_UPDATE`` announcing the algo order's current status (``executed_qty``: what
    its engine order filled, for ``aq``)."""
    triggered = bool(algo.actualOrderId)
    body: Payload = {
        "caid": algo.clientAlgoId, "aid": algo.algoId, "at": algo.algoType or "CONDITIONAL",
        "o": algo.orderType, "s": algo.symbol, "S": algo.side, "ps": algo.positionSide,
        "f": algo.timeInForce or "GTC", "q": _num(algo.quantity), "X": algo.algoStatus,
        "ai": algo.actualOrderId,
        "ap": _num(algo.actualPrice) if algo.actualPrice else "0.00000",
        "aq": _num(executed_qty) if executed_qty else "0.00000",
        "act": ("MARKET" if algo.orderType.endswith("_MARKET") else "LIMIT") if triggered
        else "0",
        "tp": _num(algo.triggerPrice), "p": _num(algo.price), "V": "EXPIRE_MAKER",
        "wt": algo.workingType or "CONTRACT_PRICE", "pm": "NONE", "cp": algo.closePosition,
        "pP": algo.priceProtect, "R": algo.reduceOnly or algo.closePosition,
        "tt": algo.triggerTime, "gtd": 0, "rm": "",
    }
    when = algo.updateTime
    return {"e": "ALGO_UPDATE", "T": when, "E": when, "o": body, SYNTHETIC: True}


def is_synthetic(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get(SYNTHETIC) is True


def synthetic_envelope(account: AccountRef, payload: Payload, received_ms: int) -> Envelope:
    """The bus envelope of one synthetic payload (``Envelope.synthetic`` set: no event age)."""
    return Envelope(
        event_id=event_id(account.account_id, payload), account_id=account.account_id,
        user_id=account.user_id, symbol=event_symbol(payload), received_ms=received_ms,
        event=payload, synthetic=True,
    )


def _event_time(payload: Payload) -> int:
    value = payload.get("E")
    return value if isinstance(value, int) else 0


# --- REST, with the weight counted -------------------------------------------------------------


class _Calls:
    """The symbol-scoped REST calls of one reconciliation, each one's IP weight counted."""

    def __init__(self, client: ExchangeClient) -> None:
        self.client = client
        self.weight = 0
        self.requests = 0

    def _spend(self, path: str, params: Params) -> None:
        assert params.get("symbol") or path.endswith("/algoOrder"), "never a symbol-less call"
        self.weight += request_cost("GET", path, params).weight
        self.requests += 1

    async def open_orders(self, symbol: str) -> list[OrderResponse]:
        self._spend("/fapi/v1/openOrders", {"symbol": symbol})
        return await self.client.open_orders(symbol)

    async def open_algo_orders(self, symbol: str) -> list[AlgoOrderResponse]:
        self._spend("/fapi/v1/openAlgoOrders", {"symbol": symbol})
        return await self.client.open_algo_orders(symbol)

    async def order(self, symbol: str, *, client_id: str | None = None,
                    order_id: int | None = None) -> OrderResponse | None:
        self._spend("/fapi/v1/order", {"symbol": symbol})
        try:
            return await self.client.get_order(symbol, order_id=order_id,
                                               client_order_id=client_id)
        except UnknownOrder:
            return None

    async def algo_order(self, client_id: str) -> AlgoOrderResponse | None:
        self._spend("/fapi/v1/algoOrder", {"clientAlgoId": client_id})
        try:
            return await self.client.get_algo_order(client_algo_id=client_id)
        except UnknownOrder:
            return None

    async def orders_since(self, symbol: str, start_ms: int) -> list[OrderResponse]:
        self._spend("/fapi/v1/allOrders", {"symbol": symbol})
        return await self.client.orders_since(symbol, start_ms)

    async def fills(self, symbol: str, order_id: int) -> list[Fill]:
        self._spend("/fapi/v1/userTrades", {"symbol": symbol, "orderId": order_id})
        return [Fill.from_json(row) for row in await self.client.order_trades(symbol, order_id)]


# --- the reconciler ------------------------------------------------------------------------------


class Reconciler:
    """Synthetic events for what an account's stream may have missed (module docstring).

    Counters (cumulative, for metrics): ``weight_used`` (IP weight of the REST calls made),
    ``requests``, ``accounts`` (reconciliations run), ``synthesized`` (payloads returned),
    ``last_reconciled_ms`` (account id → clock time of its last completed reconciliation)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *,
                 clock: Clock | None = None, concurrency: int = 4) -> None:
        self.sessions = sessions
        self.clock: Clock = clock or SystemClock()
        self.concurrency = max(1, concurrency)
        self.weight_used = 0
        self.requests = 0
        self.accounts = 0
        self.synthesized = 0
        self.last_reconciled_ms: dict[int, int] = {}

    async def reconcile(self, account: AccountRef, client: ExchangeClient) -> list[Payload]:
        """One account: one database query, then the REST snapshot of its symbols with live
        trades (none: no REST call). Returns the synthetic payloads, oldest first."""
        live = await self.live_trades([account.account_id])
        return await self._account(account, client, live.get(account.account_id, []))

    async def reconcile_many(
        self, accounts: Sequence[tuple[AccountRef, ExchangeClient]]
    ) -> dict[int, list[Payload]]:
        """Many accounts (e.g. a shard just taken over, or start-up): ONE database query for
        all of them, then the accounts with live trades reconciled ``concurrency`` at a time.
        Returns account id → payloads for every account given (``[]`` when nothing missed).
        An account whose REST calls fail raises out of this call after the others finish;
        use ``reconcile`` per account to isolate failures."""
        live = await self.live_trades([ref.account_id for ref, _ in accounts])
        gate = asyncio.Semaphore(self.concurrency)

        async def one(ref: AccountRef, client: ExchangeClient) -> list[Payload]:
            async with gate:
                return await self._account(ref, client, live.get(ref.account_id, []))

        results = await asyncio.gather(*(one(ref, client) for ref, client in accounts),
                                       return_exceptions=True)
        out: dict[int, list[Payload]] = {}
        for (ref, _), result in zip(accounts, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            out[ref.account_id] = result
        return out

    async def live_trades(self, account_ids: Sequence[int]) -> dict[int, list[LiveTrade]]:
        """The live trades of these accounts with their pending legs (one query)."""
        async with self.sessions() as session:
            rows = await trade_store.live_trades_of_accounts(session, account_ids)
            found = [LiveTrade.of(row) for row in rows]
        out: dict[int, list[LiveTrade]] = {}
        for trade in found:
            out.setdefault(trade.account_id, []).append(trade)
        return out

    async def _account(self, account: AccountRef, client: ExchangeClient,
                       live: Sequence[LiveTrade]) -> list[Payload]:
        calls = _Calls(client)
        payloads: list[Payload] = []
        try:
            for symbol in sorted({t.symbol for t in live}):
                legs = [leg for t in live if t.symbol == symbol for leg in t.legs]
                if legs:
                    payloads += await self._symbol(calls, symbol, legs)
        finally:
            self.weight_used += calls.weight
            self.requests += calls.requests
        payloads.sort(key=_event_time)  # stable: each order's own events keep their order
        self.accounts += 1
        self.synthesized += len(payloads)
        self.last_reconciled_ms[account.account_id] = self.clock.now_ms()
        if payloads or calls.requests:
            log(logger, logging.INFO, "account reconciled", accountId=account.account_id,
                synthetic=len(payloads), weight=calls.weight)
        return payloads

    async def _symbol(self, calls: _Calls, symbol: str, legs: list[PendingLeg]) -> list[Payload]:
        entries = [leg for leg in legs if not leg.leg.is_exit]
        exits = [leg for leg in legs if leg.leg.is_exit]
        open_orders = ({o.clientOrderId: o for o in await calls.open_orders(symbol)}
                       if entries else {})
        open_algos = ({a.clientAlgoId: a for a in await calls.open_algo_orders(symbol)}
                      if exits else {})
        payloads: list[Payload] = []
        expired_at: list[int] = []
        for leg in entries:
            order = open_orders.get(leg.client_id)
            if order is not None and _as_known(leg, order):
                continue
            if order is None:
                order = await calls.order(symbol, client_id=leg.client_id)
            if order is not None:
                payloads += await self._order(calls, order, leg.client_id)
        for leg in exits:
            algo = open_algos.get(leg.client_id)
            if algo is None:
                algo = await calls.algo_order(leg.client_id)
            if algo is None or algo.algoStatus in WAITING_ALGO:
                continue
            payloads += await self._algo(calls, algo)
            if algo.algoStatus == "EXPIRED":
                expired_at.append(algo.updateTime)
        if expired_at:  # the exchange expires every algo order of a symbol it liquidates
            payloads += await self._liquidations(calls, symbol, min(expired_at))
        return payloads

    async def _liquidations(self, calls: _Calls, symbol: str, since_ms: int) -> list[Payload]:
        """The fills of the liquidation orders (``c`` = ``autoclose-…``) created from the
        expiry of our stop or target on (``allOrders`` with ``startTime``: 5, plus 5 per
        liquidation order found)."""
        payloads: list[Payload] = []
        for order in await calls.orders_since(symbol, since_ms - LIQUIDATION_LOOKBACK_MS):
            if order.clientOrderId.startswith(LIQUIDATION_PREFIX) and order.executedQty > 0:
                fills = await calls.fills(symbol, order.orderId)
                payloads += order_payloads(order, fills, execution="CALCULATED")
        return payloads

    async def _algo(self, calls: _Calls, algo: AlgoOrderResponse) -> list[Payload]:
        payloads: list[Payload] = []
        executed = Decimal(0)
        if algo.actualOrderId.isdigit():
            child = await calls.order(algo.symbol, order_id=int(algo.actualOrderId))
            if child is not None:
                payloads += await self._order(calls, child, algo.clientAlgoId)
                executed = child.executedQty
        payloads.append(algo_payload(algo, executed_qty=executed))
        return payloads

    async def _order(self, calls: _Calls, order: OrderResponse, client_id: str
                     ) -> list[Payload]:
        fills = await calls.fills(order.symbol, order.orderId) if order.executedQty > 0 else []
        return order_payloads(order, fills, client_id=client_id)


def _as_known(leg: PendingLeg, order: OrderResponse) -> bool:
    """An open entry the database already knows as it is (no fill it has not recorded)."""
    if order.executedQty == 0:
        return leg.status in _NOT_FILLED
    return leg.status == OrderStatus.PARTIALLY_FILLED and order.executedQty == leg.trade_quantity
