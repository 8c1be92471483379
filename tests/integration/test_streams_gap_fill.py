"""A fill the stream never delivered reaches the database: the streams layer end to end, in process.

Everything on the path is real: a ``SimulatorServer`` (on a ``ManualClock`` shared by the
exchange, the clients and the manager), the ``StreamsManager`` listing accounts from a migrated
SQLite database (``StoreDirectory``) and reconciling with the real ``Reconciler``, its
``BatchPublisher`` in front of an ``EmbeddedBus``, and the worker path behind it: a ``Consumer``
running the real ``EventProcessor``. Trades are opened by the real ``Executor``.

The gaps are made by the exchange: every socket is dropped and new handshakes are refused (as
when the IP's connection budget is spent) while the stop-loss triggers and fills, or the account's
listenKey expires and the stop fills before the manager could re-key. Events produced while an
account has no socket are lost for good (the simulator replays nothing), so the only way the
fill can reach the database is the manager's reconciliation after the gap. The tests check that
it does, that the take-profit is cancelled, and that everything happens exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tests import polling

from tradewire.bus.base import Envelope
from tradewire.bus.consumer import Consumer
from tradewire.bus.embedded import EmbeddedBus
from tradewire.clock import ManualClock
from tradewire.domain import Leg, Side, Signal, Target, client_order_id
from tradewire.exchange.event_ids import event_id
from tradewire.locks.memory import MemoryLocks
from tradewire.processor.worker import EventProcessor
from tradewire.simulator import Engine, SimulatorServer
from tradewire.simulator.app import create_app
from tradewire.store import trades, users
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.store.tables import Notification, ProcessedEvent
from tradewire.streams.directory import StoreDirectory
from tradewire.streams.manager import StreamsManager
from tradewire.streams.options import StreamOptions
from tradewire.streams.publisher import BatchPublisher
from tradewire.streams.reconcile import Reconciler
from tradewire.trading.clients import ClientPool
from tradewire.trading.execute import Executor

pytestmark = pytest.mark.timeout(60)

BTC = "BTCUSDT"
MINUTE_MS = 60_000
FAR = 10**9  # seconds: "never" for the clock-driven checks these tests do not exercise
HOOK = "https://discord.test/api/webhooks/1/gap-fill"


@dataclass
class User:
    user_id: int
    account_id: int
    api_key: str

    def cid(self, signal_id: str, leg: Leg) -> str:
        return client_order_id(signal_id, self.account_id, leg)


@dataclass
class World:
    sim: SimulatorServer
    http: httpx.AsyncClient
    clock: ManualClock
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    pool: ClientPool
    bus: EmbeddedBus
    processor: EventProcessor
    consumer: Consumer
    reconciler: Reconciler
    manager: StreamsManager
    published: list[Envelope] = field(default_factory=list)  # what the manager put on the bus

    # --- the exchange ----------------------------------------------------------------------

    async def admin(self, path: str, **body: Any) -> Any:
        response = await self.http.post(f"{self.sim.base_url}{path}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def set_mark(self, price: str) -> None:
        await self.admin("/sim/mark-price", symbol=BTC, price=price)

    async def exchange_account(self, user: User) -> dict[str, Any]:
        response = await self.http.get(f"{self.sim.base_url}/sim/accounts/{user.api_key}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def listening(self, user: User) -> int:
        return int((await self.exchange_account(user))["listening"])

    @contextlib.asynccontextmanager
    async def sockets_refused(self) -> AsyncIterator[None]:
        """The exchange refuses every WebSocket handshake (the IP's connection budget is
        spent) until the block ends; then the budget is whole again."""
        budget = self.sim.runtime.connections
        limit = budget.limit
        budget.limit = 1
        budget.admit("127.0.0.1", self.clock.now_ms())  # the window holds one attempt: full
        try:
            yield
        finally:
            budget.limit = limit
            budget.reset()

    # --- tradewire -------------------------------------------------------------------------

    async def new_user(self, name: str) -> User:
        keys = await self.admin("/sim/accounts", balance="10000")
        async with self.sessions.begin() as session:
            row, account = await users.create_user(
                session, self.box, name=name, api_key=keys["api_key"],
                api_secret=keys["api_secret"], discord_webhook_url=HOOK)
            return User(row.id, account.id, keys["api_key"])

    async def open_trade(self, user: User, signal_id: str) -> int:
        signal = Signal(
            signal_id=signal_id, symbol=BTC, side=Side.LONG, stop_loss=Decimal(58000),
            targets=(Target(Decimal(63000), Decimal(1)),), leverage=10,
            size_usdt=Decimal(200), user_ids=(user.user_id,),
        )
        report = await Executor(self.sessions, self.box, self.pool).execute(
            signal, {"signal_id": signal_id})
        [outcome] = report.outcomes
        assert outcome.status == "OPEN", outcome
        return outcome.trade_id

    async def trade(self, trade_id: int) -> dict[str, Any]:
        async with self.sessions() as session:
            row = await trades.get_trade(session, trade_id)
            return {
                "status": row.status.value,
                "close_reason": row.close_reason.value if row.close_reason else None,
                "exit_price": row.exit_price, "realized_pnl": row.realized_pnl,
                "commission": row.commission, "closed_at": row.closed_at,
                "orders": {o.leg.value: o.status for o in row.orders},
            }

    async def trade_status(self, trade_id: int) -> str:
        return str((await self.trade(trade_id))["status"])

    async def count(self, table: Any) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(table)) or 0)

    async def processed(self, event_ids: Sequence[str]) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(
                select(func.count()).select_from(ProcessedEvent)
                .where(ProcessedEvent.event_id.in_(list(event_ids)))) or 0)

    async def settled(self, quiet_s: float = 0.3, timeout_s: float = 10.0) -> None:
        """Until the bus is empty, nothing is in flight and nothing moved for ``quiet_s``."""
        async with asyncio.timeout(timeout_s):
            last = -1
            while True:
                busy = (self.consumer.in_flight + await self.bus.pending()
                        + await self.bus.undelivered())
                seen = self.consumer.stats.processed
                if busy == 0 and seen == last:
                    return
                last = seen
                await asyncio.sleep(quiet_s)

    def envelopes_of(self, client_id: str, since: int = 0) -> list[Envelope]:
        """What the manager published about one of our orders (by ``c`` / ``caid``), from the
        ``since``-th envelope on."""
        out = []
        for envelope in self.published[since:]:
            body = envelope.event.get("o")
            if isinstance(body, dict) and client_id in (body.get("c"), body.get("caid")):
                out.append(envelope)
        return out


until = functools.partial(polling.until, timeout_s=10.0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = ManualClock()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tradewire.db'}"
    await upgrade(db_url)
    engine, sessions = create_engine_and_sessions(db_url)
    box = SecretBox(os.urandom(32))
    sim = SimulatorServer(app=create_app(Engine(clock)))
    try:
        async with sim, httpx.AsyncClient(timeout=5) as http:
            pool = ClientPool(sim.base_url, http, clock)
            bus = EmbeddedBus()
            processor = EventProcessor(sessions, box, pool, MemoryLocks())
            consumer = Consumer(bus, processor.handle, name="worker",
                                retry_delays_s=(0.05, 0.1), redelivery_idle_s=2.0,
                                trim_interval_s=None, grace_s=2.0)
            reconciler = Reconciler(sessions, clock=clock)
            published: list[Envelope] = []

            async def publish_many(envelopes: Sequence[Envelope]) -> list[str]:
                published.extend(envelopes)
                return await bus.publish_many(envelopes)

            options = StreamOptions(
                keys_per_connection=10, control_msgs_per_s=8.0, tick_s=0.02, refresh_s=0.05,
                blind_after_s=FAR, audit_interval_s=FAR, keepalive_max_per_s=1000.0,
                handoff_timeout_s=0.5, max_backoff_s=0.2)
            manager = StreamsManager(
                StoreDirectory(sessions, box, pool), BatchPublisher(publish_many),
                sim.ws_url, clock, options=options, reconciler=reconciler)
            w = World(sim, http, clock, sessions, box, pool, bus, processor, consumer,
                      reconciler, manager, published)
            await w.set_mark("60000")
            stop = asyncio.Event()
            tasks = [asyncio.create_task(manager.run(stop)),
                     asyncio.create_task(consumer.run(stop))]
            try:
                yield w
            finally:
                stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
    finally:
        await engine.dispose()


async def activated(w: World, user: User, signal_id: str) -> int:
    """A market trade, its entry fill delivered by the stream: ACTIVE in the database."""
    await w.manager.wait_streaming(10, at_least=1)
    await until(lambda: w.manager.reconciliations >= 1, "the start-up reconciliation")
    trade_id = await w.open_trade(user, signal_id)
    await until(lambda: _has_status(w, trade_id, "ACTIVE"), "the entry fill in the database")
    entry = w.envelopes_of(user.cid(signal_id, Leg.ENTRY))
    assert entry and not any(e.synthetic for e in entry), "the entry came over the socket"
    return trade_id


async def _has_status(w: World, trade_id: int, status: str) -> bool:
    return await w.trade_status(trade_id) == status


async def assert_closed_by_the_stop(w: World, user: User, signal_id: str, trade_id: int) -> None:
    """CLOSED as STOP_LOSS with the exchange's price and PnL; the target cancelled there too."""
    client = w.pool.get(user.account_id, *await _keys(w, user))
    sl = await client.get_algo_order(client_algo_id=user.cid(signal_id, Leg.STOP_LOSS))
    assert sl.algoStatus == "FINISHED" and sl.actualOrderId.isdigit(), sl
    fills = await client.order_trades(BTC, int(sl.actualOrderId))
    assert len(fills) == 1, fills
    trade = await w.trade(trade_id)
    assert trade["status"] == "CLOSED" and trade["close_reason"] == "STOP_LOSS", trade
    assert trade["orders"] == {"ENTRY": "FILLED", "SL": "FILLED", "TP": "CANCELED"}, trade
    assert trade["exit_price"] == Decimal(str(fills[0]["price"]))
    assert trade["realized_pnl"] == Decimal(str(fills[0]["realizedPnl"])) < 0
    assert trade["closed_at"] == fills[0]["time"]
    account = await w.exchange_account(user)
    assert account["positions"] == [] and account["open_algo_orders"] == [], account


