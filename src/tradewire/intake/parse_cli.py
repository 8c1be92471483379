"""``tradewire signals parse``: a message on stdin, one JSON line with the verdict on stdout.

The lead wires the subcommand; this module only turns text (and optional profile overrides,
e.g. ``{"trust": "auto", "max_leverage": 50}``) into the JSON line.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

from tradewire.intake.model import ChannelProfile, Trust
from tradewire.intake.parser import parse

_FIRST_KEYS = (
    "decision", "kind", "symbol", "side", "entries", "entry_type", "stop_loss",
    "take_profits", "leverage", "margin_mode", "reason",
)
_CHOICES = {"two_prices_mean": ("entries", "zone"), "zone_price": ("worst", "middle", "best")}


def profile_from(overrides: dict[str, Any] | None) -> ChannelProfile:
    """A ``ChannelProfile`` with the given fields replaced; unknown fields or values raise
    ``ValueError``."""
    if not overrides:
        return ChannelProfile()
    known = {f.name for f in dataclasses.fields(ChannelProfile)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown profile fields: {', '.join(unknown)}")
    values = dict(overrides)
    if "trust" in values:
        values["trust"] = Trust(values["trust"])
    if "max_size_pct" in values:
        values["max_size_pct"] = Decimal(str(values["max_size_pct"]))
    for name, allowed in _CHOICES.items():
        if name in values and values[name] not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}")
    return dataclasses.replace(ChannelProfile(), **values)


def main_parse(stdin_text: str, profile_overrides: dict[str, Any] | None = None) -> str:
    """The one JSON line of ``tradewire signals parse`` (key order: the verdict first)."""
    data = parse(stdin_text, profile_from(profile_overrides)).as_json()
    ordered = {key: data[key] for key in _FIRST_KEYS}
    ordered.update((key, value) for key, value in data.items() if key not in ordered)
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))
