"""Reconciliation after a stream gap, against the real simulator and the real worker path.

A ``SimulatorServer`` holds the exchange; trades are opened by the real ``Executor`` into a
migrated SQLite database; nobody runs the account's stream, so the worker misses everything the
exchange sends (the gap). A *witness* socket on the account's listenKey records what the
exchange really sent, frame by frame. ``Reconciler`` then snapshots the account by REST; its
synthetic payloads go to an ``EmbeddedBus`` as envelopes, and the real ``EventProcessor``
consumes them. The key property: every synthetic event has the id of an event the exchange
really sent, so the real events arriving too change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tests.polling import until
from websockets.asyncio.client import connect

from tradewire.bus.base import Envelope, Message
from tradewire.bus.embedded import EmbeddedBus
from tradewire.domain import Leg, Side, Signal, Target, client_order_id
from tradewire.exchange.client import ExchangeClient
from tradewire.exchange.event_ids import event_id, event_symbol
from tradewire.locks.memory import MemoryLocks
from tradewire.processor.normalize import normalize
from tradewire.processor.worker import EventProcessor
from tradewire.simulator import SimulatorServer
from tradewire.store import trades, users
from tradewire.store.crypto import SecretBox
from tradewire.store.db import create_engine_and_sessions, upgrade
from tradewire.store.tables import Notification
from tradewire.streams.reconcile import Reconciler, synthetic_envelope
from tradewire.streams.session import AccountRef
from tradewire.trading.clients import ClientPool
from tradewire.trading.execute import Executor

pytestmark = pytest.mark.timeout(30)

BTC = "BTCUSDT"
HOOK = "https://discord.test/api/webhooks/1/reconcile"
Payload = dict[str, Any]


class Requests:
    """REST requests answered by the exchange (method, path), in order."""

    def __init__(self) -> None:
        self.answered: list[tuple[str, str]] = []

    async def record(self, response: httpx.Response) -> None:
        self.answered.append((response.request.method, response.request.url.path))


@dataclass
class User:
    ref: AccountRef
    client: ExchangeClient
    api_key: str
    seen: list[Payload] = field(default_factory=list)  # what the exchange sent (witness)

    def seen_ids(self) -> set[str]:
        return {event_id(self.ref.account_id, p) for p in self.seen}

    def cid(self, signal_id: str, leg: Leg) -> str:
        return client_order_id(signal_id, self.ref.account_id, leg)


@dataclass
class World:
    sim: SimulatorServer
    http: httpx.AsyncClient
    requests: Requests
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    pool: ClientPool
    executor: Executor
    processor: EventProcessor
    bus: EmbeddedBus
    reconciler: Reconciler
    witnesses: list[asyncio.Task[None]] = field(default_factory=list)

    async def admin(self, path: str, **body: Any) -> Any:
        response = await self.http.post(f"{self.sim.base_url}{path}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def set_mark(self, price: str) -> None:
        await self.admin("/sim/mark-price", symbol=BTC, price=price)

    async def exchange_account(self, user: User) -> dict[str, Any]:
        response = await self.http.get(f"{self.sim.base_url}/sim/accounts/{user.api_key}")
        body: dict[str, Any] = response.json()
        return body

    async def new_user(self, name: str, balance: str = "10000") -> User:
        """A user with a fresh exchange account, and a witness socket on its listenKey."""
        keys = await self.admin("/sim/accounts", balance=balance)
        async with self.sessions.begin() as session:
            row, account = await users.create_user(
                session, self.box, name=name, api_key=keys["api_key"],
                api_secret=keys["api_secret"], discord_webhook_url=HOOK)
            ref = AccountRef(account_id=account.id, user_id=row.id)
        client = self.pool.get(ref.account_id, keys["api_key"], keys["api_secret"])
        user = User(ref, client, keys["api_key"])
        listen_key = await client.new_listen_key()
        ready = asyncio.Event()
        self.witnesses.append(asyncio.create_task(self._witness(user, listen_key, ready)))
        await asyncio.wait_for(ready.wait(), 5)
        return user

    async def _witness(self, user: User, listen_key: str, ready: asyncio.Event) -> None:
        async with connect(f"{self.sim.ws_url}/private/ws/{listen_key}") as ws:
            ready.set()
            async for frame in ws:
                user.seen.append(json.loads(frame))

    async def open_trade(self, user: User, signal_id: str, *, entry: str | None = None,
                         stop: str = "58000") -> int:
        signal = Signal(
            signal_id=signal_id, symbol=BTC, side=Side.LONG, stop_loss=Decimal(stop),
            targets=(Target(Decimal(63000), Decimal(1)),), leverage=10,
            size_usdt=Decimal(200), entry_price=Decimal(entry) if entry else None,
            user_ids=(user.ref.user_id,),
        )
        report = await self.executor.execute(signal, {"signal_id": signal_id})
        [outcome] = report.outcomes
        assert outcome.status == "OPEN", outcome
        return outcome.trade_id

    async def reconcile(self, user: User) -> tuple[list[Payload], int, list[tuple[str, str]]]:
        """Reconcile one account: (payloads, weight used, REST requests made)."""
        weight, answered = self.reconciler.weight_used, len(self.requests.answered)
        payloads = await self.reconciler.reconcile(user.ref, user.client)
        return (payloads, self.reconciler.weight_used - weight,
                self.requests.answered[answered:])

    async def deliver(self, user: User, payloads: list[Payload], *,
                      synthetic: bool = True) -> None:
        """Publish the payloads as the streams layer would, and let the worker consume them."""
        now = self.reconciler.clock.now_ms()
        for payload in payloads:
            envelope = (synthetic_envelope(user.ref, payload, now) if synthetic else Envelope(
                event_id=event_id(user.ref.account_id, payload),
                account_id=user.ref.account_id, user_id=user.ref.user_id,
                symbol=event_symbol(payload), received_ms=now, event=payload))
            await self.bus.publish(envelope)
        await self.consume()

    async def consume(self) -> None:
        messages: list[Message] = []
        while batch := await self.bus.fetch("worker", 100, 0):
            messages += batch
        messages.sort(key=lambda m: int(m.id.split("-")[0]))
        for message in messages:
            await self.processor.handle(Envelope.decode(message.body))
            await self.bus.ack(message)

    async def trade(self, trade_id: int) -> dict[str, Any]:
        async with self.sessions() as session:
            row = await trades.get_trade(session, trade_id)
            return {
                "status": row.status.value,
                "close_reason": row.close_reason.value if row.close_reason else None,
                "exit_price": row.exit_price, "realized_pnl": row.realized_pnl,
                "commission": row.commission, "closed_at": row.closed_at,
                "entry_price": row.entry_price, "quantity": row.quantity,
                "orders": {o.leg.value: o.status for o in row.orders},
            }

    async def notifications(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Notification))
                       or 0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'tradewire.db'}"
    await upgrade(db_url)
    engine, sessions = create_engine_and_sessions(db_url)
    box = SecretBox(os.urandom(32))
    requests = Requests()
    sim = SimulatorServer()
    try:
        async with (
            sim,
            httpx.AsyncClient(timeout=5, event_hooks={"response": [requests.record]}) as http,
        ):
            pool = ClientPool(sim.base_url, http)
            w = World(sim, http, requests, sessions, box, pool, Executor(sessions, box, pool),
                      EventProcessor(sessions, box, pool, MemoryLocks()), EmbeddedBus(),
                      Reconciler(sessions))
            await w.set_mark("60000")
            try:
                yield w
            finally:
                for task in w.witnesses:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        await engine.dispose()


async def assert_exchange_sent_the_same(user: User, payloads: list[Payload]) -> None:
    """Each synthetic payload has the id of an event the exchange really sent on the socket,
    and means the same to the worker."""
    wanted = {event_id(user.ref.account_id, p) for p in payloads}
    with contextlib.suppress(TimeoutError):
        await until(lambda: wanted <= user.seen_ids())
    assert wanted <= user.seen_ids(), sorted(wanted - user.seen_ids())
    real = {event_id(user.ref.account_id, p): p for p in user.seen}
    for payload in payloads:
        eid = event_id(user.ref.account_id, payload)
        a, b = (normalize(Envelope(eid, user.ref.account_id, user.ref.user_id, BTC, 0, p))
                for p in (payload, real[eid]))
        assert (a.kind, a.client_id, a.price, a.quantity, a.realized_pnl, a.commission) == (
            b.kind, b.client_id, b.price, b.quantity, b.realized_pnl, b.commission)


def kinds(payloads: list[Payload]) -> list[str]:
    return [f"{p['e']}:{p['o'].get('x', '')}:{p['o']['X']}" for p in payloads]


def trade_fills(user: User, client_id: str) -> list[dict[str, Any]]:
    """The exchange's TRADE events of one of our orders, as the witness saw them."""
    return [p["o"] for p in user.seen if p["e"] == "ORDER_TRADE_UPDATE"
            and p["o"]["c"] == client_id and p["o"]["x"] == "TRADE"]


