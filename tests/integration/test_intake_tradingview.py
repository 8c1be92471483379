"""``POST /api/intake/tradingview``: JSON and text alerts through the same intake path, the shared
secret, idempotency on ``alert_id``, staleness and the 3-second answer budget."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.integration.test_intake import (  # noqa: F401 (the fixture)
    TV_SECRET,
    Intake,
    intake_fixture,
    signal_text,
)

from tradewire.domain import Signal
from tradewire.intake.profiles import IntakeConfig
from tradewire.intake.service import IntakeService
from tradewire.trading.execute import ExecutionReport

pytestmark = pytest.mark.timeout(30)

URL = "/api/intake/tradingview"


def alert(alert_id: str, **overrides: Any) -> dict[str, Any]:
    """A JSON alert as a TradingView template would render it (market LONG on the .P ticker)."""
    body: dict[str, Any] = {
        "secret": TV_SECRET, "alert_id": alert_id, "symbol": "BINANCE:BTCUSDT.P",
        "action": "buy", "sl": 58000, "tp": [61000, 63000], "leverage": 10,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    return {**body, **overrides}


async def send(intake: Intake, content: str | dict[str, Any],
               params: dict[str, str] | None = None) -> tuple[httpx.Response, float]:
    """POST an alert with no operator token, as TradingView does; the answer and its duration."""
    async with intake.world.caller() as tradingview:
        started = time.perf_counter()
        if isinstance(content, dict):
            answer = await tradingview.post(URL, json=content, params=params)
        else:
            answer = await tradingview.post(URL, content=content, params=params,
                                            headers={"content-type": "text/plain"})
        return answer, time.perf_counter() - started


async def test_a_json_alert_executes_quickly(intake: Intake) -> None:
    """A JSON alert on a trusted TradingView channel opens the position (symbol ``.P`` stripped)
    and is answered 200 well inside TradingView's 3 s."""
    _, keys = await intake.world.add_user("alice")
    answer, seconds = await send(intake, alert("tv-1"))
    assert answer.status_code == 200, answer.text
    assert seconds < 2.0
    body = answer.json()
    assert body["status"] == "executed", body
    assert body["signal_id"] == "tradingview:tradingview:tv-1"
    account = await intake.world.exchange_account(keys)
    assert [p["symbol"] for p in account["positions"]] == ["BTCUSDT"]
    [row] = await intake.messages()
    assert TV_SECRET not in row["text"]


async def test_a_plain_text_alert_with_the_secret_in_the_query_is_parsed(intake: Intake) -> None:
    """A text/plain alert carrying a signal is read by the parser, authenticated by ``?secret=``."""
    _, keys = await intake.world.add_user("alice")
    answer, seconds = await send(intake, signal_text(), {"secret": TV_SECRET})
    assert answer.status_code == 200, answer.text
    assert seconds < 2.0
    assert answer.json()["status"] == "executed"
    assert (await intake.world.exchange_account(keys))["positions"] != []

    retry, _ = await send(intake, signal_text(), {"secret": TV_SECRET})
    assert retry.json()["status"] == "duplicate"


