"""One path for every source: a ``RawMessage`` in, a recorded verdict out, accepted signals
executed through the same ``Executor`` as ``POST /api/execute-trade``.

``handle`` records every message in ``intake_messages`` (one row per source, channel and
message id) *before* anything is executed, so nothing is lost and nothing runs twice:

* the same message again (same or lower ``edit``) → DUPLICATE, nothing else happens;
* an edit before execution re-parses and re-decides the row (it replaces the pending signal);
  an edit after execution is recorded in ``note`` only (IGNORED_EDIT) — the executor is
  idempotent by ``signal_id = source:channel:message_id``, which backs this up;
* a deletion before execution cancels; after execution it is noted for the operator;
* a new message goes through the pure steps of ``intake.safety`` (stale, kind, parser decision,
  plan, same content in the window, rate limit, prices against the mark, trust).

Messages of one channel are decided one at a time in this process (an ``asyncio.Lock`` per
channel), so two copies arriving together cannot both pass the content check.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tradewire.clock import Clock
from tradewire.config import Settings
from tradewire.domain import Signal
from tradewire.errors import Conflict, ExchangeError, InvalidInput, NotFound
from tradewire.intake import safety
from tradewire.intake.model import Decision, Kind, ParsedSignal, RawMessage
from tradewire.intake.outcome import (
    DUPLICATE,
    EXECUTED_ALREADY,
    IGNORED_DELETE,
    IGNORED_EDIT,
    IntakeResult,
    Verdict,
    decision_of,
    result_of,
    row_values,
)
from tradewire.intake.parser import parse
from tradewire.intake.profiles import ChannelConfig, IntakeConfig, ProfileBook
from tradewire.logging import bind, log
from tradewire.store import intake as ledger
from tradewire.store._sql import to_json
from tradewire.store.tables import IntakeMessage, IntakeStatus
from tradewire.trading.execute import Executor

logger = logging.getLogger("tradewire.intake")

MarkPrice = Callable[[str], Awaitable[Decimal]]
S = IntakeStatus


class IntakeService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        executor: Executor,
        mark_price: MarkPrice,
        profiles: ProfileBook,
        clock: Clock,
        config: IntakeConfig | None = None,
    ) -> None:
        self.sessions = sessions
        self.executor = executor
        self.mark_price = mark_price
        self.profiles = profiles
        self.clock = clock
        self.config = config or IntakeConfig()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[IntakeResult]] = set()

    # --- the front door ----------------------------------------------------------------------

    async def handle(self, raw: RawMessage, *, parsed: ParsedSignal | None = None,
                     max_lag_s: float | None = None) -> IntakeResult:
        """Record, check and (when accepted and trusted) execute one message. ``parsed`` skips
        the text parser (structured sources); ``max_lag_s`` can only tighten the channel's."""
        result, signal = await self._accept(raw, parsed, max_lag_s)
        return result if signal is None else await self._execute(result, signal)

    async def handle_within(self, raw: RawMessage, budget_s: float, *,
                            parsed: ParsedSignal | None = None,
                            max_lag_s: float | None = None) -> IntakeResult:
        """Like ``handle``, but answers within about ``budget_s`` (deciding is bounded by the
        mark price timeout): the row is written first, and an execution that does not finish
        in the time left goes on in the background (answered "executing")."""
        started = asyncio.get_running_loop().time()
        result, signal = await self._accept(raw, parsed, max_lag_s)
        if signal is None:
            return result
        task = asyncio.create_task(self._execute(result, signal))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        left = budget_s - (asyncio.get_running_loop().time() - started)
        done, _ = await asyncio.wait({task}, timeout=max(left, 0.001))
        return task.result() if done else result

    async def drain(self) -> None:
        """Wait for background executions (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def confirm(self, intake_id: int) -> IntakeResult:
        """Execute a pending message if it is still fresh and still passes the price checks."""
        row = await self._pending(intake_id)
        config = self.profiles.for_channel(row.source, row.channel)
        now = self.clock.now_ms()
        ttl = max(config.profile.max_lag_s, self.config.confirm_ttl_s)
        verdict = Verdict(S.EXECUTING, "confirmed by the operator")
        if stale := safety.stale_reason(row.sent_at_ms, now, ttl):
            verdict = Verdict(S.STALE, f"{stale} (at confirmation)")
        elif not row.plan:
            verdict = Verdict(S.REJECTED, "no order was planned for this message")
        else:
            plan = safety.Plan.from_json(json.loads(row.plan))
            verdict = await self._priced(plan, row.source, row.channel, row.message_id, verdict)
        return await self._move_pending(row, verdict, now)

    async def reject(self, intake_id: int) -> IntakeResult:
        """An operator refuses a pending message."""
        row = await self._pending(intake_id)
        verdict = Verdict(S.REJECTED, "rejected by the operator")
        return await self._move_pending(row, verdict, self.clock.now_ms())

    async def list_messages(self, status: IntakeStatus | None = None,
                            limit: int = 100) -> list[IntakeMessage]:
        async with self.sessions() as session:
            return await ledger.list_messages(session, status=status, limit=limit)

    # --- deciding ----------------------------------------------------------------------------

    async def _accept(self, raw: RawMessage, parsed: ParsedSignal | None,
                      max_lag_s: float | None) -> tuple[IntakeResult, Signal | None]:
        config = self.profiles.for_channel(raw.source.value, raw.channel)
        key = (raw.source.value, raw.channel)
        async with self._locks.setdefault(key, asyncio.Lock()):
            now = self.clock.now_ms()
            async with self.sessions() as session:
                row = await ledger.get_by_key(session, *key, raw.message_id)
            if row is not None:
                return await self._follow_up(row, raw, parsed, config, max_lag_s, now)
            if raw.deleted:
                verdict = Verdict(S.CANCELLED, "deleted before it was seen")
            else:
                parsed = parsed or _parse(raw.text, config)
                verdict = await self._evaluate(raw, parsed, config, max_lag_s, now, None)
            values = row_values(raw, parsed, verdict)
            async with self.sessions.begin() as session:
                intake_id = await ledger.insert_message(
                    session, now=now, source=raw.source.value, channel=raw.channel,
                    message_id=raw.message_id, received_at_ms=now, **values)
        if intake_id is None:  # another process stored it first
            return IntakeResult(None, DUPLICATE, "already received", Decision.REJECT), None
        return result_of(intake_id, verdict, values), verdict.signal

    async def _evaluate(self, raw: RawMessage, parsed: ParsedSignal, config: ChannelConfig,
                        max_lag_s: float | None, now: int, exclude_id: int | None) -> Verdict:
        lag = config.profile.max_lag_s if max_lag_s is None else min(
            max_lag_s, config.profile.max_lag_s)
        if stale := safety.stale_reason(raw.sent_at_ms, now, lag):
            return Verdict(S.STALE, stale)
        if parsed.kind is not Kind.NEW:
            return Verdict(S.IGNORED, f"{parsed.kind.value} message, never executed: "
                                       f"{parsed.reason}")
        if parsed.decision is Decision.REJECT:
            return Verdict(S.REJECTED, parsed.reason)
        try:
            plan = safety.make_plan(parsed, config)
        except InvalidInput as exc:
            return Verdict(S.REJECTED, str(exc))
        digest = safety.content_hash(parsed)
        status = safety.route(parsed.decision, config.profile.trust)
        why = "accepted" if status is S.EXECUTING else (
            "waiting for an operator: " + ("the channel is confirm_all" if
                                          parsed.decision is Decision.EXECUTE else parsed.reason))
        verdict = await self._channel_checks(raw, config, digest, now, exclude_id) or (
            await self._priced(plan, raw.source.value, raw.channel, raw.message_id,
                               Verdict(status, why)))
        signal = verdict.signal if verdict.status is S.EXECUTING else None
        return Verdict(verdict.status, verdict.reason, plan, signal, digest)

    async def _channel_checks(self, raw: RawMessage, config: ChannelConfig, digest: str,
                              now: int, exclude_id: int | None) -> Verdict | None:
        window_ms = int(self.config.dedupe_window_s * 1000)
        key = (raw.source.value, raw.channel)
        async with self.sessions() as session:
            twin = await ledger.find_same_content(session, *key, digest, now - window_ms,
                                                  exclude_id=exclude_id)
            recent = await ledger.count_accepted_since(session, *key, now - 60_000,
                                                       exclude_id=exclude_id)
        if twin is not None:
            return Verdict(S.DUPLICATE, f"duplicate: same signal as message {twin.message_id} "
                                         f"(#{twin.id}) within {self.config.dedupe_window_s:g} s")
        if limited := safety.rate_limit_reason(recent, config.profile.max_signals_per_minute):
            return Verdict(S.REJECTED, limited)
        return None

    async def _priced(self, plan: safety.Plan, source: str, channel: str, message_id: str,
                      accepted: Verdict) -> Verdict:
        """``accepted`` with the executable signal, or REJECTED when the mark says no."""
        signal_id = safety.signal_id_for(source, channel, message_id)
        try:
            mark = await asyncio.wait_for(self.mark_price(plan.symbol), self.config.mark_timeout_s)
            signal = safety.build_signal(plan, mark, signal_id, self.config.max_entry_distance_pct)
        except (InvalidInput, ExchangeError) as exc:
            return Verdict(S.REJECTED, f"{plan.symbol}: {exc}")
        except TimeoutError:
            return Verdict(S.REJECTED, f"{plan.symbol}: no mark price within "
                                        f"{self.config.mark_timeout_s:g} s")
        return Verdict(accepted.status, accepted.reason, plan, signal)

    # --- a message seen before ---------------------------------------------------------------

    async def _follow_up(self, row: IntakeMessage, raw: RawMessage, parsed: ParsedSignal | None,
                         config: ChannelConfig, max_lag_s: float | None,
                         now: int) -> tuple[IntakeResult, Signal | None]:
        if raw.deleted:
            return await self._deleted(row, now), None
        if raw.edit <= row.edit:
            answer = IntakeResult.of_row(row, DUPLICATE, f"already received ({row.status.value})")
            return answer, None
        parsed = parsed or _parse(raw.text, config)
        if row.status in EXECUTED_ALREADY or row.status is S.CANCELLED:
            return await self._late_edit(row, raw, parsed, now), None
        verdict = await self._evaluate(raw, parsed, config, max_lag_s, now, row.id)
        values = row_values(raw, parsed, verdict)
        async with self.sessions.begin() as session:
            moved = await ledger.update_message(session, row.id, only_from=[row.status], now=now,
                                                **values)
        if not moved:
            return IntakeResult.of_row(row, IGNORED_EDIT, "changed state meanwhile; retry"), None
        return result_of(row.id, verdict, values), verdict.signal

    async def _late_edit(self, row: IntakeMessage, raw: RawMessage, parsed: ParsedSignal,
                         now: int) -> IntakeResult:
        after = "execution" if row.status in EXECUTED_ALREADY else "deletion"
        note = f"edit {raw.edit} after {after} ignored: no second position is opened"
        changes = safety.level_changes(safety.decode_json(row.parsed), parsed)
        if changes and after == "execution":
            note += f"; stop/targets changed ({changes}): an operator must update the trade"
            log(logger, logging.WARNING, "signal edited after execution", intakeId=row.id,
                changes=changes)
        async with self.sessions.begin() as session:
            await ledger.update_message(session, row.id, now=now, edit=raw.edit, note=note)
        return IntakeResult.of_row(row, IGNORED_EDIT, note)

    async def _deleted(self, row: IntakeMessage, now: int) -> IntakeResult:
        if row.status is S.CANCELLED:
            return IntakeResult.of_row(row, DUPLICATE, "already cancelled")
        if row.status in EXECUTED_ALREADY:
            note = "deleted by its author after execution: the position stays; check it"
            log(logger, logging.WARNING, "signal deleted after execution", intakeId=row.id)
            async with self.sessions.begin() as session:
                await ledger.update_message(session, row.id, now=now, note=note)
            return IntakeResult.of_row(row, IGNORED_DELETE, note)
        reason = "deleted by its author before execution"
        async with self.sessions.begin() as session:
            moved = await ledger.update_message(session, row.id, only_from=[row.status],
                                                now=now, status=S.CANCELLED, reason=reason,
                                                decision=Decision.REJECT.value)
        if not moved:
            return IntakeResult.of_row(row, IGNORED_DELETE, "changed state meanwhile; retry")
        return IntakeResult(row.id, S.CANCELLED.value, reason, Decision.REJECT, row.kind)

    # --- executing ---------------------------------------------------------------------------

    async def _pending(self, intake_id: int) -> IntakeMessage:
        async with self.sessions() as session:
            row = await ledger.get_message(session, intake_id)
        if row is None:
            raise NotFound(f"intake message {intake_id} not found")
        if row.status is not S.PENDING_CONFIRMATION:
            raise Conflict(f"intake message {intake_id} is {row.status.value}, not pending")
        return row

    async def _move_pending(self, row: IntakeMessage, verdict: Verdict,
                            now: int) -> IntakeResult:
        signal_id = verdict.signal.signal_id if verdict.signal else None
        decision = decision_of(verdict.status)
        async with self.sessions.begin() as session:
            moved = await ledger.update_message(
                session, row.id, only_from=[S.PENDING_CONFIRMATION], now=now,
                status=verdict.status, reason=verdict.reason, decision=decision.value,
                signal_id=signal_id)
        if not moved:
            raise Conflict(f"intake message {row.id} is no longer pending")
        result = IntakeResult(row.id, verdict.status.value, verdict.reason, decision, row.kind,
                              signal_id)
        return result if verdict.signal is None else await self._execute(result, verdict.signal)

    async def _execute(self, accepted: IntakeResult, signal: Signal) -> IntakeResult:
        assert accepted.intake_id is not None
        payload = {"intake_id": accepted.intake_id, **asdict(signal)}
        execution: dict[str, Any] | None = None
        with bind(intakeId=accepted.intake_id, symbol=signal.symbol):
            try:
                report = await self.executor.execute(signal, payload)
            except InvalidInput as exc:
                status, reason = S.REJECTED, f"refused at execution: {exc}"
            except Exception as exc:  # the row must say what happened, whatever it was
                log(logger, logging.ERROR, "intake execution failed", error=repr(exc))
                status, reason = S.FAILED, f"execution failed: {type(exc).__name__}: {exc}"
            else:
                execution = report.as_json()
                status = S.EXECUTED
                reason = "already executed" if report.duplicate else "executed"
        async with self.sessions.begin() as session:
            await ledger.update_message(
                session, accepted.intake_id, only_from=[S.EXECUTING], now=self.clock.now_ms(),
                status=status, reason=reason, decision=decision_of(status).value,
                execution=None if execution is None else to_json(execution))
        trades = tuple(execution["trades"]) if execution else ()
        return IntakeResult(accepted.intake_id, status.value, reason, decision_of(status),
                            accepted.kind, signal.signal_id, trades)


def _parse(text: str, config: ChannelConfig) -> ParsedSignal:
    """The parser's verdict; a parser failure is a recorded rejection, never a lost message."""
    try:
        return parse(text, config.profile)
    except Exception as exc:
        log(logger, logging.ERROR, "the signal parser failed", error=repr(exc))
        return ParsedSignal(Decision.REJECT, Kind.UNKNOWN, f"parser error: {exc!r}")


def create_intake_service(settings: Settings, sessions: async_sessionmaker[AsyncSession],
                          executor: Executor, clock: Clock) -> IntakeService:
    """The composition root's one call: profiles and knobs from the settings, mark prices from
    the executor's public exchange client."""

    async def mark_price(symbol: str) -> Decimal:
        return await executor.pool.public().mark_price(symbol)

    return IntakeService(sessions, executor, mark_price, ProfileBook.from_settings(settings),
                         clock, IntakeConfig.from_settings(settings))