async def activate(world: World, user: User, signal_id: str, stop: str = "58000") -> int:
    """A market trade whose entry fill the worker learns from a first reconciliation."""
    trade_id = await world.open_trade(user, signal_id, stop=stop)
    payloads, weight, _ = await world.reconcile(user)
    assert kinds(payloads) == ["ORDER_TRADE_UPDATE:TRADE:FILLED"]
    assert weight == 1 + 1 + 5 + 1  # openOrders, entry by id, its fills, openAlgoOrders
    await assert_exchange_sent_the_same(user, payloads)
    await world.deliver(user, payloads)
    assert (await world.trade(trade_id))["status"] == "ACTIVE"
    return trade_id


# --- tests ---------------------------------------------------------------------------------------


async def test_a_stop_loss_filled_during_a_gap_closes_the_trade_and_cancels_the_take_profit(
    world: World,
) -> None:
    """The stop-loss triggers and fills while nobody listens. Reconciliation finds the fill of
    its engine order and the algo order FINISHED; the worker closes the trade as STOP_LOSS with
    the exchange's price, PnL and fees, and cancels the take-profit at the exchange."""
    alice = await world.new_user("alice")
    trade_id = await activate(world, alice, "sig-sl")

    quiet, weight, _ = await world.reconcile(alice)
    assert (quiet, weight) == ([], 1), "nothing missed: only the openAlgoOrders probe"

    await world.set_mark("57900")
    payloads, weight, made = await world.reconcile(alice)

    assert kinds(payloads) == ["ORDER_TRADE_UPDATE:TRADE:FILLED", "ALGO_UPDATE::FINISHED"]
    assert all(p["synthetic"] is True for p in payloads)
    assert weight == 1 + 1 + 1 + 5  # openAlgoOrders, SL by id, its engine order, its fills
    assert all(path not in ("/fapi/v1/openOrders",) for _, path in made), "entry is final"
    await assert_exchange_sent_the_same(alice, payloads)

    await world.deliver(alice, payloads)

    trade = await world.trade(trade_id)
    [entry_fill] = trade_fills(alice, alice.cid("sig-sl", Leg.ENTRY))
    [sl_fill] = trade_fills(alice, alice.cid("sig-sl", Leg.STOP_LOSS))
    assert trade["status"] == "CLOSED" and trade["close_reason"] == "STOP_LOSS"
    assert trade["orders"] == {"ENTRY": "FILLED", "SL": "FILLED", "TP": "CANCELED"}
    assert trade["exit_price"] == Decimal(sl_fill["ap"])
    assert trade["closed_at"] == sl_fill["T"]
    assert trade["realized_pnl"] == Decimal(sl_fill["rp"]) < 0
    assert trade["commission"] == Decimal(entry_fill["n"]) + Decimal(sl_fill["n"])
    assert (await world.exchange_account(alice))["open_algo_orders"] == []


