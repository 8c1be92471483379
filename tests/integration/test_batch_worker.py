"""The worker's batch path (``processor.batch_apply``) on SQLite and PostgreSQL: same effects as
the per-event path, exactly once, failures confined to their own event, and the per-event
fallback when a trade moves between the batch's read and its write."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire import names
from tradewire.bus.base import Envelope
from tradewire.bus.consumer import Consumer
from tradewire.bus.embedded import EmbeddedBus
from tradewire.domain import Leg, Side, TradeStatus, client_order_id
from tradewire.errors import ExchangeUnavailable, TransientError
from tradewire.locks.memory import MemoryLocks
from tradewire.processor import batch_apply
from tradewire.processor.worker import EventProcessor
from tradewire.store import batch_ops, trades, users
from tradewire.store.crypto import SecretBox
from tradewire.store.tables import Notification, Order, ProcessedEvent, Trade

Sessions = async_sessionmaker[AsyncSession]
HOOK = "https://discord.test/api/webhooks/9/batch"
EVENT_TIME = 1_767_000_000_000


class FakeClient:
    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.cancelled: list[str] = []

    async def cancel_algo_order(self, client_algo_id: str | None = None, **_: Any) -> None:
        if client_algo_id in self.failing:
            raise ExchangeUnavailable("exchange down for this order")
        assert client_algo_id is not None
        self.cancelled.append(client_algo_id)


class FakePool:
    """``ClientPool`` stand-in: one fake client for every account."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.client = FakeClient(failing or set())

    def get(self, account_id: int, api_key: str, api_secret: str) -> FakeClient:
        return self.client


def processor(sessions: Sessions, pool: FakePool, batch_max: int = 256) -> EventProcessor:
    box = SecretBox(b"k" * 32)
    return EventProcessor(sessions, box, pool, MemoryLocks(), batch_max=batch_max,  # type: ignore[arg-type]
                          batch_wait_s=0.005)


async def seed(sessions: Sessions, count: int, tag: str) -> list[dict[str, Any]]:
    """``count`` OPEN trades (entry, SL and TP orders) over 3 users (one without a webhook),
    each on its own symbol."""
    box = SecretBox(b"k" * 32)
    out = []
    async with sessions.begin() as session:
        owners = [
            await users.create_user(session, box, name=f"{tag}-{n}-{uuid.uuid4().hex[:6]}",
                                    api_key=uuid.uuid4().hex, api_secret="s" * 64,
                                    discord_webhook_url=None if n == 2 else HOOK)
            for n in range(3)
        ]
        for i in range(count):
            user, account = owners[i % 3]
            signal = f"{tag}-{i}"
            trade = await trades.create_trade(
                session, signal_id=signal, user_id=user.id, account_id=account.id,
                symbol=f"S{i}USDT", side=Side.LONG, quantity=Decimal("0.01"),
                stop_loss=Decimal(58000), take_profit=Decimal(62000), leverage=10,
                status=TradeStatus.OPEN)
            cids = {leg: client_order_id(signal, account.id, leg)
                    for leg in (Leg.ENTRY, Leg.STOP_LOSS, Leg.TAKE_PROFIT)}
            for leg, cid in cids.items():
                await trades.add_order(
                    session, trade.id, leg, cid, order_type="MARKET" if leg is Leg.ENTRY
                    else "STOP_MARKET", side="BUY" if leg is Leg.ENTRY else "SELL",
                    quantity=Decimal("0.01"), status="PLACED")
            out.append({"user": user.id, "account": account.id, "symbol": f"S{i}USDT",
                        "trade": trade.id, "cids": cids, "i": i})
    return out