async def _keys(w: World, user: User) -> tuple[str, str]:
    async with w.sessions() as session:
        [acct] = await users.subscribed_accounts(session, w.box, (user.user_id,))
        return acct.api_key, acct.api_secret


# --- tests ---------------------------------------------------------------------------------------


async def test_a_stop_loss_filled_while_the_socket_is_down_closes_the_trade_exactly_once(
    world: World,
) -> None:
    """The socket is dropped and the exchange refuses new ones; the stop-loss triggers and fills
    meanwhile (its events are lost). Once a socket opens again the manager reconciles: the
    synthetic fill closes the trade as STOP_LOSS in the database and the worker cancels the
    take-profit. Another gap (a second reconciliation) and the same synthetic events
    delivered again (with everything else the manager ever published) change nothing."""
    w = world
    alice = await w.new_user("alice")
    trade_id = await activated(w, alice, "sig-gap")
    sl_cid = alice.cid("sig-gap", Leg.STOP_LOSS)
    reconciled = w.manager.reconciliations
    gap_start = len(w.published)

    async with w.sockets_refused():
        assert await w.admin("/sim/faults/drop-connections") == {"dropped": 1}
        await until(lambda: w.manager.status()["streaming"] == 0, "the manager seeing the drop")
        assert await w.listening(alice) == 0
        await w.set_mark("57900")  # the stop triggers and fills: nobody is listening
        account = await w.exchange_account(alice)
        assert account["positions"] == [], "the stop filled at the exchange"
        assert await w.listening(alice) == 0, "the fill happened while the socket was down"
        await asyncio.sleep(0.5)  # the manager keeps trying (refused) meanwhile
        assert w.manager.status()["connections"] == 0
        assert await w.trade_status(trade_id) == "ACTIVE", "nothing can have told the worker"

    await until(lambda: _has_status(w, trade_id, "CLOSED"), "the stop's fill in the database")
    await w.settled()
    await assert_closed_by_the_stop(w, alice, "sig-gap", trade_id)
    assert w.manager.reconnects >= 1 and w.manager.reconciliations > reconciled
    about_sl = w.envelopes_of(sl_cid, gap_start)
    assert about_sl and all(e.synthetic for e in about_sl), (
        "the stop's trigger and fill came only from reconciliation: no socket delivered them")
    assert any(e.event["e"] == "ORDER_TRADE_UPDATE" and e.event["o"]["x"] == "TRADE"
               for e in about_sl)

    # --- exactly once: a second gap and the same events again change nothing ---------------
    before = (await w.trade(trade_id), await w.count(Notification),
              await w.count(ProcessedEvent))
    [fill_id] = {e.event_id for e in about_sl if e.event["e"] == "ORDER_TRADE_UPDATE"}
    assert await w.processed([fill_id]) == 1
    reconciled = w.manager.reconciliations
    synthesized = w.manager.synthetic_events
    assert await w.admin("/sim/faults/drop-connections") == {"dropped": 1}
    await until(lambda: w.manager.reconciliations > reconciled, "the second reconciliation")
    await w.manager.wait_streaming(10, at_least=1)
    assert w.manager.synthetic_events == synthesized, "the closed trade yields nothing more"
    replay = list(w.published)  # every event again: the socket's and the synthetic ones
    recorded = await w.processed([e.event_id for e in replay])
    assert recorded >= 2, "the entry's fill (socket) and the stop's fill (synthetic) at least"
    duplicates = w.processor.duplicates
    await w.bus.publish_many(replay)
    await until(lambda: w.processor.duplicates - duplicates >= recorded,
                "every replayed event that had an effect seen as a duplicate")
    await w.settled()
    after = (await w.trade(trade_id), await w.count(Notification),
             await w.count(ProcessedEvent))
    assert after == before
    assert await w.bus.dlq_size() == 0