async def test_reconciling_again_or_receiving_the_real_events_changes_nothing(
    world: World,
) -> None:
    """After the gap is repaired: a second reconciliation of the closed trade makes no REST
    call; the same synthetic events again, and every real event the exchange sent, are
    duplicates or no-ops for the worker."""
    alice = await world.new_user("alice")
    trade_id = await activate(world, alice, "sig-idem")
    await world.set_mark("57900")
    payloads, _, _ = await world.reconcile(alice)
    await world.deliver(alice, payloads)
    await until(lambda: any(p["e"] == "ALGO_UPDATE" and p["o"]["X"] == "CANCELED"
                            for p in alice.seen))  # the worker's cancel of the take-profit
    before, notified = await world.trade(trade_id), await world.notifications()
    duplicates = world.processor.duplicates

    again, weight, made = await world.reconcile(alice)
    assert (again, weight, made) == ([], 0, [])

    await world.deliver(alice, payloads)
    await world.deliver(alice, list(alice.seen), synthetic=False)

    assert world.processor.duplicates >= duplicates + len(payloads) + 1
    assert await world.trade(trade_id) == before
    assert await world.notifications() == notified


async def test_a_take_profit_filled_during_a_gap_closes_the_trade_and_cancels_the_stop(
    world: World,
) -> None:
    bob = await world.new_user("bob")
    trade_id = await activate(world, bob, "sig-tp")

    await world.set_mark("63100")
    payloads, weight, _ = await world.reconcile(bob)

    assert kinds(payloads) == ["ORDER_TRADE_UPDATE:TRADE:FILLED", "ALGO_UPDATE::FINISHED"]
    assert payloads[0]["o"]["c"] == bob.cid("sig-tp", Leg.TAKE_PROFIT)
    assert weight == 1 + 1 + 1 + 5
    await assert_exchange_sent_the_same(bob, payloads)
    await world.deliver(bob, payloads)

    trade = await world.trade(trade_id)
    [tp_fill] = trade_fills(bob, bob.cid("sig-tp", Leg.TAKE_PROFIT))
    assert trade["status"] == "CLOSED" and trade["close_reason"] == "TAKE_PROFIT"
    assert trade["orders"] == {"ENTRY": "FILLED", "SL": "CANCELED", "TP": "FILLED"}
    assert trade["exit_price"] == Decimal(tp_fill["ap"])
    assert trade["realized_pnl"] == Decimal(tp_fill["rp"]) > 0
    assert (await world.exchange_account(bob))["open_algo_orders"] == []


