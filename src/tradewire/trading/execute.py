"""Signal → orders on every subscribed account.

Each account gets a trade row and its order rows (entry, stop-loss, one take-profit per target,
all with deterministic client ids) committed *before* anything is sent, so a stream event about
an order always finds it, and a retried placement can never open a second position. A known
``signal_id`` is answered as a duplicate before any other check. The per-account work
(``trading.placement``) runs concurrently; one account's failure never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.domain import Leg, Signal, TradeStatus, client_order_id, take_profit_leg
from tradewire.errors import ExchangeError, InvalidInput
from tradewire.logging import bind, log
from tradewire.store import signals, trades, users
from tradewire.store.crypto import SecretBox
from tradewire.store.tables import Trade
from tradewire.trading.clients import ClientPool
from tradewire.trading.placement import AccountOutcome, Placement
from tradewire.trading.signals import check_prices
from tradewire.trading.sizing import apply_caps

logger = logging.getLogger("tradewire.trading")


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
                return await self._duplicate(session, signal.signal_id)
        mark = await self._mark_price(signal)
        if signal.entry_price is None:
            check_prices(signal.side, mark, signal.stop_loss, signal.targets, reference="mark")
        async with self.sessions.begin() as session:
            if not await signals.record_signal(
                session, signal.signal_id, signal.symbol, signal.side.value, payload
            ):
                return await self._duplicate(session, signal.signal_id)
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
            stop_loss=signal.stop_loss, take_profit=signal.take_profit,
            leverage=apply_caps(signal, acct.max_leverage, acct.max_position_usdt).leverage,
            entry_price=signal.entry_price,
        )
        exit_side = signal.side.exit_order_side
        legs = [
            (Leg.ENTRY, "LIMIT" if signal.entry_price else "MARKET", signal.side.entry_order_side,
             signal.entry_price, None),
            (Leg.STOP_LOSS, "STOP_MARKET", exit_side, None, signal.stop_loss),
            *((take_profit_leg(i), "TAKE_PROFIT_MARKET", exit_side, None, target.price)
              for i, target in enumerate(signal.targets)),
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
        placer = Placement(self.sessions, client, signal, trade, acct)
        with bind(userId=acct.user_id, tradeId=trade.id, symbol=signal.symbol):
            try:
                return await placer.run(mark)
            except Exception as exc:  # report per account; never fail the other accounts
                log(logger, logging.ERROR, "trade placement failed", error=repr(exc))
                await placer.fail(f"internal error: {type(exc).__name__}: {exc}")
                return placer.outcome(TradeStatus.FAILED, str(exc))

    @staticmethod
    async def _duplicate(session: AsyncSession, signal_id: str) -> ExecutionReport:
        """The answer to a signal id seen before: the trades it opened the first time."""
        rows = await trades.list_trades_for_signal(session, signal_id)
        outcomes = [
            AccountOutcome(t.user_id, t.account_id, t.id, t.status.value, t.error) for t in rows
        ]
        return ExecutionReport(signal_id, True, outcomes)
