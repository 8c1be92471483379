"""The signal parser: one message text in, one explained verdict (``ParsedSignal``) out.

Deterministic and explainable, no model behind it. A list of small pure steps:

1. ``text.normalise`` — strip Discord markdown, links and decoration; emoji labels to words;
   dashes, thousands separators, ``$`` and ``30K`` to plain numbers.
2. ``scanner.scan`` — IDP-style section scanner: entry / targets / stop / leverage / size.
3. ``symbols.find_symbols`` and ``classify.read_sides`` — what is traded, in which direction.
4. ``classify.classify`` — STATUS before anything else, then NEW / UPDATE / UNKNOWN.
5. ``decide.decide_new`` (NEW) or ``_decide_update`` (UPDATE) — checks and the decision.

Decisions: STATUS and UNKNOWN are always ``reject``. An UPDATE is ``confirm`` (the service
resolves which signal it is about), except that under trust AUTO an update that names its
symbol, holds one action with every number it needs, and states no other prices, leverage or
size, is ``execute``. A NEW signal is ``reject`` with a reason, ``confirm`` when readable but
ambiguous (or the channel trust is ``confirm_all``), and ``execute`` only when clean and the
channel trust is ``auto``.
"""

from __future__ import annotations

from tradewire.intake.classify import classify, read_sides, read_update, update_coin
from tradewire.intake.decide import decide_new
from tradewire.intake.model import ChannelProfile, Decision, Kind, ParsedSignal, Trust
from tradewire.intake.scanner import scan
from tradewire.intake.symbols import SymbolFinding, find_symbols
from tradewire.intake.text import normalise

DEFAULT_PROFILE = ChannelProfile()

STATUS_REASON = "status post: never opens a trade"
UNKNOWN_REASON = "not a signal"


def parse(text: str, profile: ChannelProfile = DEFAULT_PROFILE) -> ParsedSignal:
    """The verdict on one message, judged with the channel's profile."""
    lines = normalise(text)
    if not lines:
        return ParsedSignal(Decision.REJECT, Kind.UNKNOWN, "empty message")
    low = "\n".join(lines).lower()
    draft = scan(lines)
    symbols = find_symbols(lines, draft.coins)
    sides = read_sides(low)
    kind = classify(low, draft, bool(symbols.symbols), sides)
    if kind is Kind.STATUS:
        return ParsedSignal(Decision.REJECT, kind, STATUS_REASON, symbol=_first(symbols))
    if kind is Kind.UNKNOWN:
        return ParsedSignal(Decision.REJECT, kind, UNKNOWN_REASON)
    if kind is Kind.UPDATE:
        return _decide_update(lines, symbols, draft.has_details, profile)
    return decide_new(draft, symbols, sides, profile)


def _first(symbols: SymbolFinding) -> str | None:
    return symbols.symbols[0] if symbols.symbols else None


def _decide_update(
    lines: list[str], symbols: SymbolFinding, signal_like: bool, profile: ChannelProfile
) -> ParsedSignal:
    """An update needs a reference the service resolves: confirm unless AUTO and unambiguous
    (one action with its numbers, one symbol, no prices, leverage or size besides)."""
    low = "\n".join(lines).lower()
    reading = read_update(low)
    coin = update_coin(low, lines)
    symbol = _first(symbols) or (coin.upper() + "USDT" if coin else None)
    doubts = list(reading.doubts)
    if len(symbols.symbols) > 1:
        doubts.append(f"several symbols ({', '.join(symbols.symbols)})")
    if symbol is None:
        doubts.append("no symbol: the service must resolve which signal this is about")
    if signal_like:
        doubts.append("prices, leverage or size besides the update")
    if reading.problem:
        decision, reason = Decision.REJECT, reading.problem
    elif doubts:
        decision, reason = Decision.CONFIRM, "update needs confirmation: " + "; ".join(doubts)
    elif profile.trust is not Trust.AUTO:
        decision, reason = Decision.CONFIRM, "update; channel trust is confirm_all"
    else:
        decision, reason = Decision.EXECUTE, "clean update from a trusted channel"
    return ParsedSignal(decision, Kind.UPDATE, reason, symbol=symbol, update=reading.update,
                        warnings=tuple(doubts))