def order_event(t: dict[str, Any], leg: Leg, status: str, *, suffix: str = "") -> Envelope:
    cid = t["cids"][leg]
    price = "60000.00" if leg is Leg.ENTRY else "58000.00"
    event = {"e": "ORDER_TRADE_UPDATE", "E": EVENT_TIME, "T": EVENT_TIME, "o": {
        "s": t["symbol"], "c": cid, "S": "BUY", "o": "MARKET", "f": "GTC", "q": "0.010",
        "p": "0", "ap": price if status == "FILLED" else "0", "sp": "0",
        "x": "TRADE" if status == "FILLED" else "CANCELED", "X": status, "i": 1000 + t["i"],
        "l": "0.010", "z": "0.010", "L": price, "N": "USDT", "n": "0.24", "T": EVENT_TIME,
        "t": t["i"], "b": "0", "a": "0", "m": False, "R": False, "wt": "CONTRACT_PRICE",
        "ot": "MARKET", "ps": "BOTH", "cp": False, "rp": "-20.5" if leg.is_exit else "0",
        "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0, "er": "0"}}
    return Envelope(event_id=f"{t['account']}:{cid}:{status}{suffix}", account_id=t["account"],
                    user_id=t["user"], symbol=t["symbol"], received_ms=EVENT_TIME, event=event)


def scenario(seeded: list[dict[str, Any]]) -> tuple[list[Envelope], list[Envelope]]:
    """Two waves: entries fill (or are cancelled); then stop-losses fill on some trades (the
    take-profit is cancelled at the exchange), a foreign order arrives."""
    first, second = [], []
    for t in seeded:
        kind = t["i"] % 4
        first.append(order_event(t, Leg.ENTRY, "CANCELED" if kind == 3 else "FILLED"))
        if kind in (1, 2):
            second.append(order_event(t, Leg.STOP_LOSS, "FILLED"))
    foreign = dict(seeded[0], cids={Leg.ENTRY: "someone-else-1"})
    second.append(order_event(foreign, Leg.ENTRY, "FILLED"))
    return first, second


async def state(sessions: Sessions, seeded: list[dict[str, Any]]) -> list[Any]:
    """What the books say about these trades, independent of ids."""
    ids = [t["trade"] for t in seeded]
    async with sessions() as session:
        rows = (await session.scalars(select(Trade).where(Trade.id.in_(ids)).order_by(Trade.id)))
        books = [(t.status, t.close_reason, t.quantity, t.entry_price, t.exit_price,
                  t.realized_pnl, t.commission, t.error, t.closed_at) for t in rows]
        orders = [(o.leg, o.status) for o in await session.scalars(
            select(Order).where(Order.trade_id.in_(ids)).order_by(Order.trade_id, Order.id))]
        users_ = [t["user"] for t in seeded]
        notes = await session.scalars(select(Notification).where(Notification.user_id.in_(users_)))
        payloads = sorted(_without_ids(n.payload) for n in notes)
    return [books, orders, payloads]


def _without_ids(payload: str) -> str:
    data = json.loads(payload)
    for embed in data.get("embeds", []):
        embed["fields"] = [f for f in embed.get("fields", []) if f.get("name") != "trade"]
    return json.dumps(data, sort_keys=True)


async def processed(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(ProcessedEvent)) or 0)


async def run_waves(proc: EventProcessor, waves: tuple[list[Envelope], list[Envelope]]) -> None:
    for wave in waves:
        await asyncio.gather(*(proc.handle(env) for env in wave))


async def test_batch_path_matches_the_per_event_path(sessions: Sessions) -> None:
    """Many concurrent events give the same trades, orders, processed events and notifications
    through the batch path as through the per-event path, in fewer batches than events."""
    one_by_one, batched = await seed(sessions, 24, "single"), await seed(sessions, 24, "batch")
    pool_a, pool_b = FakePool(), FakePool()
    per_event, batch = processor(sessions, pool_a, 0), processor(sessions, pool_b)
    await run_waves(per_event, scenario(one_by_one))
    before = await processed(sessions)
    await run_waves(batch, scenario(batched))
    assert await processed(sessions) - before == before
    assert await state(sessions, batched) == await state(sessions, one_by_one)
    assert batch.applied == per_event.applied == before
    assert batch.batcher is not None and batch.batcher.batches < batch.applied
    assert len(pool_b.client.cancelled) == len(pool_a.client.cancelled) > 0
    assert batch.applier.fallbacks == 0


async def test_duplicates_inside_a_batch_and_across_batches_change_nothing(
    sessions: Sessions,
) -> None:
    seeded = await seed(sessions, 6, "dup")
    proc = processor(sessions, FakePool())
    fills = [order_event(t, Leg.ENTRY, "FILLED") for t in seeded]
    await asyncio.gather(*(proc.handle(env) for env in fills + fills[:3]))  # 3 twice in a batch
    once = await state(sessions, seeded)
    assert proc.applied == 6 and proc.duplicates == 3
    await asyncio.gather(*(proc.handle(env) for env in fills))  # a later batch: all duplicates
    assert proc.applied == 6 and proc.duplicates == 9
    assert await state(sessions, seeded) == once
    assert await processed(sessions) == 6
    assert len(once[2]) == 4  # one ENTRY_FILLED notice per trade of a user with a webhook


async def test_a_failing_follow_up_fails_only_its_own_event(sessions: Sessions) -> None:
    seeded = await seed(sessions, 6, "fail")
    pool = FakePool(failing={seeded[1]["cids"][Leg.TAKE_PROFIT]})
    proc = processor(sessions, pool)
    await asyncio.gather(*(proc.handle(order_event(t, Leg.ENTRY, "FILLED")) for t in seeded))
    stops = [order_event(t, Leg.STOP_LOSS, "FILLED") for t in seeded]
    outcomes = await asyncio.gather(*(proc.handle(env) for env in stops),
                                    return_exceptions=True)
    assert [isinstance(o, TransientError) for o in outcomes] == [
        False, True, False, False, False, False]
    async with sessions() as session:
        statuses = {t.id: t.status for t in await session.scalars(select(Trade))}
        marked = set(await session.scalars(select(ProcessedEvent.event_id)))
    assert [statuses[t["trade"]] for t in seeded] == [
        TradeStatus.CLOSED, TradeStatus.ACTIVE, *[TradeStatus.CLOSED] * 4]
    assert stops[1].event_id not in marked and stops[0].event_id in marked
    pool.client.failing.clear()  # the bus retries it: now it goes through
    await proc.handle(stops[1])
    async with sessions() as session:
        trade = await trades.get_trade(session, seeded[1]["trade"])
    assert trade.status is TradeStatus.CLOSED and trade.realized_pnl == Decimal("-20.5")


async def test_a_trade_that_moved_falls_back_to_the_per_event_path(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trade changed between the batch's read and its write: the batch rolls back, writes
    the others, and the moved event is applied (here: found obsolete) one by one."""
    seeded = await seed(sessions, 5, "moved")
    moved = seeded[2]["trade"]
    real_read = batch_ops.read_batch
    calls = 0

    async def read_then_cancel(session: AsyncSession, *args: Any) -> batch_ops.Snapshot:
        nonlocal calls
        snapshot = await real_read(session, *args)
        calls += 1
        if calls == 1:  # another writer cancels one trade right after the read
            async with sessions.begin() as other:
                await other.execute(update(Trade).where(Trade.id == moved)
                                    .values(status=TradeStatus.CANCELED))
        return snapshot

    monkeypatch.setattr(batch_apply.batch_ops, "read_batch", read_then_cancel)
    proc = processor(sessions, FakePool())
    await asyncio.gather(*(proc.handle(order_event(t, Leg.ENTRY, "FILLED")) for t in seeded))
    assert proc.applier.fallbacks == 1
    assert proc.applied == 5 and proc.duplicates == 0
    async with sessions() as session:
        statuses = {t.id: t.status for t in await session.scalars(select(Trade))}
    assert statuses[moved] is TradeStatus.CANCELED  # the fill did not resurrect it
    assert sorted(s for tid, s in statuses.items() if tid != moved) == [TradeStatus.ACTIVE] * 4
    assert await processed(sessions) == 5


async def test_handle_many_answers_each_event_on_its_own(sessions: Sessions) -> None:
    """One call for many events: a failing follow-up fails only its event (retryable), an
    event whose lock is held elsewhere is left untouched (``Deferred``), the rest commit."""
    seeded = await seed(sessions, 6, "many")
    pool = FakePool(failing={seeded[1]["cids"][Leg.TAKE_PROFIT]})
    proc = processor(sessions, pool)
    assert await proc.handle_many([order_event(t, Leg.ENTRY, "FILLED") for t in seeded]) == [
        None] * 6
    stops = [order_event(t, Leg.STOP_LOSS, "FILLED") for t in seeded]
    held = names.lock_name(stops[4].user_id, stops[4].symbol)
    async with proc.locks.hold(held):  # another task works on that position
        answers = await proc.handle_many(stops)
    assert [type(a).__name__ for a in answers] == [
        "NoneType", "TransientError", "NoneType", "NoneType", "Deferred", "NoneType"]
    async with sessions() as session:
        marked = set(await session.scalars(select(ProcessedEvent.event_id)))
    assert {e.event_id for e in stops} & marked == {stops[i].event_id for i in (0, 2, 3, 5)}
    pool.client.failing.clear()
    assert await proc.handle_many([stops[1], stops[4]]) == [None, None]
    async with sessions() as session:
        statuses = {t.id: t.status for t in await session.scalars(select(Trade))}
    assert [statuses[t["trade"]] for t in seeded] == [TradeStatus.CLOSED] * 6


async def test_the_consumer_batch_path_keeps_key_order_and_retries_only_the_failed_event(
    sessions: Sessions,
) -> None:
    """Through the bus: entry then stop-loss fill of 12 trades (one key each) in batches of
    heads; the stop of one trade fails its first attempt (exchange down) and is retried in
    place while the other keys commit; every trade ends CLOSED, each event applied once."""
    seeded = await seed(sessions, 12, "lanes")
    failing = seeded[5]["cids"][Leg.TAKE_PROFIT]
    pool = FakePool(failing={failing})
    proc = processor(sessions, pool)
    bus = EmbeddedBus(4)
    for t in seeded:
        await bus.publish(order_event(t, Leg.ENTRY, "FILLED"))
    for t in seeded:
        await bus.publish(order_event(t, Leg.STOP_LOSS, "FILLED"))
    calls: list[int] = []

    async def handle_many(envelopes: Sequence[Envelope]) -> Sequence[BaseException | None]:
        calls.append(len(envelopes))
        answers = await proc.handle_many(envelopes)
        if any(answers):
            pool.client.failing.clear()  # the exchange is back after the first failure
        return answers

    consumer = Consumer(bus, proc.handle, name="w", retry_delays_s=(0.01,), block_ms=20,
                        batch_handler=handle_many, batch_wait_s=0.01)
    await consumer.drain(10)
    assert (consumer.stats.processed, consumer.stats.retried) == (24, 1)
    assert proc.applied == 24 and max(calls) > 1 and len(calls) < 24
    async with sessions() as session:
        statuses = {t.id: t.status for t in await session.scalars(select(Trade))}
    assert [statuses[t["trade"]] for t in seeded] == [TradeStatus.CLOSED] * 12
    assert await bus.pending() == 0 and await bus.dlq_size() == 0
    await bus.close()