async def test_an_entry_the_user_cancelled_during_a_gap_cancels_the_trade(world: World) -> None:
    """A resting LIMIT entry cancelled by the user directly at the exchange: the cancel event
    is synthesised, the trade ends CANCELED and its stop and target are cancelled."""
    carol = await world.new_user("carol")
    trade_id = await world.open_trade(carol, "sig-limit", entry="59000")
    assert (await world.reconcile(carol))[:2] == ([], 2), "resting entry, waiting algo orders"

    await carol.client.cancel_order(BTC, client_order_id=carol.cid("sig-limit", Leg.ENTRY))
    payloads, weight, _ = await world.reconcile(carol)

    assert kinds(payloads) == ["ORDER_TRADE_UPDATE:CANCELED:CANCELED"]
    assert weight == 1 + 1 + 1  # openOrders, the entry by id (no fills), openAlgoOrders
    await assert_exchange_sent_the_same(carol, payloads)
    await world.deliver(carol, payloads)

    trade = await world.trade(trade_id)
    assert trade["status"] == "CANCELED"
    assert trade["orders"] == {"ENTRY": "CANCELED", "SL": "CANCELED", "TP": "CANCELED"}
    assert (await world.exchange_account(carol))["open_algo_orders"] == []


async def test_a_stop_loss_the_user_cancelled_during_a_gap_is_recorded(world: World) -> None:
    """The user cancels the stop-loss algo order at the exchange: ALGO_UPDATE CANCELED is
    synthesised; the trade stays ACTIVE with its stop recorded as cancelled (and the user is
    warned that the position lost its protection)."""
    dave = await world.new_user("dave")
    trade_id = await activate(world, dave, "sig-user-cancel")
    notified = await world.notifications()

    await dave.client.cancel_algo_order(client_algo_id=dave.cid("sig-user-cancel",
                                                                 Leg.STOP_LOSS))
    payloads, weight, _ = await world.reconcile(dave)

    assert kinds(payloads) == ["ALGO_UPDATE::CANCELED"]
    assert weight == 1 + 1
    await assert_exchange_sent_the_same(dave, payloads)
    await world.deliver(dave, payloads)

    trade = await world.trade(trade_id)
    assert trade["status"] == "ACTIVE"
    assert trade["orders"] == {"ENTRY": "FILLED", "SL": "CANCELED", "TP": "PLACED"}
    assert await world.notifications() == notified + 1


