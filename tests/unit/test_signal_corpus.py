"""The signal corpus: realistic messages with the verdict each must get.

Each file in ``tests/fixtures/signals/`` holds a list of entries: ``id``, ``text``, ``profile``
(overrides of ``ChannelProfile`` fields), the expected ``decision`` and ``kind``, and any of the
fields of ``ParsedSignal.as_json`` that matter for that message. ``take_profits`` may list bare
prices or ``[price, share]`` pairs; ``reason_contains`` / ``warnings_contain`` match substrings.
Entries marked ``bad`` must never be executed, whatever the channel profile.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from tradewire.intake.parse_cli import profile_from
from tradewire.intake.parser import parse

CORPUS_DIR = Path(__file__).parents[1] / "fixtures" / "signals"
FIELDS = (
    "decision", "kind", "reason", "symbol", "side", "entries", "entry_type", "stop_loss",
    "stop_loss_pct", "leverage", "margin_mode", "size_pct", "update",
)
LENIENT_PROFILES = [
    {"trust": "auto", "two_prices_mean": mean, "zone_price": price, "require_stop_loss": stop,
     "max_leverage": lever}
    for mean, price, stop, lever in itertools.product(
        ("entries", "zone"), ("worst", "middle", "best"), (True, False), (20, 125)
    )
]


def load_corpus() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for path in sorted(CORPUS_DIR.glob("*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8")):
            entries.append({**entry, "file": path.name})
    return entries


CORPUS = load_corpus()
BAD = [entry for entry in CORPUS if entry.get("bad")]


def verdict(entry: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    profile = profile_from({**entry["profile"], **(overrides or {})})
    return parse(entry["text"], profile).as_json()


def assert_take_profits(expected: list[Any], got: list[dict[str, Any]]) -> None:
    """Bare prices compare prices only; ``[price, share]`` pairs compare both."""
    assert len(got) == len(expected), got
    for want, tp in zip(expected, got, strict=True):
        if isinstance(want, list):
            assert [tp["price"], tp["share"]] == want
        else:
            assert tp["price"] == want


@pytest.mark.parametrize("entry", CORPUS, ids=[entry["id"] for entry in CORPUS])
def test_corpus_entry(entry: dict[str, Any]) -> None:
    """Every corpus message gets its expected decision, kind and fields."""
    got = verdict(entry)
    for field in FIELDS:
        if field in entry:
            assert got[field] == entry[field], f"{field}: {got}"
    if "take_profits" in entry:
        assert_take_profits(entry["take_profits"], got["take_profits"])
    if "reason_contains" in entry:
        assert entry["reason_contains"] in got["reason"], got
    if "warnings_contain" in entry:
        assert any(entry["warnings_contain"] in w for w in got["warnings"]), got


@pytest.mark.parametrize("entry", BAD, ids=[entry["id"] for entry in BAD])
def test_bad_message_is_never_executed(entry: dict[str, Any]) -> None:
    """A bad message is not executed under its profile nor under any trusting profile."""
    assert verdict(entry)["decision"] != "execute"
    for overrides in LENIENT_PROFILES:
        got = verdict(entry, overrides)
        assert got["decision"] != "execute", (overrides, got)


def test_corpus_covers_the_grammar() -> None:
    """At least 50 messages, with clean, ambiguous, status, update, noise and bad ones."""
    assert len(CORPUS) >= 50
    assert len({entry["id"] for entry in CORPUS}) == len(CORPUS), "ids are unique"
    kinds = {entry["kind"] for entry in CORPUS}
    decisions = {entry["decision"] for entry in CORPUS}
    assert kinds == {"new", "update", "status", "unknown"}
    assert decisions == {"execute", "confirm", "reject"}
    assert len(BAD) >= 15


def test_status_and_noise_are_rejected_under_every_profile() -> None:
    """Status posts and chatter never lead to an order, whatever the profile."""
    for entry in CORPUS:
        if entry["kind"] in {"status", "unknown"}:
            for overrides in LENIENT_PROFILES[:4]:
                assert verdict(entry, overrides)["decision"] == "reject", entry["id"]
