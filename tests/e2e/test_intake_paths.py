"""Issue 6, end to end for every source: Discord bot, CDP monitor and TradingView webhook.

Each test runs a whole tradewire Stack in this process (the real API on a free port, the intake
service, the executor, the built-in simulator, the worker and the notifier) whose profiles trust
the test's channels to trade without confirmation (``auto``, ``max_lag_s`` 60), and one
follower account at the simulator. A signal is *executed* when the simulator shows its entry
filled (a position, no resting order) with a stop-loss and a take-profit open; "within 1 s"
runs from sending the message (gateway frame, appended row, webhook request) to that moment.
*Nothing new* compares the follower's book before and after, once the intake ledger
(``GET /api/intake/messages``) shows that the later message was handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import stack_settings, start_harness
from tests.e2e.intake_support import (  # noqa: F401 (chromium_fixture, page_server_fixture)
    GUILD,
    Chromium,
    FakeGateway,
    PageServer,
    Tab,
    _channels,
    channel_tab,
    chromium_fixture,
    create_user,
    discord_message,
    page_server_fixture,
    snowflake,
)

from tradewire.cli.demo import Endpoints
from tradewire.clock import SystemClock
from tradewire.intake.cdp import CdpMonitor, intake_post
from tradewire.intake.discord.bot import BotOptions, run_discord_bot

pytestmark = pytest.mark.timeout(30)

SIGNAL = "BTCUSDT LONG\nEntry: 60000\nLeverage: 10x\nSL: 58000\nTP1: 63000"
NEW_STOP = SIGNAL.replace("SL: 58000", "SL: 58500")
BOT_CHANNEL = "1100000000000000001"
BOT_TOKEN = "MTIz.fake.bot-token"
TV_SECRET = "tv-shared-secret"
TV_URL = "/api/intake/tradingview"
MAX_LAG_S = 60
FAST = BotOptions(backoff_s=(0.01, 0.05), invalid_session_wait_s=(0.01, 0.02),
                  identify_interval_s=0.0, post_backoff_s=(0.01, 0.05), drain_timeout_s=2.0)


# --- the follower's book and the intake ledger ---------------------------------------------


@dataclass(frozen=True)
class Book:
    """What the follower has at the simulator: positions, resting orders, open algo orders."""

    positions: tuple[tuple[str, str, str], ...]  # symbol, amount, entry price
    orders: tuple[tuple[int, str, str, str], ...]  # id, type, price, quantity
    algos: tuple[tuple[int, str, str, str], ...]  # id, type, trigger price, quantity

    @classmethod
    def of(cls, account: dict[str, Any]) -> Book:
        return cls(
            tuple((p["symbol"], p["positionAmt"], p["entryPrice"]) for p in account["positions"]),
            tuple((o["orderId"], o["type"], o["price"], o["origQty"])
                  for o in account["open_orders"]),
            tuple((a["algoId"], a["orderType"], a["triggerPrice"], a["quantity"])
                  for a in account["open_algo_orders"]))

    @property
    def executed(self) -> bool:
        """The entry filled and both protective orders open."""
        kinds = {kind for _, kind, _, _ in self.algos}
        return (bool(self.positions) and not self.orders
                and {"STOP_MARKET", "TAKE_PROFIT_MARKET"} <= kinds)

    @property
    def empty(self) -> bool:
        return not (self.positions or self.orders or self.algos)


@dataclass
class Desk:
    """The Stack as the tests see it: the operator API, the simulator and the follower."""

    ends: Endpoints
    api: httpx.AsyncClient  # with the operator token
    sim: httpx.AsyncClient
    api_key: str
    cdp_channel: str

    async def book(self) -> Book:
        return Book.of((await self.sim.get(f"/sim/accounts/{self.api_key}")).json())

    async def executed(self, sent: float, timeout: float = 5.0) -> tuple[Book, float]:
        """The book once the signal sent at ``sent`` (``time.monotonic()``) is executed, and
        how long that took."""
        while True:
            book = await self.book()
            elapsed = time.monotonic() - sent
            if book.executed or elapsed > timeout:
                return book, elapsed
            await asyncio.sleep(0.01)

    async def ledger(self, source: str) -> list[dict[str, Any]]:
        rows = (await self.api.get("/api/intake/messages")).json()
        return [row for row in rows if row["source"] == source]

    async def row(self, source: str, message_id: str, timeout: float = 5.0,
                  **expected: Any) -> dict[str, Any]:
        """The ledger row of a message, once it has the ``expected`` values."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in await self.ledger(source) if r["message_id"] == message_id]
            if rows and all(rows[0][key] == value for key, value in expected.items()):
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no ledger row {message_id} with {expected}: {rows}")
            await asyncio.sleep(0.01)


def assert_executed_within_a_second(book: Book, elapsed: float) -> None:
    assert book.executed, f"not executed after {elapsed:.2f} s: {book}"
    assert elapsed < 1.0, f"executed after {elapsed:.2f} s"


