"""Trades and order legs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.domain import CloseReason, Leg, Side, TradeStatus, client_order_id
from tradewire.errors import Conflict, NotFound
from tradewire.store import trades, users
from tradewire.store.crypto import SecretBox
from tradewire.store.tables import OrderStatus, Trade

Sessions = async_sessionmaker[AsyncSession]
QTY = Decimal("0.123456789012345678")  # 18 decimals: the column's full scale
BIG = Decimal("123456789012345678.5")  # 18 integer digits


@pytest.fixture
async def account(sessions: Sessions) -> tuple[int, int]:
    """(user id, account id) of one fresh user."""
    async with sessions.begin() as session:
        user, acct = await users.create_user(
            session, SecretBox(os.urandom(32)), name="trader", api_key="k", api_secret="s"
        )
    return user.id, acct.id


async def _new_trade(
    session: AsyncSession, owner: tuple[int, int], signal_id: str, symbol: str = "BTCUSDT"
) -> Trade:
    return await trades.create_trade(
        session, signal_id=signal_id, user_id=owner[0], account_id=owner[1], symbol=symbol,
        side=Side.LONG, quantity=QTY, stop_loss=Decimal("90000.1"), take_profit=BIG,
        leverage=10, now=1_000,
    )


async def test_trade_and_orders_round_trip_with_exact_decimals(
    sessions: Sessions, account: tuple[int, int]
) -> None:
    """Amounts come back as the exact Decimals written, enums as enums."""
    async with sessions.begin() as session:
        trade = await _new_trade(session, account, "sig-1")
        for leg, kind, trigger in (
            (Leg.ENTRY, "MARKET", None),
            (Leg.STOP_LOSS, "STOP_MARKET", Decimal("90000.1")),
            (Leg.TAKE_PROFIT, "TAKE_PROFIT_MARKET", BIG),
        ):
            await trades.add_order(
                session, trade.id, leg, client_order_id("sig-1", account[1], leg),
                order_type=kind, side="BUY" if leg is Leg.ENTRY else "SELL", quantity=QTY,
                trigger_price=trigger,
            )
    async with sessions() as session:
        loaded = await trades.get_trade(session, trade.id)
    assert (loaded.quantity, loaded.stop_loss, loaded.take_profit) == (QTY, Decimal("90000.1"), BIG)
    assert str(loaded.stop_loss) == "90000.1"
    assert (loaded.side, loaded.status, loaded.leverage) == (Side.LONG, TradeStatus.PENDING, 10)
    assert (loaded.realized_pnl, loaded.entry_price, loaded.created_at) == (Decimal(0), None, 1_000)
    assert [o.leg for o in loaded.orders] == [Leg.ENTRY, Leg.STOP_LOSS, Leg.TAKE_PROFIT]
    assert loaded.orders[2].trigger_price == BIG and loaded.orders[0].trigger_price is None
    assert all(o.status == OrderStatus.NEW and o.quantity == QTY for o in loaded.orders)


async def test_one_trade_per_signal_and_account_and_unique_client_ids(
    sessions: Sessions, account: tuple[int, int]
) -> None:
    """A second trade for the same signal on the same account, or a reused client order id,
    is a Conflict that leaves the transaction usable."""
    async with sessions.begin() as session:
        trade = await _new_trade(session, account, "sig-1")
        with pytest.raises(Conflict):
            await _new_trade(session, account, "sig-1")
        cid = client_order_id("sig-1", account[1], Leg.ENTRY)
        await trades.add_order(
            session, trade.id, Leg.ENTRY, cid, order_type="MARKET", side="BUY", quantity=QTY
        )
        with pytest.raises(Conflict):
            await trades.add_order(
                session, trade.id, Leg.ENTRY, cid, order_type="MARKET", side="BUY", quantity=QTY
            )
        await _new_trade(session, account, "sig-2")
    async with sessions() as session:
        found = await trades.find_trade(session, "sig-1", account[1])
        assert found is not None and found.id == trade.id
        assert len(await trades.list_trades(session)) == 2


async def test_find_order_by_client_id_loads_its_trade(
    sessions: Sessions, account: tuple[int, int]
) -> None:
    """An exchange event's client id leads to the order and its trade; foreign ids to None."""
    cid = client_order_id("sig-9", account[1], Leg.STOP_LOSS)
    async with sessions.begin() as session:
        trade = await _new_trade(session, account, "sig-9")
        await trades.add_order(
            session, trade.id, Leg.STOP_LOSS, cid, order_type="STOP_MARKET", side="SELL",
            quantity=QTY, trigger_price=Decimal("90000.1"),
        )
    async with sessions() as session:
        order = await trades.find_order_by_client_id(session, cid)
        assert await trades.find_order_by_client_id(session, "web_foreign") is None
        with pytest.raises(NotFound):
            await trades.get_trade(session, 999_999)
    assert order is not None and order.leg is Leg.STOP_LOSS
    assert order.trade.id == trade.id and order.trade.signal_id == "sig-9"


