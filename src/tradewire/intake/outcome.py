"""What intake answers and records: the verdict on one message, the answer to its sender, and
the ledger row values. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tradewire.domain import Signal
from tradewire.intake.model import Decision, ParsedSignal, RawMessage
from tradewire.intake.safety import Plan, decode_json
from tradewire.store._sql import to_json
from tradewire.store.tables import IntakeMessage, IntakeStatus

EXECUTED_ALREADY = (IntakeStatus.EXECUTING, IntakeStatus.EXECUTED, IntakeStatus.FAILED)
IGNORED_EDIT = "IGNORED_EDIT"  # answer-only statuses: the row keeps its own
IGNORED_DELETE = "IGNORED_DELETE"
DUPLICATE = IntakeStatus.DUPLICATE.value
_DECISIONS = {IntakeStatus.EXECUTING: Decision.EXECUTE, IntakeStatus.EXECUTED: Decision.EXECUTE,
              IntakeStatus.FAILED: Decision.EXECUTE,
              IntakeStatus.PENDING_CONFIRMATION: Decision.CONFIRM}


def decision_of(status: IntakeStatus) -> Decision:
    """The decision a status stands for (everything not executed or pending is a reject)."""
    return _DECISIONS.get(status, Decision.REJECT)


@dataclass(frozen=True)
class IntakeResult:
    """What happened to one message (the JSON answer of the intake endpoints)."""

    intake_id: int | None
    status: str
    reason: str
    decision: Decision
    kind: str | None = None
    signal_id: str | None = None
    trades: tuple[dict[str, Any], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"intake_id": self.intake_id, "status": self.status.lower(), "reason": self.reason,
                "decision": self.decision.value, "kind": self.kind, "signal_id": self.signal_id,
                "trades": list(self.trades)}

    @classmethod
    def of_row(cls, row: IntakeMessage, status: str | None = None,
               reason: str | None = None) -> IntakeResult:
        """The row's outcome; ``status``/``reason`` describe this answer instead (a duplicate,
        an ignored edit) without changing the row."""
        execution = decode_json(row.execution) or {}
        return cls(row.id, status or row.status.value, reason or row.reason,
                   Decision.REJECT if status else decision_of(row.status), row.kind,
                   row.signal_id, tuple(execution.get("trades", ())))


@dataclass(frozen=True)
class Verdict:
    """The service's decision about one message, before it is written."""

    status: IntakeStatus
    reason: str
    plan: Plan | None = None
    signal: Signal | None = None  # only when the status is EXECUTING
    content_hash: str | None = None


def row_values(raw: RawMessage, parsed: ParsedSignal | None, verdict: Verdict) -> dict[str, Any]:
    """The ``intake_messages`` columns a message and its verdict set."""
    return {
        "edit": raw.edit, "reply_to": raw.reply_to, "author": raw.author,
        "sent_at_ms": raw.sent_at_ms, "text": raw.text, "content_hash": verdict.content_hash,
        "parsed": None if parsed is None else to_json(parsed.as_json()),
        "plan": None if verdict.plan is None else to_json(verdict.plan.as_json()),
        "decision": decision_of(verdict.status).value,
        "kind": None if parsed is None else parsed.kind.value,
        "status": verdict.status, "reason": verdict.reason,
        "signal_id": verdict.signal.signal_id if verdict.signal else None,
    }


def result_of(intake_id: int, verdict: Verdict, values: dict[str, Any]) -> IntakeResult:
    return IntakeResult(intake_id, verdict.status.value, verdict.reason,
                        decision_of(verdict.status), values["kind"], values["signal_id"])
