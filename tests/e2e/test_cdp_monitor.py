"""The Discord CDP monitor against headless Chromium showing a Discord-shaped local page.

The page (tests/fixtures/discord_page/index.html) is served on 127.0.0.1 at
``/channels/<guild>/<channel>``; each test opens its own tab on its own channel and drives it
through its own DevTools session (``__post``, ``__edit``, reload). The monitor posts into a
recorder. Chromium is required in CI (``CI=true``) and skipped locally when it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.e2e.intake_support import (  # noqa: F401 (chromium_fixture, page_server_fixture)
    GUILD,
    Chromium,
    PageServer,
    Tab,
    _channels,
    _sequence,
    channel_tab,
    chromium_fixture,
    close_tab,
    create_user,
    open_tab,
    page_server_fixture,
    running_chromium,
    until,
)

from tradewire.clock import SystemClock
from tradewire.errors import ConfigError
from tradewire.intake.cdp import (
    CdpMonitor,
    ChannelMatch,
    MessageTracker,
    add_arguments,
    intake_post,
    run_from_args,
    snowflake_ms,
)
from tradewire.intake.cdp.protocol import require_loopback
from tradewire.intake.cdp.tracker import make_snowflake
from tradewire.intake.model import RawMessage, Source

if TYPE_CHECKING:
    from tests.e2e.conftest import Harness

pytestmark = pytest.mark.timeout(60)


# --- the monitor and what it posted ----------------------------------------------------------


class Recorder:
    """The monitor's ``post``: remembers every message, lets the test wait for one."""

    def __init__(self) -> None:
        self.messages: list[RawMessage] = []
        self._changed = asyncio.Condition()

    async def __call__(self, message: RawMessage) -> None:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    async def wait_for(self, message_id: str, edit: int = 0, timeout: float = 5.0) -> RawMessage:
        def found() -> RawMessage | None:
            return next((m for m in self.messages
                         if m.message_id == message_id and m.edit == edit), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
        message = found()
        assert message is not None
        return message

    def ids(self) -> list[tuple[str, int]]:
        return [(m.message_id, m.edit) for m in self.messages]


@contextlib.asynccontextmanager
async def watching(
    debug_url: str, tab: Tab, recorder: Callable[[RawMessage], Awaitable[None]], **options: Any
) -> AsyncIterator[CdpMonitor]:
    monitor = CdpMonitor(debug_url, f"/channels/{GUILD}/{tab.channel}", recorder,
                         SystemClock(), min_backoff_s=0.05, max_backoff_s=0.3, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        await asyncio.wait_for(monitor.attached.wait(), 10)
        yield monitor
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# --- tests ------------------------------------------------------------------------------------


async def test_a_message_appended_after_start_is_posted_once_with_its_ids_text_and_time(
    chromium: Chromium, page_server: PageServer,
) -> None:
    """A new row becomes one RawMessage: cdp source, the row's channel and message ids, the
    text, the author and the snowflake's send time."""
    recorder = Recorder()
    async with channel_tab(chromium, page_server) as tab, \
            watching(chromium.debug_url, tab, recorder):
        message_id = await tab.post("BTCUSDT LONG entry 60000 SL 58000 TP 63000")
        marker = await tab.post("marker")
        got = await recorder.wait_for(message_id)
        await recorder.wait_for(marker)
    assert got.source is Source.CDP
    assert got.channel == tab.channel and got.message_id == message_id
    assert got.text == "BTCUSDT LONG entry 60000 SL 58000 TP 63000"
    assert got.author == "signals-bot" and got.edit == 0
    assert got.sent_at_ms == snowflake_ms(message_id)
    assert abs(got.sent_at_ms - SystemClock().now_ms()) < 5_000
    assert recorder.ids() == [(message_id, 0), (marker, 0)]


async def test_rows_present_before_start_are_never_posted_even_when_re_rendered(
    chromium: Chromium, page_server: PageServer,
) -> None:
    """Backlog is not replayed: rows already in the channel when the monitor starts are
    dropped, also when the virtualised list renders them again later."""
    recorder = Recorder()
    async with channel_tab(chromium, page_server) as tab:
        old = await tab.post("ETHUSDT SHORT SL 3100", sent_ms=SystemClock().now_ms() - 2_000)
        async with watching(chromium.debug_url, tab, recorder) as monitor:
            await tab.js("__rerender()")
            marker = await tab.post("marker")
            await recorder.wait_for(marker)
    assert recorder.ids() == [(marker, 0)]
    assert monitor.tracker is not None and monitor.tracker.dropped["backlog"] >= 1
    assert old not in {m.message_id for m in recorder.messages}


async def test_an_edit_is_posted_again_with_edit_one(
    chromium: Chromium, page_server: PageServer,
) -> None:
    """Changing a row's text in place re-emits the message with the new text and edit=1;
    the "(edited)" marker is not part of the text."""
    recorder = Recorder()
    async with channel_tab(chromium, page_server) as tab, \
            watching(chromium.debug_url, tab, recorder):
        message_id = await tab.post("BTCUSDT LONG SL 58000")
        await recorder.wait_for(message_id)
        await tab.edit(message_id, "BTCUSDT LONG SL 58500")
        edited = await recorder.wait_for(message_id, edit=1)
        await tab.js("__rerender()")
        marker = await tab.post("marker")
        await recorder.wait_for(marker)
    assert edited.text == "BTCUSDT LONG SL 58500"
    assert recorder.ids() == [(message_id, 0), (message_id, 1), (marker, 0)]


async def test_a_page_reload_keeps_working_without_re_posting(
    chromium: Chromium, page_server: PageServer,
) -> None:
    """After a reload the observer is back (new rows are posted) and the rows the reload
    renders again are not posted twice."""
    recorder = Recorder()
    async with channel_tab(chromium, page_server) as tab, \
            watching(chromium.debug_url, tab, recorder) as monitor:
        before = await tab.post("before reload")
        await recorder.wait_for(before)
        await tab.reload()
        after = await tab.post("after reload")
        await recorder.wait_for(after)
        assert monitor.attachments == 1, "a reload needs no new session"
    assert recorder.ids() == [(before, 0), (after, 0)]


async def test_a_closed_tab_is_found_again_when_the_channel_is_reopened(
    chromium: Chromium, page_server: PageServer,
) -> None:
    """Closing the channel's tab ends the session; a new tab on the same channel URL is
    picked up, its re-rendered history is not re-posted and new messages are."""
    recorder = Recorder()
    async with channel_tab(chromium, page_server) as tab, \
            watching(chromium.debug_url, tab, recorder) as monitor:
        first = await tab.post("in the first tab")
        await recorder.wait_for(first)
        await close_tab(chromium.debug_url, tab)
        await until(lambda: not monitor.attached.is_set())
        url = page_server.channel_url(tab.channel)
        async with open_tab(chromium.debug_url, url, tab.channel) as again:
            await until(lambda: monitor.attachments == 2 and monitor.attached.is_set())
            second = await again.post("in the second tab")
            await recorder.wait_for(second)
    assert recorder.ids() == [(first, 0), (second, 0)]


async def test_the_monitor_reconnects_when_the_browser_is_killed_and_restarted(
    page_server: PageServer,
) -> None:
    """Chromium dies (SIGKILL) and a new one starts on the same port with the same profile:
    the monitor reconnects by itself and goes on posting, without re-posting history."""
    recorder = Recorder()
    with running_chromium(page_server) as browser:
        channel = str(next(_channels))
        url = page_server.channel_url(channel)
        async with open_tab(browser.debug_url, url, channel) as tab, \
                watching(browser.debug_url, tab, recorder) as monitor:
            first = await tab.post("before the crash")
            await recorder.wait_for(first)
            browser.kill()
            await until(lambda: not monitor.attached.is_set())
            browser.start()
            async with open_tab(browser.debug_url, url, channel) as again:
                await until(lambda: monitor.attachments >= 2 and monitor.attached.is_set())
                second = await again.post("after the restart")
                await recorder.wait_for(second)
    assert recorder.ids() == [(first, 0), (second, 0)]


async def test_rows_inside_an_iframe_are_not_posted(
    chromium: Chromium, page_server: PageServer,
) -> None:
    """Only the tab's own document is read: a framed page (an embed) that renders rows shaped
    like Discord's, even at the channel's URL, cannot pass them off as messages."""
    recorder = Recorder()
    async with channel_tab(chromium, page_server) as tab, \
            watching(chromium.debug_url, tab, recorder):
        await tab.js("__frame()")
        framed = make_snowflake(SystemClock().now_ms(), next(_sequence))
        await tab.js(f"frames[0].__post({framed!r}, 'BTCUSDT LONG SL 1')")
        marker = await tab.post("marker")
        await recorder.wait_for(marker)
    assert recorder.ids() == [(marker, 0)]


async def test_a_message_whose_post_fails_is_retried_in_order(
    chromium: Chromium, page_server: PageServer,
) -> None:
    """When ``post`` raises (API down), the monitor tries the same message again and keeps
    the order: nothing is lost, nothing overtakes."""
    recorder = Recorder()
    failures = [RuntimeError("API down"), RuntimeError("still down")]

    async def flaky(message: RawMessage) -> None:
        if failures:
            raise failures.pop(0)
        await recorder(message)

    async with channel_tab(chromium, page_server) as tab, \
            watching(chromium.debug_url, tab, flaky):
        first = await tab.post("first")
        second = await tab.post("second")
        await recorder.wait_for(second)
    assert recorder.ids() == [(first, 0), (second, 0)]


# --- the pure parts ---------------------------------------------------------------------------


def test_only_loopback_debug_endpoints_are_accepted_unless_remote_is_allowed() -> None:
    """The DevTools port controls the whole browser profile: 127.0.0.1/::1/localhost only,
    unless --allow-remote is given."""
    for url in ("http://127.0.0.1:9222", "http://localhost:9222", "http://[::1]:9222"):
        require_loopback(url)
    for url in ("http://10.0.0.5:9222", "http://example.com:9222", "http://0.0.0.0:9222"):
        with pytest.raises(ConfigError):
            require_loopback(url)
    require_loopback("http://10.0.0.5:9222", allow_remote=True)
    with pytest.raises(ConfigError):
        CdpMonitor("http://192.168.1.2:9222", "x", Recorder(), SystemClock())


def test_channel_patterns_match_whole_path_segments() -> None:
    """A plain pattern ends at a path boundary; ``re:`` takes a regular expression."""
    match = ChannelMatch("discord.com/channels/1/2")
    assert match("https://discord.com/channels/1/2")
    assert match("https://discord.com/channels/1/2?x=1")
    assert not match("https://discord.com/channels/1/23")
    assert ChannelMatch(r"re:/channels/1/(2|3)$")("https://discord.com/channels/1/3")


def test_the_tracker_drops_stale_foreign_and_malformed_reports() -> None:
    """First sightings long after the send time, rows of another channel than the tab's URL,
    pages that are not the channel and malformed payloads are not posted."""
    clock = SystemClock()
    now = clock.now_ms()
    tracker = MessageTracker(now - 600_000, ChannelMatch("/channels/1/2"), clock)

    def report(message_ms: int, channel: str = "2", url: str = "https://d/channels/1/2") -> str:
        return (f'{{"channelId": "{channel}", "messageId": "{make_snowflake(message_ms)}", '
                f'"text": "t", "author": null, "url": "{url}"}}')

    assert tracker.feed(report(now - 120_000)) is None
    assert tracker.feed(report(now, channel="3")) is None
    assert tracker.feed(report(now, url="https://d/channels/1/5")) is None
    assert tracker.feed("not json") is None
    assert tracker.feed(report(now)) is not None
    assert dict(tracker.dropped) == {
        "stale": 1, "other_channel": 1, "other_page": 1, "malformed": 1}


# --- through the real API to the exchange simulator ----------------------------------------


async def intake_endpoint_missing(api: httpx.AsyncClient) -> str | None:
    """Why ``POST /api/intake/messages`` cannot take messages on this stack (None: it can)."""
    probe = RawMessage(source=Source.API, channel="probe", message_id="1", sent_at_ms=1,
                       text="probe")
    response = await api.post("/api/intake/messages", json=probe.model_dump(mode="json"))
    if response.status_code in (404, 405, 501, 503):
        return f"POST /api/intake/messages answered {response.status_code}: {response.text}"
    return None


@pytest.fixture
async def auto_channel_stack(tmp_path: Path) -> AsyncIterator[tuple[Harness, str]]:
    """A whole tradewire stack (real API on a free port, simulator) whose intake trusts one
    CDP channel to trade without confirmation."""
    from tests.e2e.conftest import stack_settings, start_harness  # the whole service

    channel = str(next(_channels))
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps({"channels": {
        f"cdp:{channel}": {"trust": "auto", "size_usdt": "200", "max_lag_s": 60}}}))
    async for harness in start_harness(stack_settings(tmp_path, intake_profiles_file=profiles)):
        yield harness, channel


async def test_a_clean_signal_posted_in_the_page_is_executed_within_a_second(
    chromium: Chromium, page_server: PageServer, auto_channel_stack: tuple[Harness, str],
) -> None:
    """Browser tab → monitor → POST /api/intake/messages → parser → executor → simulator: a
    clean signal in an AUTO-trusted channel has its orders at the exchange within 1 s."""
    harness, channel = auto_channel_stack
    ends = harness.ends
    auth = {"Authorization": f"Bearer {ends.token}"}
    async with httpx.AsyncClient(base_url=ends.api_url, headers=auth, timeout=10,
                                 trust_env=False) as api, \
            httpx.AsyncClient(base_url=ends.sim_url, timeout=10, trust_env=False) as sim:
        missing = await intake_endpoint_missing(api)
        if missing:
            pytest.skip(f"the intake endpoint is not ready in the stack yet ({missing})")
        api_key = await create_user(api, sim)
        url = page_server.channel_url(channel)
        async with open_tab(chromium.debug_url, url, channel) as tab:
            monitor = CdpMonitor(chromium.debug_url, f"/channels/{GUILD}/{channel}",
                                 intake_post(api), SystemClock())
            stop = asyncio.Event()
            task = asyncio.create_task(monitor.run(stop))
            try:
                await asyncio.wait_for(monitor.attached.wait(), 10)
                appended = time.monotonic()
                message_id = await tab.post("BTCUSDT LONG\nEntry: 60000\nLeverage: 10x\n"
                                            "SL: 58000\nTP1: 63000")
                legs = await orders_at_exchange(sim, api_key, timeout=5.0)
                elapsed = time.monotonic() - appended
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
        ledger = (await api.get("/api/intake/messages")).json()
    assert legs == {"entry", "stop_loss", "take_profit"}, f"placed so far: {legs}"
    assert elapsed < 1.0, f"executed after {elapsed:.2f} s"
    [row] = [r for r in ledger if r["message_id"] == message_id]
    assert (row["source"], row["channel"], row["status"]) == ("cdp", channel, "EXECUTED")


async def orders_at_exchange(sim: httpx.AsyncClient, api_key: str, timeout: float) -> set[str]:
    """Which legs of a LONG the account has at the exchange (the entry as an open order or a
    position, the stop-loss and take-profit as algo orders), once all three are there."""
    deadline = time.monotonic() + timeout
    while True:
        account = (await sim.get(f"/sim/accounts/{api_key}")).json()
        legs = {"entry"} if account["open_orders"] or account["positions"] else set()
        for algo in account["open_algo_orders"]:
            legs.add({"STOP_MARKET": "stop_loss", "TAKE_PROFIT_MARKET": "take_profit"}.get(
                algo.get("orderType") or algo.get("type"), "other"))
        if len(legs) >= 3 or time.monotonic() > deadline:
            return legs
        await asyncio.sleep(0.02)


async def test_the_command_refuses_to_start_without_accepting_the_risk() -> None:
    """``tradewire monitor cdp`` is opt-in: without --accept-risk it explains the account
    risk and does not start."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--channel", "discord.com/channels/1/2"])
    with pytest.raises(ConfigError, match="banned"):
        await run_from_args(args, "http://127.0.0.1:8080", "token", asyncio.Event())
    assert parser.parse_args(["--channel", "x", "--accept-risk"]).accept_risk