async def test_a_stop_loss_filled_after_the_listen_key_expired_reaches_the_database(
    world: World,
) -> None:
    """An hour passes without keepalive and the stop fills a minute after the listenKey expired
    (in one step of the exchange's clock, so before the manager can re-key: the fill went to no
    key). The manager publishes ``listenKeyExpired``, takes a new key, subscribes it and
    reconciles: the trade is closed with the stop's fill and the target cancelled, once."""
    w = world
    bob = await w.new_user("bob")
    trade_id = await activated(w, bob, "sig-expiry")
    old_key = (await w.exchange_account(bob))["listen_key"]
    reconciled = w.manager.reconciliations
    gap_start = len(w.published)
    await w.admin("/sim/paths", symbol=BTC, kind="scripted", steps=[[61 * MINUTE_MS, "57900"]])

    await w.admin("/sim/clock/advance", ms=62 * MINUTE_MS)

    await until(lambda: _has_status(w, trade_id, "CLOSED"), "the stop's fill in the database")
    await w.settled()
    await assert_closed_by_the_stop(w, bob, "sig-expiry", trade_id)
    expired = [e for e in w.published if e.event.get("e") == "listenKeyExpired"]
    assert [e.account_id for e in expired] == [bob.account_id]
    assert w.manager.rekeys == 1 and w.manager.reconciliations > reconciled
    await w.manager.wait_streaming(10, at_least=1)
    account = await w.exchange_account(bob)
    assert account["listen_key"] != old_key and account["listening"] == 1
    about_sl = w.envelopes_of(bob.cid("sig-expiry", Leg.STOP_LOSS), gap_start)
    assert about_sl and all(e.synthetic for e in about_sl), "the fill went to no listenKey"
    fills = [e for e in about_sl if e.event["e"] == "ORDER_TRADE_UPDATE"
             and e.event["o"]["x"] == "TRADE"]
    assert len({event_id(bob.account_id, e.event) for e in fills}) == 1
    assert await w.processed([e.event_id for e in fills]) == 1
    assert await w.bus.dlq_size() == 0
