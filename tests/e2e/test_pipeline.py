"""The whole pipeline in one process — signal → orders → user stream → bus → worker → DB →
Discord — on the embedded defaults and on PostgreSQL + Redis Streams + Redis locks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import Harness, stack_settings, start_harness

from tradewire.bus.base import Envelope, partition_for
from tradewire.cli.demo import closed_by, orders_placed, run_scenario, wait_streams
from tradewire.config import Settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def harness(deployment: Settings) -> AsyncIterator[Harness]:
    async for h in start_harness(deployment):
        yield h


async def sim_account(h: Harness, api_key: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=h.ends.sim_url) as sim:
        response = await sim.get(f"/sim/accounts/{api_key}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


async def test_stop_loss_and_take_profit_close_trades_cancel_siblings_and_notify(
    harness: Harness,
) -> None:
    """One user's stop-loss and another's take-profit fill: both trades close with the right
    reason, each sibling order is cancelled at the exchange, and both users are told."""
    result = await run_scenario(harness.ends)
    trades = result["trades"]
    assert trades["alice"]["close_reason"] == "STOP_LOSS"
    assert trades["bob"]["close_reason"] == "TAKE_PROFIT"
    assert closed_by(trades, "STOP_LOSS") == 1 and closed_by(trades, "TAKE_PROFIT") == 1
    assert orders_placed(trades) == 6
    legs = {u: {o["leg"]: o["status"] for o in t["orders"]} for u, t in trades.items()}
    assert legs["alice"] == {"ENTRY": "FILLED", "SL": "FILLED", "TP": "CANCELED"}
    assert legs["bob"] == {"ENTRY": "FILLED", "SL": "CANCELED", "TP": "FILLED"}
    assert trades["alice"]["realized_pnl"] is not None
    assert float(trades["alice"]["realized_pnl"]) < 0 < float(trades["bob"]["realized_pnl"])

    for key in await api_keys(harness):
        account = await sim_account(harness, key)
        assert account["open_algo_orders"] == [], "the sibling must be cancelled at the exchange"
        assert all(float(p["positionAmt"]) == 0 for p in account["positions"])

    await harness.stack.notifier.drain()
    await harness.sink.wait_for(4)
    assert_notified(harness, "alice", "Entry filled", "Stop-loss hit")
    assert_notified(harness, "bob", "Entry filled", "Take-profit hit")


async def test_a_replayed_duplicate_event_changes_nothing(harness: Harness) -> None:
    """Publishing an already-processed exchange event again leaves every trade as it was."""
    await run_scenario(harness.ends)
    stack = harness.stack
    before = await all_trades(harness)
    applied = stack.processor.applied
    envelope = await last_applied_envelope(harness)
    await stack.rt.bus.publish(envelope)
    await wait_until(lambda: stack.processor.duplicates >= 1)
    assert stack.processor.applied == applied
    assert await all_trades(harness) == before


async def test_a_malformed_event_goes_to_the_dlq_after_one_attempt_without_blocking(
    harness: Harness,
) -> None:
    """A malformed message is permanent: dead-lettered after one attempt, while the next event
    is processed normally."""
    stack = harness.stack
    bus = stack.rt.bus
    partition = partition_for("1:BTCUSDT", bus.partitions)
    await bus.publish_raw(partition, b'{"event_id": "broken", "account_id": "x"')
    await stack.rt.bus.publish(Envelope(
        event_id="1:acct:probe", account_id=1, user_id=1, symbol="BTCUSDT", received_ms=1,
        event={"e": "ACCOUNT_UPDATE", "E": 1, "T": 1, "a": {"m": "DEPOSIT", "B": [], "P": []}},
    ))
    await wait_until(lambda: stack.consumer.stats.dead_lettered >= 1, timeout_s=15)
    assert await bus.dlq_size() == 1
    [letter] = await bus.dlq_list()
    assert letter.attempts == 1 and "malformed" in letter.error
    assert stack.consumer.stats.processed >= 1


async def test_an_invalid_signal_is_rejected_clearly_and_places_nothing(harness: Harness) -> None:
    """A LONG whose stop is above the mark price gets a 422 naming stop_loss; no order exists."""
    async with httpx.AsyncClient(base_url=harness.ends.sim_url) as sim:
        await sim.post("/sim/mark-price", json={"symbol": "BTCUSDT", "price": "60000"})
        keys = (await sim.post("/sim/accounts", json={})).json()
    headers = {"Authorization": f"Bearer {harness.ends.token}"}
    async with httpx.AsyncClient(base_url=harness.ends.api_url, headers=headers) as api:
        await api.post("/api/users", json={"name": "carol", **keys})
        response = await api.post("/api/execute-trade", json={
            "signal_id": "bad-1", "symbol": "BTCUSDT", "side": "LONG", "entry": "market",
            "stop_loss": "61000", "take_profit": "63000", "leverage": 5, "size_usdt": "100",
        })
        assert response.status_code == 422
        assert response.json()["field"] == "stop_loss"
        assert (await api.get("/api/trades")).json() == []
    account = await sim_account(harness, keys["api_key"])
    assert account["open_orders"] == [] and account["open_algo_orders"] == []


# --- helpers -----------------------------------------------------------------------------------


def assert_notified(h: Harness, hook: str, *titles: str) -> None:
    got = h.sink.titles(hook)
    for title in titles:
        assert any(t.startswith(title) for t in got), f"{hook} was not told {title!r}: {got}"


async def api_keys(h: Harness) -> list[str]:
    from tradewire.store import users

    async with h.stack.rt.sessions() as session:
        return [a.api_key for a in await users.active_accounts(session, h.stack.rt.box)]


async def all_trades(h: Harness) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {h.ends.token}"}
    async with httpx.AsyncClient(base_url=h.ends.api_url, headers=headers) as api:
        body: list[dict[str, Any]] = (await api.get("/api/trades")).json()
        return body


async def last_applied_envelope(h: Harness) -> Envelope:
    """The stop-loss fill of the scenario, exactly as the streams layer published it."""
    from tradewire.processor.normalize import normalize

    for envelope in reversed(h.stack.processor.history):
        if normalize(envelope).kind.value == "SL_TRIGGERED":
            return envelope
    raise AssertionError("the scenario applied no stop-loss fill")


async def wait_until(check: Any, timeout_s: float = 10.0) -> None:
    import asyncio

    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.02)


async def test_several_targets_close_the_position_in_parts(tmp_path: Path) -> None:
    """A LONG with two targets: the first closes half and keeps the trade ACTIVE under its stop;
    the second closes the rest, the trade is CLOSED(TAKE_PROFIT) and the stop is cancelled."""
    async for h in start_harness(stack_settings(tmp_path)):
        headers = {"Authorization": f"Bearer {h.ends.token}"}
        async with httpx.AsyncClient(base_url=h.ends.sim_url) as sim, httpx.AsyncClient(
            base_url=h.ends.api_url, headers=headers
        ) as api:
            await sim.post("/sim/mark-price", json={"symbol": "BTCUSDT", "price": "60000"})
            keys = (await sim.post("/sim/accounts", json={})).json()
            await api.post("/api/users", json={"name": "tess", **keys,
                                               "discord_webhook_url": f"{h.ends.webhook_base}/t"})
            await wait_streams(sim, [keys["api_key"]], 10)
            report = (await api.post("/api/execute-trade", json={
                "signal_id": "two-targets", "symbol": "BTCUSDT", "side": "LONG",
                "stop_loss": "58000", "take_profits": ["61000", "62000"], "leverage": 10,
                "size_usdt": "1200"})).json()
            trade_id = report["trades"][0]["trade_id"]
            for price in ("60500", "61100"):
                await sim.post("/sim/mark-price", json={"symbol": "BTCUSDT", "price": price})
            trade = await wait_trade(api, trade_id, lambda t: leg(t, "TP") == "FILLED")
            assert trade["status"] == "ACTIVE" and float(trade["realized_pnl"]) > 0
            assert leg(trade, "SL") == "PLACED" and leg(trade, "TP2") == "PLACED"
            await sim.post("/sim/mark-price", json={"symbol": "BTCUSDT", "price": "62100"})
            trade = await wait_trade(api, trade_id, lambda t: t["status"] == "CLOSED")
            assert trade["close_reason"] == "TAKE_PROFIT" and leg(trade, "SL") == "CANCELED"
            account = (await sim.get(f"/sim/accounts/{keys['api_key']}")).json()
            assert account["positions"] == [] and account["open_algo_orders"] == []


def leg(trade: dict[str, Any], name: str) -> str:
    return str(next(o["status"] for o in trade["orders"] if o["leg"] == name))


async def wait_trade(api: httpx.AsyncClient, trade_id: int, done: Any) -> dict[str, Any]:
    import asyncio

    async with asyncio.timeout(10):
        while True:
            trade: dict[str, Any] = (await api.get(f"/api/trades/{trade_id}")).json()
            if done(trade):
                return trade
            await asyncio.sleep(0.05)