async def test_a_liquidation_during_a_gap_closes_the_trade(world: World) -> None:
    """The position is liquidated before its (far) stop triggers: the exchange expires the
    stop and the target and fills a LIQUIDATION order. Reconciliation finds both expiries, then
    the liquidation order (allOrders since the expiry) and its fill; the trade closes as
    LIQUIDATION."""
    ivan = await world.new_user("ivan", balance="25")
    trade_id = await activate(world, ivan, "sig-liq", stop="10000")

    await world.set_mark("50000")
    payloads, weight, _ = await world.reconcile(ivan)

    assert kinds(payloads) == ["ALGO_UPDATE::EXPIRED", "ALGO_UPDATE::EXPIRED",
                               "ORDER_TRADE_UPDATE:CALCULATED:FILLED"]
    assert payloads[2]["o"]["c"].startswith("autoclose-")
    assert weight == 1 + 1 + 1 + 5 + 5  # openAlgoOrders, SL, TP, allOrders, its fills
    await assert_exchange_sent_the_same(ivan, payloads)
    await world.deliver(ivan, payloads)

    trade = await world.trade(trade_id)
    assert trade["status"] == "CLOSED" and trade["close_reason"] == "LIQUIDATION"
    assert trade["exit_price"] == Decimal(payloads[2]["o"]["ap"])
    assert trade["orders"] == {"ENTRY": "FILLED", "SL": "CANCELED", "TP": "CANCELED"}


async def test_accounts_without_live_trades_cost_no_rest_weight(world: World) -> None:
    """One database query for all accounts; an account with no trade, and one whose trade is
    closed, get no REST call at all."""
    erin, frank = await world.new_user("erin"), await world.new_user("frank")
    await activate(world, frank, "sig-closed")
    await world.set_mark("57900")
    payloads, _, _ = await world.reconcile(frank)
    await world.deliver(frank, payloads)
    answered, weight = len(world.requests.answered), world.reconciler.weight_used

    result = await world.reconciler.reconcile_many(
        [(erin.ref, erin.client), (frank.ref, frank.client)])

    assert result == {erin.ref.account_id: [], frank.ref.account_id: []}
    assert world.requests.answered[answered:] == []
    assert world.reconciler.weight_used == weight


async def test_reconcile_many_finds_what_each_account_missed(world: World) -> None:
    """Two accounts with live trades on the same symbol, one stop-loss fill each: the batch
    variant returns each account's own events."""
    gina, hugo = await world.new_user("gina"), await world.new_user("hugo")
    await activate(world, gina, "sig-many-g")
    await activate(world, hugo, "sig-many-h")
    await world.set_mark("57900")

    result = await world.reconciler.reconcile_many([(gina.ref, gina.client),
                                                    (hugo.ref, hugo.client)])

    for user, signal_id in ((gina, "sig-many-g"), (hugo, "sig-many-h")):
        payloads = result[user.ref.account_id]
        assert kinds(payloads) == ["ORDER_TRADE_UPDATE:TRADE:FILLED", "ALGO_UPDATE::FINISHED"]
        assert payloads[0]["o"]["c"] == user.cid(signal_id, Leg.STOP_LOSS)
        await assert_exchange_sent_the_same(user, payloads)