def assert_edit_ignored_after_execution(row: dict[str, Any], edit: int) -> None:
    """The row is still the executed one; its note says the edit (a new stop) was ignored."""
    assert (row["status"], row["edit"]) == ("EXECUTED", edit), row
    assert f"edit {edit} after execution ignored" in row["note"], row["note"]
    assert "stop_loss 58000 → 58500" in row["note"], row["note"]


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    """A Stack that trusts the bot channel, one CDP channel and TradingView, with a follower."""
    cdp_channel = str(next(_channels))
    trusted = {"trust": "auto", "size_usdt": "200", "max_lag_s": MAX_LAG_S}
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps({"channels": {
        f"discord_bot:{BOT_CHANNEL}": trusted, f"cdp:{cdp_channel}": trusted,
        "tradingview": trusted}}))
    settings = stack_settings(tmp_path, intake_profiles_file=profiles,
                              tradingview_secret=TV_SECRET)
    async for harness in start_harness(settings):
        ends = harness.ends
        async with httpx.AsyncClient(
                base_url=ends.api_url, headers={"Authorization": f"Bearer {ends.token}"},
                timeout=10, trust_env=False) as api, \
                httpx.AsyncClient(base_url=ends.sim_url, timeout=10, trust_env=False) as sim:
            yield Desk(ends, api, sim, await create_user(api, sim), cdp_channel)


# --- the Discord bot --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def discord_bot(desk: Desk) -> AsyncIterator[FakeGateway]:
    """``run_discord_bot`` on the bot channel, connected to a fake gateway and posting to the
    Stack's API with the operator token."""
    async with FakeGateway() as gateway:
        stop = asyncio.Event()
        task = asyncio.create_task(run_discord_bot(
            desk.ends.api_url, desk.ends.token, BOT_TOKEN, [BOT_CHANNEL], stop,
            gateway_url=gateway.url, options=FAST))
        try:
            await gateway.ready()
            yield gateway
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)


async def test_a_bot_signal_executes_within_a_second_and_its_edit_and_repost_change_nothing(
    desk: Desk,
) -> None:
    """A MESSAGE_CREATE with a clean signal is executed within 1 s; its MESSAGE_UPDATE moving
    the stop, and the same text under a new message id, place nothing more, and the ledger
    says why (edit ignored after execution; duplicate)."""
    async with discord_bot(desk) as gateway:
        message_id = snowflake()
        sent = time.monotonic()
        await gateway.dispatch("MESSAGE_CREATE", discord_message(message_id, BOT_CHANNEL, SIGNAL))
        executed, elapsed = await desk.executed(sent)

        await gateway.dispatch("MESSAGE_UPDATE", discord_message(
            message_id, BOT_CHANNEL, NEW_STOP, edited_timestamp="2024-04-29T18:13:00+00:00"))
        edited = await desk.row("discord_bot", message_id, edit=1)
        after_edit = await desk.book()

        repost = snowflake()
        await gateway.dispatch("MESSAGE_CREATE", discord_message(repost, BOT_CHANNEL, SIGNAL))
        duplicate = await desk.row("discord_bot", repost, status="DUPLICATE")
        after_repost = await desk.book()

    assert_executed_within_a_second(executed, elapsed)
    assert_edit_ignored_after_execution(edited, edit=1)
    assert duplicate["reason"].startswith(f"duplicate: same signal as message {message_id}")
    assert after_edit == executed and after_repost == executed


async def test_a_bot_message_older_than_the_channel_max_lag_is_rejected_as_stale(
    desk: Desk,
) -> None:
    """A clean signal whose snowflake time is older than the channel's ``max_lag_s`` is
    recorded as stale and places nothing."""
    async with discord_bot(desk) as gateway:
        old = snowflake(age_s=MAX_LAG_S + 30)
        await gateway.dispatch("MESSAGE_CREATE", discord_message(old, BOT_CHANNEL, SIGNAL))
        stale = await desk.row("discord_bot", old, status="STALE")
    assert stale["reason"].startswith("stale: sent "), stale["reason"]
    assert stale["reason"].endswith(f"the limit is {MAX_LAG_S} s"), stale["reason"]
    assert (await desk.book()).empty


# --- the CDP monitor (headless Chromium) -------------------------------------------------------


