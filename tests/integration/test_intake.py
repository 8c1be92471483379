"""The intake service end to end: ``POST /api/intake/messages`` through the parser and the safety
checks to the executor and the in-process exchange simulator (the ``world`` fixture), with a
manual clock for time."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.integration.conftest import World

from tradewire.clock import ManualClock, SystemClock
from tradewire.intake.model import Source
from tradewire.intake.profiles import IntakeConfig, ProfileBook
from tradewire.intake.service import IntakeService

pytestmark = pytest.mark.timeout(30)

AUTO = "auto-channel"
CONFIRM = "confirm-channel"
TV_SECRET = "tv-shared-secret"
PROFILES = {
    "default": {"size_usdt": "200", "max_lag_s": 60},
    "channels": {
        f"discord_bot:{AUTO}": {"trust": "auto"},
        f"discord_bot:{CONFIRM}": {"trust": "confirm_all"},
        "tradingview": {"trust": "auto"},
    },
}


def signal_text(sl: str = "58000", tps: tuple[str, ...] = ("61000", "63000"),
                entry: str = "market", symbol: str = "BTCUSDT") -> str:
    """A clean signal as a channel would post it."""
    targets = "\n".join(f"TP{i}: {tp}" for i, tp in enumerate(tps, 1))
    return f"{symbol} LONG\nEntry: {entry}\nSL: {sl}\n{targets}\nLeverage: 10x"


@dataclass
class Intake:
    """The ``world`` with an intake service wired into its API, and the intake's clock."""

    world: World
    service: IntakeService
    clock: ManualClock
    _ids: int = field(default=0)

    async def post(self, text: str, *, channel: str = AUTO, message_id: str | None = None,
                   edit: int = 0, age_s: float = 0, deleted: bool = False) -> dict[str, Any]:
        """Send one Discord-bot message (fresh unless ``age_s``) and return the verdict JSON."""
        if message_id is None:
            self._ids += 1
            message_id = f"m{self._ids}"
        body = {"source": Source.DISCORD_BOT.value, "channel": channel, "message_id": message_id,
                "sent_at_ms": self.clock.now_ms() - int(age_s * 1000), "text": text,
                "edit": edit, "deleted": deleted, "author": "provider"}
        answer = await self.world.api.post("/api/intake/messages", json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def confirm(self, intake_id: int) -> httpx.Response:
        return await self.world.api.post(f"/api/intake/messages/{intake_id}/confirm")

    async def messages(self, **params: Any) -> list[dict[str, Any]]:
        answer = await self.world.api.get("/api/intake/messages", params=params)
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()
        return rows


@pytest.fixture(name="intake")
async def intake_fixture(world: World) -> Intake:
    """The world's API with an ``IntakeService`` on its deps (profiles from a JSON document)."""
    app: Any = world.api_transport.app
    deps = app.state.deps
    clock = ManualClock(SystemClock().now_ms())

    async def mark_price(symbol: str) -> Decimal:
        return await deps.executor.pool.public().mark_price(symbol)

    deps.intake = IntakeService(
        deps.sessions, deps.executor, mark_price, ProfileBook.from_data(PROFILES), clock,
        IntakeConfig(tradingview_secret=TV_SECRET),
    )
    return Intake(world, deps.intake, clock)


def snapshot(account: dict[str, Any]) -> tuple[Any, ...]:
    """What the exchange holds for an account: positions, open orders, open algo orders."""
    return account["positions"], account["open_orders"], account["open_algo_orders"]


def algo_triggers(account: dict[str, Any]) -> dict[str, list[Decimal]]:
    found: dict[str, list[Decimal]] = {}
    for algo in account["open_algo_orders"]:
        found.setdefault(algo["orderType"], []).append(Decimal(algo["triggerPrice"]))
    return {kind: sorted(prices) for kind, prices in found.items()}


# --- execution and duplicates --------------------------------------------------------------------


async def test_a_clean_message_from_an_auto_channel_executes(intake: Intake) -> None:
    """A clean signal from a trusted channel opens a protected position with one take-profit per
    target, and the row names the signal id ``source:channel:message_id``."""
    _, keys = await intake.world.add_user("alice")
    result = await intake.post(signal_text(), message_id="111")
    assert result["status"] == "executed", result
    assert result["decision"] == "execute"
    assert result["signal_id"] == f"discord_bot:{AUTO}:111"
    assert [t["status"] for t in result["trades"]] == ["OPEN"]
    account = await intake.world.exchange_account(keys)
    assert [Decimal(p["positionAmt"]) for p in account["positions"]] == [Decimal("0.003")]
    assert algo_triggers(account) == {"STOP_MARKET": [Decimal(58000)],
                                      "TAKE_PROFIT_MARKET": [Decimal(61000), Decimal(63000)]}


async def test_the_same_message_again_is_a_duplicate_and_places_nothing(intake: Intake) -> None:
    """Re-sending a message already executed answers duplicate and the exchange sees nothing new."""
    _, keys = await intake.world.add_user("alice")
    first = await intake.post(signal_text(), message_id="222")
    before = snapshot(await intake.world.exchange_account(keys))

    again = await intake.post(signal_text(), message_id="222")
    assert again["status"] == "duplicate"
    assert again["intake_id"] == first["intake_id"]
    assert snapshot(await intake.world.exchange_account(keys)) == before
    assert len(await intake.world.trades()) == 1


async def test_the_same_content_under_another_message_id_is_a_duplicate(intake: Intake) -> None:
    """The same signal posted again as a new message within the window is a duplicate of the
    first and opens nothing."""
    _, keys = await intake.world.add_user("alice")
    first = await intake.post(signal_text(tps=("61000", "63000")))
    before = snapshot(await intake.world.exchange_account(keys))
    intake.clock.advance(5 * 60_000)

    copy = await intake.post(signal_text(tps=("63000", "61000")))  # targets in another order
    assert copy["status"] == "duplicate"
    assert f"#{first['intake_id']}" in copy["reason"]
    assert snapshot(await intake.world.exchange_account(keys)) == before


# --- edits and deletions -------------------------------------------------------------------------


async def test_an_edit_before_execution_replaces_the_pending_signal(intake: Intake) -> None:
    """On a confirm-all channel an edit re-decides the pending message, and confirming then
    executes the edited prices."""
    _, keys = await intake.world.add_user("alice")
    pending = await intake.post(signal_text(sl="58000"), channel=CONFIRM, message_id="333")
    assert pending["status"] == "pending_confirmation"
    assert pending["decision"] == "confirm"

    edited = await intake.post(signal_text(sl="57000", tps=("64000",)), channel=CONFIRM,
                               message_id="333", edit=1)
    assert edited["status"] == "pending_confirmation"
    assert edited["intake_id"] == pending["intake_id"]
    assert (await intake.world.exchange_account(keys))["positions"] == []

    confirmed = await intake.confirm(pending["intake_id"])
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "executed"
    account = await intake.world.exchange_account(keys)
    assert algo_triggers(account) == {"STOP_MARKET": [Decimal(57000)],
                                      "TAKE_PROFIT_MARKET": [Decimal(64000)]}


async def test_an_edit_after_execution_changes_nothing_at_the_exchange(intake: Intake) -> None:
    """An edit of an executed message is recorded (ignored_edit, noted with the changed stop) and
    never opens or changes a position."""
    _, keys = await intake.world.add_user("alice")
    first = await intake.post(signal_text(), message_id="444")
    assert first["status"] == "executed"
    before = snapshot(await intake.world.exchange_account(keys))

    edit = await intake.post(signal_text(sl="57000"), message_id="444", edit=1)
    assert edit["status"] == "ignored_edit"
    assert "no second position" in edit["reason"]
    assert snapshot(await intake.world.exchange_account(keys)) == before
    [row] = await intake.messages()
    assert row["status"] == "EXECUTED" and row["edit"] == 1
    assert "stop_loss 58000 → 57000" in row["note"]


async def test_a_deletion_before_execution_cancels_the_pending_signal(intake: Intake) -> None:
    """Deleting a pending message cancels it; it can no longer be confirmed."""
    pending = await intake.post(signal_text(), channel=CONFIRM, message_id="555")
    deleted = await intake.post("", channel=CONFIRM, message_id="555", deleted=True)
    assert deleted["status"] == "cancelled"
    answer = await intake.confirm(pending["intake_id"])
    assert answer.status_code == 409


# --- safety --------------------------------------------------------------------------------------


async def test_a_stale_message_is_rejected_as_stale(intake: Intake) -> None:
    """A message older than the channel's max lag (a replayed backlog) executes nothing."""
    _, keys = await intake.world.add_user("alice")
    result = await intake.post(signal_text(), age_s=120)
    assert result["status"] == "stale"
    assert result["reason"].startswith("stale")
    assert (await intake.world.exchange_account(keys))["positions"] == []


async def test_a_status_post_never_executes(intake: Intake) -> None:
    """A "target hit" post from a trusted channel is recorded and never reaches the exchange."""
    _, keys = await intake.world.add_user("alice")
    result = await intake.post("BTCUSDT LONG: Target 2 hit ✅ closed in profit")
    assert result["decision"] == "reject"
    assert result["status"] in {"ignored", "rejected"}
    assert (await intake.world.exchange_account(keys))["positions"] == []
    assert await intake.world.trades() == []


async def test_a_stop_on_the_wrong_side_of_the_mark_is_rejected(intake: Intake) -> None:
    """A market LONG whose stop is above the current mark is rejected, naming the stop."""
    _, keys = await intake.world.add_user("alice")
    await intake.world.set_mark("BTCUSDT", "57500")
    result = await intake.post(signal_text(sl="58000"))
    assert result["status"] == "rejected"
    assert "stop_loss" in result["reason"] and "mark" in result["reason"]
    assert (await intake.world.exchange_account(keys))["positions"] == []


async def test_the_eighth_signal_in_a_minute_is_rate_limited(intake: Intake) -> None:
    """A channel may pass seven signals a minute; the eighth is rejected, and a minute later the
    channel may post again."""
    for i in range(7):
        ok = await intake.post(signal_text(sl=str(57000 + i)), channel=CONFIRM)
        assert ok["status"] == "pending_confirmation", ok
    eighth = await intake.post(signal_text(sl="57900"), channel=CONFIRM)
    assert eighth["status"] == "rejected"
    assert eighth["reason"].startswith("rate limit")
    intake.clock.advance(61_000)
    later = await intake.post(signal_text(sl="57950"), channel=CONFIRM)
    assert later["status"] == "pending_confirmation"


async def test_a_pending_signal_past_its_confirmation_time_is_not_executed(
    intake: Intake,
) -> None:
    """Confirming a pending message after the confirmation window answers stale, places nothing,
    and a second confirmation is a conflict."""
    _, keys = await intake.world.add_user("alice")
    pending = await intake.post(signal_text(), channel=CONFIRM)
    intake.clock.advance(10 * 60_000)
    late = await intake.confirm(pending["intake_id"])
    assert late.status_code == 200
    assert late.json()["status"] == "stale"
    assert (await intake.world.exchange_account(keys))["positions"] == []
    assert (await intake.confirm(pending["intake_id"])).status_code == 409


async def test_an_operator_can_reject_a_pending_signal_and_list_by_status(intake: Intake) -> None:
    """``/reject`` refuses a pending message; the list filters by status."""
    pending = await intake.post(signal_text(), channel=CONFIRM)
    await intake.post(signal_text(sl="57000"), channel=CONFIRM)
    answer = await intake.world.api.post(f"/api/intake/messages/{pending['intake_id']}/reject")
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    assert [r["id"] for r in await intake.messages(status="REJECTED")] == [pending["intake_id"]]
    assert len(await intake.messages(status="PENDING_CONFIRMATION")) == 1
    missing = await intake.world.api.post("/api/intake/messages/999/confirm")
    assert missing.status_code == 404


async def test_intake_endpoints_need_the_operator_token(intake: Intake) -> None:
    """Without the bearer token the operator intake endpoints answer 401."""
    async with intake.world.caller() as stranger:
        assert (await stranger.get("/api/intake/messages")).status_code == 401
        body = {"source": "api", "channel": "x", "message_id": "1", "sent_at_ms": 1, "text": "x"}
        assert (await stranger.post("/api/intake/messages", json=body)).status_code == 401