async def test_updates_are_conditional_on_the_current_status(
    sessions: Sessions, account: tuple[int, int]
) -> None:
    """A transition applies only from the expected states; None leaves fields unchanged."""
    async with sessions.begin() as session:
        trade = await _new_trade(session, account, "sig-3")
        order = await trades.add_order(
            session, trade.id, Leg.ENTRY, "tw-x-entry", order_type="MARKET", side="BUY",
            quantity=QTY,
        )
    async with sessions.begin() as session:
        assert await trades.update_order(
            session, order.id, only_from=[OrderStatus.NEW], status=OrderStatus.PLACED,
            exchange_order_id=2**40, now=2_000,
        )
        assert not await trades.update_order(
            session, order.id, only_from=[OrderStatus.NEW], status=OrderStatus.FAILED
        )
        assert await trades.update_trade(
            session, trade.id, only_from=[TradeStatus.PENDING], status=TradeStatus.ACTIVE,
            entry_price=Decimal("95000.5"), commission=Decimal("0.0190001"),
        )
        assert await trades.update_trade(
            session, trade.id, only_from=[TradeStatus.ACTIVE], status=TradeStatus.CLOSED,
            close_reason=CloseReason.TAKE_PROFIT, exit_price=Decimal("99000"),
            realized_pnl=Decimal("-0.000000000000000001"), closed_at=3_000, now=3_000,
        )
        assert not await trades.update_trade(
            session, trade.id, only_from=[TradeStatus.PENDING], status=TradeStatus.FAILED
        )
    async with sessions() as session:
        done = await trades.get_trade(session, trade.id)
    assert (done.status, done.close_reason) == (TradeStatus.CLOSED, CloseReason.TAKE_PROFIT)
    assert (done.entry_price, done.exit_price) == (Decimal("95000.5"), Decimal("99000"))
    assert (done.realized_pnl, done.commission) == (Decimal("-1E-18"), Decimal("0.0190001"))
    assert (done.quantity, done.closed_at, done.updated_at) == (QTY, 3_000, 3_000)
    assert (done.orders[0].status, done.orders[0].exchange_order_id) == ("PLACED", 2**40)
    assert done.orders[0].updated_at == 2_000


async def test_list_trades_filters_and_orders_newest_first(
    sessions: Sessions, account: tuple[int, int]
) -> None:
    """Filters by user, status (one or several) and symbol combine; newest first; limit."""
    async with sessions.begin() as session:
        made = [
            await _new_trade(session, account, f"sig-{i}", "ETHUSDT" if i % 2 else "BTCUSDT")
            for i in range(5)
        ]
        await trades.update_trade(session, made[0].id, status=TradeStatus.ACTIVE)
        await trades.update_trade(session, made[3].id, status=TradeStatus.CLOSED)
    ids = [t.id for t in made]
    async with sessions() as session:

        async def listed(**filters: Any) -> list[int]:
            return [t.id for t in await trades.list_trades(session, **filters)]

        assert await listed() == ids[::-1]
        assert await listed(user_id=account[0], symbol="ETHUSDT") == [ids[3], ids[1]]
        assert await listed(status=TradeStatus.PENDING, symbol="BTCUSDT") == [ids[4], ids[2]]
        assert await listed(status=[TradeStatus.ACTIVE, TradeStatus.CLOSED]) == [ids[3], ids[0]]
        assert await listed(user_id=account[0] + 1) == []
        assert await listed(limit=2) == [ids[4], ids[3]]


async def test_money_refuses_floats(sessions: Sessions, account: tuple[int, int]) -> None:
    """Amounts must be Decimals (ints are exact too); a float never reaches the books."""
    async with sessions.begin() as session:
        trade = await _new_trade(session, account, "sig-f")
        assert await trades.update_trade(session, trade.id, commission=Decimal(3))
        with pytest.raises(StatementError, match="must be a Decimal"):
            await trades.update_trade(session, trade.id, realized_pnl=0.1)  # type: ignore[arg-type]
