"""Signal → orders on every subscribed account: entry, then stop-loss and take-profit.

Each account gets a trade row and three order rows (with deterministic client ids) committed
*before* anything is sent, so a stream event about an order always finds it, and a retried
placement can never open a second position. The per-account work runs concurrently.

Failure policy, per account: an entry refused by the exchange fails that trade (the user is
told, nothing else is sent). A stop-loss refused after the entry was sent is unsafe — the
position would be unprotected — so the entry is cancelled or the position closed with a
reduce-only market order, and the trade fails. A refused take-profit keeps the trade (the stop
protects it) and warns the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.domain import Leg, Signal, TradeStatus, client_order_id
from tradewire.errors import ExchangeError, InvalidInput, UnknownOrder
from tradewire.exchange.client import ExchangeClient
from tradewire.logging import bind, log
from tradewire.notify.messages import trade_embed
from tradewire.processor.state import Notice
from tradewire.store import outbox, signals, trades, users
from tradewire.store.crypto import SecretBox
from tradewire.store.tables import OrderStatus, Trade
from tradewire.trading.clients import ClientPool
from tradewire.trading.signals import check_prices

logger = logging.getLogger("tradewire.trading")


@dataclass(frozen=True)
class AccountOutcome:
    user_id: int
    account_id: int
    trade_id: int
    status: str
    error: str | None = None


@dataclass(frozen=True)
class ExecutionReport:
    signal_id: str
    duplicate: bool
    outcomes: list[AccountOutcome]

    def as_json(self) -> dict[str, Any]:
        return {
            "signal_id": self.signal_id,
            "status": "duplicate" if self.duplicate else "accepted",
            "trades": [o.__dict__ for o in self.outcomes],
        }


class Executor:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], box: SecretBox, pool: ClientPool
    ) -> None:
        self.sessions = sessions
        self.box = box
        self.pool = pool

    async def execute(self, signal: Signal, payload: dict[str, Any]) -> ExecutionReport:
        """Place the signal on every target account; idempotent by ``signal_id``."""
        async with self.sessions() as session:  # a retry is answered before any new check
            if await signals.get_signal(session, signal.signal_id) is not None:
                return await self._existing(session, signal.signal_id, duplicate=True)
        mark = await self._mark_price(signal)
        if signal.entry_price is None:
            check_prices(signal.side, mark, signal.stop_loss, signal.take_profit, reference="mark")
        async with self.sessions.begin() as session:
            if not await signals.record_signal(
                session, signal.signal_id, signal.symbol, signal.side.value, payload
            ):
                return await self._existing(session, signal.signal_id, duplicate=True)
            accounts = await users.subscribed_accounts(session, self.box, signal.user_ids)
            self._check_targets(signal, {a.user_id for a in accounts})
            planned = [await self._plan(session, signal, acct) for acct in accounts]
        results = await asyncio.gather(
            *(self._place(signal, trade, acct, mark) for trade, acct in planned)
        )
        return ExecutionReport(signal.signal_id, False, list(results))

    async def _mark_price(self, signal: Signal) -> Decimal:
        try:
            return await self.pool.public().mark_price(signal.symbol)
        except ExchangeError as exc:
            if exc.code == -1121:
                raise InvalidInput(f"unknown symbol {signal.symbol}", field="symbol") from exc
            raise

    @staticmethod
    def _check_targets(signal: Signal, found: set[int]) -> None:
        if signal.user_ids is None:
            return
        missing = sorted(set(signal.user_ids) - found)
        if missing:
            raise InvalidInput(f"users not found or not active: {missing}", field="users")

    async def _plan(
        self, session: AsyncSession, signal: Signal, acct: users.AccountCredentials
    ) -> tuple[Trade, users.AccountCredentials]:
        trade = await trades.create_trade(
            session, signal_id=signal.signal_id, user_id=acct.user_id, account_id=acct.account_id,
            symbol=signal.symbol, side=signal.side, quantity=Decimal(0),
            stop_loss=signal.stop_loss, take_profit=signal.take_profit, leverage=signal.leverage,
            entry_price=signal.entry_price,
        )
        legs = [
            (Leg.ENTRY, "LIMIT" if signal.entry_price else "MARKET", signal.side.entry_order_side,
             signal.entry_price, None),
            (Leg.STOP_LOSS, "STOP_MARKET", signal.side.exit_order_side, None, signal.stop_loss),
            (Leg.TAKE_PROFIT, "TAKE_PROFIT_MARKET", signal.side.exit_order_side, None,
             signal.take_profit),
        ]
        for leg, order_type, side, price, trigger in legs:
            await trades.add_order(
                session, trade.id, leg, client_order_id(signal.signal_id, acct.account_id, leg),
                order_type=order_type, side=side, quantity=Decimal(0), price=price,
                trigger_price=trigger,
            )
        return trade, acct

    async def _place(
        self, signal: Signal, trade: Trade, acct: users.AccountCredentials, mark: Decimal
    ) -> AccountOutcome:
        client = self.pool.get(acct.account_id, acct.api_key, acct.api_secret)
        placer = _Placement(self.sessions, client, signal, trade, acct)
        with bind(userId=acct.user_id, tradeId=trade.id, symbol=signal.symbol):
            try:
                return await placer.run(mark)
            except Exception as exc:  # report per account; never fail the other accounts
                log(logger, logging.ERROR, "trade placement failed", error=repr(exc))
                await placer.fail(f"internal error: {type(exc).__name__}: {exc}")
                return placer.outcome(TradeStatus.FAILED, str(exc))

    async def _existing(
        self, session: AsyncSession, signal_id: str, *, duplicate: bool
    ) -> ExecutionReport:
        rows = await trades.list_trades_for_signal(session, signal_id)
        outcomes = [
            AccountOutcome(t.user_id, t.account_id, t.id, t.status.value, t.error) for t in rows
        ]
        return ExecutionReport(signal_id, duplicate, outcomes)


class _Placement:
    """The orders of one trade on one account."""

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

    def outcome(self, status: TradeStatus, error: str | None = None) -> AccountOutcome:
        return AccountOutcome(self.acct.user_id, self.acct.account_id, self.trade.id,
                              status.value, error)

    async def run(self, mark: Decimal) -> AccountOutcome:
        s = self.signal
        try:
            quantity = await self._quantity(mark)
            await self.client.set_leverage(s.symbol, s.leverage)
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
        try:
            tp = await self._protect(Leg.TAKE_PROFIT, "TAKE_PROFIT_MARKET", s.take_profit, quantity)
            await self._record_leg(Leg.TAKE_PROFIT, tp, quantity)
        except ExchangeError as exc:
            await self._leg_failed(Leg.TAKE_PROFIT, f"take-profit refused: {exc}")
        log(logger, logging.INFO, "trade placed", quantity=str(quantity))
        return self.outcome(TradeStatus.OPEN)

    async def _quantity(self, mark: Decimal) -> Decimal:
        rules = await self.client.symbol_rules(self.signal.symbol)
        price = self.signal.entry_price or mark
        market = self.signal.entry_price is None
        quantity = rules.quantity_for_notional(self.signal.size_usdt, price, market)
        rules.check(quantity, price, market=market)
        return quantity

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
        with contextlib.suppress(ExchangeError):  # already gone is what we wanted
            await self.client.cancel_algo_order(client_algo_id=self.cid[Leg.TAKE_PROFIT])

    async def _record_entry(self, quantity: Decimal, order_id: int) -> None:
        async with self.sessions.begin() as session:
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
            order = await trades.find_order_by_client_id(session, self.cid[leg])
            assert order is not None
            await trades.update_order(session, order.id, algo_id=algo_id, quantity=quantity,
                                      status=OrderStatus.PLACED, only_from=[OrderStatus.NEW])

    async def _leg_failed(self, leg: Leg, error: str, *, notify: bool = True) -> None:
        async with self.sessions.begin() as session:
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
