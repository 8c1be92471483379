"""What kind of message this is, which side it names, and what a follow-up asks for.

Order (safety first): a status post ("target 2 hit", "TP1 ✅", "stopped out", "+120%
profit") is STATUS even when it repeats the signal, so a status post can never open a trade.
A message that states targets plus an entry or a stop is a NEW signal, even with embedded
management ("move SL to entry after TP1"). Otherwise a follow-up verb (move stop, breakeven,
close, cancel) makes it an UPDATE. A message with no prices, no side or no symbol is UNKNOWN.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from tradewire.intake import grammar
from tradewire.intake.checks import SideName
from tradewire.intake.model import Kind, Update
from tradewire.intake.scanner import Draft
from tradewire.intake.text import LONG_MARK, SHORT_MARK


@dataclass(frozen=True)
class Sides:
    """Side words found: ``strong`` ones are written words, ``weak`` ones are emojis."""

    strong: frozenset[SideName]
    weak: frozenset[SideName]


@dataclass(frozen=True)
class UpdateReading:
    """A follow-up: the first action, plus doubts (confirm) or a problem (reject)."""

    update: Update
    doubts: tuple[str, ...] = ()
    problem: str | None = None


def read_sides(low: str) -> Sides:
    """Side words (LONG/SHORT/ЛОНГ/ШОРТ, BUY/SELL outside entry or target context) and marks."""
    strong: set[SideName] = set()
    if grammar.LONG_WORDS.search(low) or grammar.BUY_SIDE.search(low):
        strong.add("LONG")
    if grammar.SHORT_WORDS.search(low) or grammar.SELL_SIDE.search(low):
        strong.add("SHORT")
    weak: set[SideName] = set()
    if LONG_MARK in low:
        weak.add("LONG")
    if SHORT_MARK in low:
        weak.add("SHORT")
    return Sides(frozenset(strong), frozenset(weak))


def classify(low: str, draft: Draft, has_symbol: bool, sides: Sides) -> Kind:
    """STATUS, then NEW (signal-shaped), then UPDATE (follow-up verb), then a profit brag
    (STATUS), then NEW (some prices, or a symbol and a side) or UNKNOWN."""
    if grammar.STATUS_STRONG.search(low):
        return Kind.STATUS
    if draft.targets and (draft.entries or draft.market or draft.stops or draft.stop_pcts):
        return Kind.NEW
    if _actions(low):
        return Kind.UPDATE
    if "stop" not in draft.sections and grammar.STATUS_PROFIT.search(low):
        return Kind.STATUS
    if draft.has_prices or (has_symbol and (sides.strong or sides.weak)):
        return Kind.NEW
    return Kind.UNKNOWN


def update_coin(low: str, lines: list[str]) -> str | None:
    """The coin an update names: right after the verb (``close BTC``, ``cancel eth signal``),
    else the one capitalised coin-like word of the message (``SL to breakeven on ETH``)."""
    match = grammar.UPDATE_COIN.search(low)
    if match and grammar.is_coin_word(match.group(1)):
        return match.group(1)
    words = {
        m.group(1).lower()
        for line in lines
        for m in grammar.CAPS_WORD.finditer(line)
        if grammar.is_coin_word(m.group(1).lower())
    }
    return words.pop() if len(words) == 1 else None


def read_update(low: str) -> UpdateReading:
    """The first action in the text; more than one action is a doubt (T2M: first one wins)."""
    actions = _actions(low)
    (_, update), *others = actions
    doubts: list[str] = []
    if others:
        ignored = ", ".join(other.action for _, other in others)
        doubts.append(f"several actions; only '{update.action}' read (not {ignored})")
    if update.action == "move_stop" and update.price is None:
        doubts.append("new stop level not given as a price")
    if update.action == "move_stop" and update.price is not None and update.price <= 0:
        return UpdateReading(update, tuple(doubts), f"stop price {update.price} is not a price")
    if update.action == "close":
        return _with_fraction(low, update, doubts)
    return UpdateReading(update, tuple(doubts))


def _actions(low: str) -> list[tuple[int, Update]]:
    """Every follow-up action with its position, first first (one per action kind)."""
    found: list[tuple[int, Update]] = []
    move = grammar.MOVE_STOP.search(low)
    breakeven = grammar.BREAKEVEN.search(low)
    price = _group_price(move) if move else None
    if move and price is not None:
        found.append((move.start(), Update("move_stop", price=price)))
    elif breakeven:
        found.append((breakeven.start(), Update("breakeven")))
    elif move:
        found.append((move.start(), Update("move_stop")))
    close = grammar.CLOSE.search(low)
    if close:
        found.append((close.start(), Update("close")))
    cancel = grammar.CANCEL.search(low)
    if cancel:
        found.append((cancel.start(), Update("cancel")))
    return sorted(found, key=lambda item: item[0])


def _group_price(match: re.Match[str]) -> Decimal | None:
    number = match.group(1) or match.group(2)
    return Decimal(number) if number else None


def _with_fraction(low: str, update: Update, doubts: list[str]) -> UpdateReading:
    """``close 50%`` → 0.5, ``close half`` → 0.5, ``close`` → all; ``partial`` alone is a doubt."""
    percent = grammar.PERCENT.search(low)
    if percent:
        value = Decimal(percent.group(1))
        if not 0 < value <= 100:
            problem = f"cannot close {percent.group(1)}% of a position"
            return UpdateReading(update, tuple(doubts), problem)
        fraction = None if value == 100 else value / 100
        return UpdateReading(Update("close", fraction=fraction), tuple(doubts))
    if grammar.HALF.search(low):
        return UpdateReading(Update("close", fraction=Decimal("0.5")), tuple(doubts))
    if grammar.PARTIAL.search(low):
        doubts.append("partial close without a size")
    return UpdateReading(update, tuple(doubts))
