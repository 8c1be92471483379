"""Operators' tools for the dead-letter queue ``ws-events.dlq``: select, replay, purge.

Shared by the CLI (``tradewire dlq ...``) and the operator API (``/api/dlq...``); both work on
any ``Bus``. Nothing here runs automatically: an engineer decides (system brief §5).

* **Selecting**: by ids, or by filters (user id, symbol, error text, age). User and symbol come
  from the entry's ``extra`` (written by the consumer) or else from the decoded body.
* **Replay**: the body is decoded as an ``Envelope`` and published again, with
  ``replay_of=<dlq id>``, to its partition (the partition of its key); then the DLQ entry is
  deleted. A crash in between replays the entry twice, which idempotent processing absorbs. A
  body that is not a valid envelope is only republished (raw, to its recorded partition) with
  ``force=True``; otherwise it is skipped and stays in the DLQ.
* **Dry run** reports what would happen and changes nothing.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from tradewire.bus.base import Bus, DeadLetter, Envelope
from tradewire.errors import InvalidInput, PermanentError

SCAN_LIMIT = 100_000
"""Entries looked at when filtering (the DLQ is meant to stay small)."""

_NOT_AN_ENVELOPE = "body is not a valid envelope (use force to replay it raw)"
_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_age(text: str) -> int:
    """``"90"`` (seconds), ``"30s"``, ``"15m"``, ``"1h"``, ``"2d"``, ``"500ms"`` -> milliseconds."""
    match = _AGE.match(text)
    if not match:
        raise InvalidInput(f"bad age {text!r}: use e.g. 30s, 15m, 1h, 2d", field="older_than")
    return int(float(match.group(1)) * _UNITS_MS[match.group(2) or "s"])


@dataclass(frozen=True)
class DlqFilter:
    """Which entries: all given conditions must hold (none given: every entry)."""

    user_id: int | None = None
    symbol: str | None = None  # case-insensitive exact match
    error: str | None = None  # case-insensitive substring of the error text or its type
    older_than_ms: int | None = None  # last failure at least this long ago

    @property
    def empty(self) -> bool:
        return all(v is None for v in dataclasses.astuple(self))

    def matches(self, letter: DeadLetter, now_ms: int) -> bool:
        if self.user_id is not None and user_of(letter) != self.user_id:
            return False
        if self.symbol is not None and symbol_of(letter).upper() != self.symbol.upper():
            return False
        if self.error is not None:
            needle = self.error.lower()
            if needle not in letter.error.lower() and needle not in letter.error_type.lower():
                return False
        return not (
            self.older_than_ms is not None and now_ms - letter.last_failed_ms < self.older_than_ms
        )


def _envelope(letter: DeadLetter) -> Envelope | None:
    try:
        return Envelope.decode(letter.body)
    except PermanentError:
        return None


def user_of(letter: DeadLetter) -> int | None:
    raw = letter.extra.get("user_id")
    if raw is not None and raw.lstrip("-").isdigit():
        return int(raw)
    env = _envelope(letter)
    return env.user_id if env else None


def symbol_of(letter: DeadLetter) -> str:
    if "symbol" in letter.extra:
        return letter.extra["symbol"]
    env = _envelope(letter)
    return env.symbol if env else ""


def describe(letter: DeadLetter, now_ms: int) -> dict[str, Any]:
    """The entry as JSON for operators: every stored field plus user, symbol and age."""
    return {
        **letter.summary(), "user_id": user_of(letter), "symbol": symbol_of(letter),
        "age_ms": max(0, now_ms - letter.last_failed_ms), "valid_envelope": bool(_envelope(letter)),
    }


async def select(
    bus: Bus, flt: DlqFilter, now_ms: int, *, ids: list[str] | None = None,
    limit: int = SCAN_LIMIT,
) -> list[DeadLetter]:
    """Entries by id (unknown ids are left out) when ``ids`` is given, else by ``flt``;
    oldest first, at most ``limit``."""
    if ids:
        found = [await bus.dlq_get(i) for i in dict.fromkeys(ids)]
        return [letter for letter in found if letter is not None][:limit]
    letters = await bus.dlq_list(SCAN_LIMIT)
    return [letter for letter in letters if flt.matches(letter, now_ms)][:limit]


@dataclass
class Outcome:
    """What replay/purge did (or, in a dry run, would do) with one entry."""

    id: str
    action: str  # replayed | purged | skipped (dry runs: would-replay | would-purge)
    partition: int
    new_id: str | None = None  # id of the republished message
    reason: str | None = None  # why it was skipped / replayed raw

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def replay(
    bus: Bus, letters: list[DeadLetter], *, dry_run: bool = False, force: bool = False
) -> list[Outcome]:
    """Republish each entry (marked ``replay_of``) and delete it from the DLQ."""
    outcomes: list[Outcome] = []
    for letter in letters:
        env = _envelope(letter)
        if env is None and not force:
            skipped = Outcome(letter.id, "skipped", letter.partition, reason=_NOT_AN_ENVELOPE)
            outcomes.append(skipped)
            continue
        reason = None if env is not None else "raw body republished (force)"
        if dry_run:
            outcomes.append(Outcome(letter.id, "would-replay", letter.partition, reason=reason))
            continue
        if env is not None:
            new_id = await bus.publish(dataclasses.replace(env, replay_of=letter.id))
        else:
            new_id = await bus.publish_raw(letter.partition % bus.partitions, letter.body)
        await bus.dlq_delete([letter.id])
        outcomes.append(Outcome(letter.id, "replayed", letter.partition, new_id, reason))
    return outcomes


async def purge(bus: Bus, letters: list[DeadLetter], *, dry_run: bool = False) -> list[Outcome]:
    """Delete the entries for good."""
    if not dry_run:
        await bus.dlq_delete([letter.id for letter in letters])
    action = "would-purge" if dry_run else "purged"
    return [Outcome(letter.id, action, letter.partition) for letter in letters]


def require_target(ids: list[str] | None, flt: DlqFilter, everything: bool) -> None:
    """Replay/purge act on ids or filters; acting on the whole DLQ must be asked for."""
    if not ids and flt.empty and not everything:
        raise InvalidInput("give DLQ ids, a filter, or 'all' to act on every entry", field="ids")