async def test_a_json_first_line_can_carry_the_metadata_of_a_text_alert(intake: Intake) -> None:
    """A text alert whose first line is JSON takes its secret and alert id from that line."""
    await intake.world.add_user("alice")
    header = json.dumps({"secret": TV_SECRET, "alert_id": "tv-header"})
    answer, _ = await send(intake, f"{header}\n{signal_text()}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "executed"
    assert answer.json()["signal_id"] == "tradingview:tradingview:tv-header"


@pytest.mark.parametrize("secret", ["wrong", "", None])
async def test_a_wrong_or_missing_secret_is_refused(intake: Intake, secret: str | None) -> None:
    """Without the right shared secret the webhook answers 401 and records nothing."""
    body = alert("tv-bad")
    if secret is None:
        del body["secret"]
    else:
        body["secret"] = secret
    answer, _ = await send(intake, body)
    assert answer.status_code == 401
    text_answer, _ = await send(intake, signal_text(), {"secret": "wrong"})
    assert text_answer.status_code == 401
    assert await intake.messages() == []


async def test_a_repeated_alert_id_is_harmless(intake: Intake) -> None:
    """TradingView retrying an alert gets 200 "duplicate" and the exchange sees nothing new."""
    _, keys = await intake.world.add_user("alice")
    await send(intake, alert("tv-dup"))
    before = await intake.world.exchange_account(keys)
    again, _ = await send(intake, alert("tv-dup"))
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    after = await intake.world.exchange_account(keys)
    assert after["positions"] == before["positions"]
    assert after["open_algo_orders"] == before["open_algo_orders"]


async def test_a_stale_alert_is_answered_200_with_the_reason(intake: Intake) -> None:
    """An alert older than its ``max_lag`` is recorded as stale and answered 200 (no retries)."""
    _, keys = await intake.world.add_user("alice")
    old = intake.clock.now_ms() - 600_000
    answer, _ = await send(intake, alert("tv-old", timestamp=old, max_lag=30))
    assert answer.status_code == 200
    assert answer.json()["status"] == "stale"
    assert answer.json()["reason"].startswith("stale")
    assert (await intake.world.exchange_account(keys))["positions"] == []


async def test_an_alert_with_unusable_fields_is_recorded_as_rejected(intake: Intake) -> None:
    """An authenticated alert with an exit action is answered 200 "rejected" with the reason;
    one without an ``alert_id`` cannot be keyed and answers 422."""
    answer, _ = await send(intake, alert("tv-exit", action="exit"))
    assert answer.status_code == 200
    assert answer.json()["status"] == "rejected"
    assert "exit" in answer.json()["reason"]
    keyless = alert("x")
    del keyless["alert_id"]
    assert (await send(intake, keyless))[0].status_code == 422


class SlowExecutor:
    """An executor that takes ``delay`` seconds before doing the real work."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    async def execute(self, signal: Signal, payload: dict[str, Any]) -> ExecutionReport:
        await asyncio.sleep(self.delay)
        report: ExecutionReport = await self.inner.execute(signal, payload)
        return report


async def test_a_slow_execution_is_answered_in_budget_and_finishes_later(intake: Intake) -> None:
    """When execution outlasts the budget the alert is answered at once with the row already
    written (status executing), and the execution completes in the background."""
    _, keys = await intake.world.add_user("alice")
    service = intake.service
    config = IntakeConfig(tradingview_secret=TV_SECRET, tradingview_budget_s=0.05)
    slow = IntakeService(service.sessions, SlowExecutor(service.executor, 0.5),
                         service.mark_price, service.profiles, service.clock, config)
    app: Any = intake.world.api_transport.app
    app.state.deps.intake = slow

    answer, seconds = await send(intake, alert("tv-slow"))
    assert answer.status_code == 200
    assert seconds < 0.4
    assert answer.json()["status"] == "executing"
    [row] = await intake.messages()
    assert row["status"] == "EXECUTING"

    await slow.drain()
    [row] = await intake.messages()
    assert row["status"] == "EXECUTED"
    assert Decimal((await intake.world.exchange_account(keys))["positions"][0]["positionAmt"]) > 0


async def test_a_body_nested_too_deeply_is_recorded_as_not_a_signal(intake: Intake) -> None:
    """10 kB of nested arrays (deeper than json's recursion limit) cannot be read as a JSON
    alert: it is read as text like any other body, recorded and answered 200 "ignored" with the
    reason (never a server error), and nothing is placed."""
    _, keys = await intake.world.add_user("alice")
    deep = "[" * 5_000 + "]" * 5_000
    body = '{"alert_id":"tv-deep","x":' + deep + "}"
    answer, _ = await send(intake, body, params={"secret": TV_SECRET})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ignored" and answer.json()["intake_id"] is not None
    assert "not a signal" in answer.json()["reason"]
    assert (await intake.world.exchange_account(keys))["positions"] == []