@contextlib.asynccontextmanager
async def cdp_monitor(desk: Desk, chromium: Chromium, tab: Tab) -> AsyncIterator[CdpMonitor]:
    """A ``CdpMonitor`` on the tab's channel, posting to the Stack's API, attached."""
    monitor = CdpMonitor(chromium.debug_url, f"/channels/{GUILD}/{tab.channel}",
                         intake_post(desk.api), SystemClock())
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        await asyncio.wait_for(monitor.attached.wait(), 10)
        yield monitor
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_page_signal_executes_within_a_second_and_its_edit_and_repost_change_nothing(
    desk: Desk, chromium: Chromium, page_server: PageServer,
) -> None:
    """A row appended to the channel's page is executed within 1 s; editing the row to move
    the stop, and the same text under a new message id, place nothing more, and the ledger
    says why (edit ignored after execution; duplicate)."""
    async with channel_tab(chromium, page_server, desk.cdp_channel) as tab, \
            cdp_monitor(desk, chromium, tab):
        sent = time.monotonic()
        message_id = await tab.post(SIGNAL)
        executed, elapsed = await desk.executed(sent)

        await tab.edit(message_id, NEW_STOP)
        edited = await desk.row("cdp", message_id, edit=1)
        after_edit = await desk.book()

        repost = await tab.post(SIGNAL)
        duplicate = await desk.row("cdp", repost, status="DUPLICATE")
        after_repost = await desk.book()

    assert_executed_within_a_second(executed, elapsed)
    assert_edit_ignored_after_execution(edited, edit=1)
    assert duplicate["reason"].startswith(f"duplicate: same signal as message {message_id}")
    assert after_edit == executed and after_repost == executed


async def test_signals_already_on_the_page_when_the_monitor_starts_are_never_executed(
    desk: Desk, chromium: Chromium, page_server: PageServer,
) -> None:
    """A clean, fresh signal already in the channel when the monitor starts is never executed,
    even when the list renders it again (this stands in for the stale case of the other paths:
    a live monitor drops every row sent before its start as backlog, so the page cannot hand
    the intake a stale message)."""
    async with channel_tab(chromium, page_server, desk.cdp_channel) as tab:
        backlog = await tab.post(SIGNAL, sent_ms=SystemClock().now_ms() - 1_000)
        async with cdp_monitor(desk, chromium, tab) as monitor:
            await tab.js("__rerender()")
            marker = await tab.post("gm")
            await desk.row("cdp", marker)
    received = [row["message_id"] for row in await desk.ledger("cdp")]
    assert received == [marker], f"the backlog row {backlog} reached the intake"
    assert monitor.tracker is not None and monitor.tracker.dropped["backlog"] >= 1
    assert (await desk.book()).empty


# --- TradingView --------------------------------------------------------------------------------


def alert(alert_id: str, **overrides: Any) -> dict[str, Any]:
    """A JSON alert as a TradingView template renders it: a market LONG with a stop and a
    target, stamped now."""
    body: dict[str, Any] = {
        "secret": TV_SECRET, "alert_id": alert_id, "symbol": "BINANCE:BTCUSDT.P",
        "action": "buy", "sl": 58000, "tp": [63000], "leverage": 10,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    return {**body, **overrides}


@contextlib.asynccontextmanager
async def tradingview(desk: Desk) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the Stack's API without the operator token, as TradingView is."""
    async with httpx.AsyncClient(base_url=desk.ends.api_url, timeout=10,
                                 trust_env=False) as client:
        yield client


async def test_a_tradingview_alert_executes_within_a_second_and_its_repeats_change_nothing(
    desk: Desk,
) -> None:
    """A JSON alert is executed within 1 s; the same alert again, and a changed body under
    the same ``alert_id``, are answered 200 "duplicate" and place nothing more."""
    async with tradingview(desk) as webhook:
        sent = time.monotonic()
        first = await webhook.post(TV_URL, json=alert("tv-1"))
        executed, elapsed = await desk.executed(sent)
        again = await webhook.post(TV_URL, json=alert("tv-1"))
        after_again = await desk.book()
        changed = await webhook.post(TV_URL, json=alert("tv-1", sl=58500, tp=[64000]))
        after_changed = await desk.book()

    assert_executed_within_a_second(executed, elapsed)
    assert (first.status_code, first.json()["status"]) == (200, "executed"), first.text
    assert (again.status_code, again.json()["status"]) == (200, "duplicate"), again.text
    assert (changed.status_code, changed.json()["status"]) == (200, "duplicate"), changed.text
    assert after_again == executed and after_changed == executed
    [row] = await desk.ledger("tradingview")
    assert (row["message_id"], row["status"]) == ("tv-1", "EXECUTED")


async def test_a_tradingview_alert_older_than_its_max_lag_is_answered_200_as_stale(
    desk: Desk,
) -> None:
    """An alert whose timestamp is older than its ``max_lag`` is answered 200 with a stale
    reason (so TradingView does not retry) and places nothing."""
    sent_ms = SystemClock().now_ms() - 45_000
    async with tradingview(desk) as webhook:
        answer = await webhook.post(TV_URL, json=alert("tv-old", timestamp=sent_ms, max_lag=30))
    assert answer.status_code == 200, answer.text
    verdict = answer.json()
    assert verdict["status"] == "stale", verdict
    assert verdict["reason"].startswith("stale: sent "), verdict
    assert verdict["reason"].endswith("the limit is 30 s"), verdict  # the alert's, not 60
    assert (await desk.book()).empty
