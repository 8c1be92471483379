"""The orders of one trade on one account: entry, stop-loss, then one take-profit per target.

Failure policy: an entry refused by the exchange fails the trade (the user is told, nothing
else is sent). A stop-loss refused after the entry was sent is unsafe — the position would be
unprotected — so the entry is cancelled or the position closed with a reduce-only market order,
and the trade fails. A refused take-profit keeps the trade under its stop and warns the user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.domain import Leg, Signal, TradeStatus, client_order_id, take_profit_leg
from tradewire.errors import ExchangeError, InvalidInput, UnknownOrder
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.rules import SymbolRules
from tradewire.logging import log
from tradewire.notify.messages import trade_embed
from tradewire.processor.state import Notice
from tradewire.store import outbox, trades, users
from tradewire.store.tables import OrderStatus, Trade
from tradewire.trading.sizing import apply_caps, split_quantity

logger = logging.getLogger("tradewire.trading")


@dataclass(frozen=True)
class AccountOutcome:
    user_id: int
    account_id: int
    trade_id: int
    status: str
    error: str | None = None


class Placement:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: ExchangeClient,
        signal: Signal,
        trade: Trade,
        acct: users.AccountCredentials,
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.signal = signal
        self.trade = trade
        self.acct = acct
        self.cid = {leg: client_order_id(signal.signal_id, acct.account_id, leg) for leg in Leg}
        self.sizing = apply_caps(signal, acct.max_leverage, acct.max_position_usdt)

    def outcome(self, status: TradeStatus, error: str | None = None) -> AccountOutcome:
        return AccountOutcome(self.acct.user_id, self.acct.account_id, self.trade.id,
                              status.value, error)

    async def run(self, mark: Decimal) -> AccountOutcome:
        s = self.signal
        for note in self.sizing.notes:
            log(logger, logging.INFO, "signal adjusted to the user's caps", note=note)
        try:
            rules = await self.client.symbol_rules(s.symbol)
            quantity = self._quantity(rules, mark)
            await self.client.set_leverage(s.symbol, self.sizing.leverage)
            entry = await self.client.place_order(
                s.symbol, s.side.entry_order_side, "LIMIT" if s.entry_price else "MARKET",
                quantity, price=s.entry_price, client_order_id=self.cid[Leg.ENTRY],
                time_in_force="GTC" if s.entry_price else None,
            )
        except (ExchangeError, InvalidInput) as exc:
            await self.fail(f"entry refused: {exc}", entry_error=True)
            return self.outcome(TradeStatus.FAILED, f"entry refused: {exc}")
        await self._record_entry(quantity, entry.orderId)
        try:
            sl = await self._protect(Leg.STOP_LOSS, "STOP_MARKET", s.stop_loss, quantity)
        except ExchangeError as exc:
            await self._unwind(quantity)
            error = f"stop-loss refused ({exc}); entry cancelled / position closed"
            await self._leg_failed(Leg.STOP_LOSS, f"stop-loss refused: {exc}", notify=False)
            await self.fail(error)
            return self.outcome(TradeStatus.FAILED, error)
        await self._record_leg(Leg.STOP_LOSS, sl, quantity)
        await self._place_targets(quantity, rules)
        log(logger, logging.INFO, "trade placed", quantity=str(quantity))
        return self.outcome(TradeStatus.OPEN)

    def _quantity(self, rules: SymbolRules, mark: Decimal) -> Decimal:
        price = self.signal.entry_price or mark
        market = self.signal.entry_price is None
        quantity = rules.quantity_for_notional(self.sizing.size_usdt, price, market)
        rules.check(quantity, price, market=market)
        return quantity

    async def _place_targets(self, quantity: Decimal, rules: SymbolRules) -> None:
        parts = split_quantity(quantity, self.signal.targets, rules.market_lot)
        for index, (target, part) in enumerate(zip(self.signal.targets, parts, strict=True)):
            leg = take_profit_leg(index)
            if part <= 0:
                await self._leg_failed(leg, "share too small for the lot size; its quantity "
                                       "stays with the following targets", notify=False)
                continue
            try:
                algo_id = await self._protect(leg, "TAKE_PROFIT_MARKET", target.price, part)
                await self._record_leg(leg, algo_id, part)
            except ExchangeError as exc:
                await self._leg_failed(leg, f"take-profit refused: {exc}")

    async def _protect(self, leg: Leg, kind: str, trigger: Decimal, quantity: Decimal) -> int:
        order = await self.client.place_algo_order(
            self.signal.symbol, self.signal.side.exit_order_side, kind, trigger,
            quantity=quantity, reduce_only=True, client_algo_id=self.cid[leg],
        )
        return order.algoId

    async def _unwind(self, quantity: Decimal) -> None:
        """Remove the exposure of an entry whose stop-loss could not be placed."""
        s = self.signal
        try:
            await self.client.cancel_order(s.symbol, client_order_id=self.cid[Leg.ENTRY])
        except UnknownOrder:
            pass  # already filled (MARKET): close the position below
        except ExchangeError as exc:
            log(logger, logging.ERROR, "could not cancel entry", error=str(exc))
        try:
            await self.client.place_order(
                s.symbol, s.side.exit_order_side, "MARKET", quantity, reduce_only=True,
                client_order_id=f"{self.cid[Leg.ENTRY][:-6]}-close",
            )
        except ExchangeError as exc:  # nothing to reduce (entry never filled) or refused
            log(logger, logging.WARNING, "closing the unprotected position", error=str(exc))

    async def _record_entry(self, quantity: Decimal, order_id: int) -> None:
        async with self.sessions.begin() as session:
            await trades.lock_trade(session, self.trade.id)  # trade row first, as the worker
            entry = await trades.find_order_by_client_id(session, self.cid[Leg.ENTRY])
            assert entry is not None
            await trades.update_order(session, entry.id, exchange_order_id=order_id,
                                      quantity=quantity, status=OrderStatus.PLACED,
                                      only_from=[OrderStatus.NEW])
            await trades.update_trade(session, self.trade.id, quantity=quantity,
                                      only_from=[TradeStatus.PENDING])
            await trades.update_trade(session, self.trade.id, status=TradeStatus.OPEN,
                                      only_from=[TradeStatus.PENDING])

    async def _record_leg(self, leg: Leg, algo_id: int, quantity: Decimal) -> None:
        async with self.sessions.begin() as session:
            await trades.lock_trade(session, self.trade.id)  # trade row first, as the worker
            order = await trades.find_order_by_client_id(session, self.cid[leg])
            assert order is not None
            await trades.update_order(session, order.id, algo_id=algo_id, quantity=quantity,
                                      status=OrderStatus.PLACED, only_from=[OrderStatus.NEW])

    async def _leg_failed(self, leg: Leg, error: str, *, notify: bool = True) -> None:
        async with self.sessions.begin() as session:
            await trades.lock_trade(session, self.trade.id)  # trade row first, as the worker
            order = await trades.find_order_by_client_id(session, self.cid[leg])
            assert order is not None
            await trades.update_order(session, order.id, status=OrderStatus.FAILED, error=error)
            if notify:
                await self._notify(session, Notice.ORDER_REJECTED, error)

    async def fail(self, error: str, *, entry_error: bool = False) -> None:
        async with self.sessions.begin() as session:
            changed = await trades.update_trade(
                session, self.trade.id, status=TradeStatus.FAILED, error=error,
                only_from=[TradeStatus.PENDING, TradeStatus.OPEN, TradeStatus.ACTIVE],
            )
            if entry_error:
                entry = await trades.find_order_by_client_id(session, self.cid[Leg.ENTRY])
                assert entry is not None
                await trades.update_order(session, entry.id, status=OrderStatus.REJECTED,
                                          error=error)
            if changed:
                await self._notify(session, Notice.ORDER_REJECTED, error)

    async def _notify(self, session: AsyncSession, notice: Notice, error: str) -> None:
        if not self.acct.webhook_url:
            return
        body = trade_embed(notice, {"symbol": self.signal.symbol, "trade": self.trade.id,
                                    "side": self.signal.side.value, "error": error})
        await outbox.enqueue_notification(session, user_id=self.acct.user_id,
                                          webhook_url=self.acct.webhook_url, payload=body)
