"""The section scanner: normalised lines in, a ``Draft`` of everything the message states out.

IDP-style: each label (``Entry``, ``Targets``, ``SL``, ``Leverage`` …, see
``grammar.LABELS``) opens a section that runs to the next label; a line starting with a number
(``2) 63000``) continues the open entry/target/stop section, and any other line ends it. Several
labels may share one line (``BTCUSDT LONG entry 60000 SL 58000 TP 62000``).

The scanner only records what is written; it decides nothing (that is ``decide``'s job).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from tradewire.intake import grammar
from tradewire.intake.text import to_decimal

_IGNORED = re.compile(
    r"(?:^|(?<=[\s,;:]))\d{1,2}(?:\)|\.(?=\s))"  # list markers: 1) 2. (a price is 2.5)
    r"|\b\d+(?:st|nd|rd|th)\b"  # ordinals: 2nd entry
    r"|\b\d+\s?(?:m|h|d|w|min|mins|hr|hrs|hours?|days?|weeks?)\b"  # timeframes: 4h, 15m
    r"|\b\d+\s*:\s*\d+\b"  # ratios: R:R 1:3
    r"|\(\s*\d{1,2}\s*\)"  # "(1)": a reference to target 1, not a price
)
_TOKEN = re.compile(r"(?<![\w.])(?P<sign>[+-])?(?P<num>\d+(?:\.\d+)?)(?P<unit>\s?%|x)?(?![\w])")
_MALFORMED = re.compile(
    r"(?<![\d.])\d+\.\d+\.\d|\d\.\.+\d|(?<![\d,])\d+,\d+,\d{1,2}\b"  # 60.000.5, 1..5, 1,23,4
    r"|\b(?=[a-z]*\d)(?=\d*[a-z])[a-z\d]*\d[a-z]+\d[a-z\d]*\b"  # 6o000: letters inside a number
)
_CONTINUATION = re.compile(r"[\s(]*(?:\d{1,2}[).]\s*)?[+-]?\d")
_MARGIN_LEVERAGE = re.compile(r"\b(?:cross(?:ed)?|isolated?)\s*\(?\s*(\d{1,4}(?:\.\d+)?)\s?x\b")

MarginMode = Literal["ISOLATED", "CROSSED"]


@dataclass(frozen=True)
class Token:
    """One number in a section: its value, unit (``""``, ``"%"``, ``"x"``), sign and span."""

    value: Decimal
    unit: str
    sign: str
    start: int
    end: int


@dataclass
class Draft:
    """Everything a message states, unjudged."""

    entries: list[Decimal] = field(default_factory=list)
    entry_range: bool = False  # two entry prices written as "a - b" / "a to b"
    zone_word: bool = False  # "Entry zone", "Buy zone", "between"
    market: bool = False
    breakout: bool = False
    stops: list[Decimal] = field(default_factory=list)
    stop_pcts: list[Decimal] = field(default_factory=list)
    targets: list[tuple[Decimal, Decimal | None]] = field(default_factory=list)
    leverages: list[Decimal] = field(default_factory=list)
    leverage_range: bool = False
    bare_leverage: list[Decimal] = field(default_factory=list)
    loose_prices: list[Decimal] = field(default_factory=list)  # numbers in unlabelled text
    margin_mode: MarginMode | None = None
    size_pcts: list[Decimal] = field(default_factory=list)
    coins: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: set[str] = field(default_factory=set)

    @property
    def has_prices(self) -> bool:
        """Whether any entry, stop or target was written (the message looks like a signal)."""
        return bool(self.entries or self.market or self.stops or self.stop_pcts or self.targets)

    @property
    def has_details(self) -> bool:
        """Whether any price, leverage or size was written, labelled or not."""
        return self.has_prices or bool(self.leverages or self.size_pcts or self.loose_prices)


def tokens(segment: str) -> list[Token]:
    """The numbers of one section, without list markers, ordinals, timeframes and ratios."""
    cleaned = _IGNORED.sub(lambda m: " " * len(m.group(0)), segment)
    out: list[Token] = []
    for match in _TOKEN.finditer(cleaned):
        value = to_decimal(match.group("num"))
        if value is not None:
            unit = (match.group("unit") or "").strip()
            out.append(Token(value, unit, match.group("sign") or "", *match.span("num")))
    return out


def scan(lines: list[str]) -> Draft:
    """Read every labelled section of the message into a ``Draft``."""
    draft = Draft()
    current: str | None = None
    for line in lines:
        low = _before_management(line.lower())
        matches = list(grammar.LABELS.finditer(low))
        head = low[: matches[0].start()] if matches else low
        current = _head(head, current, draft)
        for index, match in enumerate(matches):
            end = matches[index + 1].start() if index + 1 < len(matches) else len(low)
            kind = match.lastgroup or "other"
            _section(kind, match.group(0), low[match.end() : end], draft)
            current = kind
        _margin_line(low, draft)
    return draft


def _before_management(low: str) -> str:
    """The part of a line before trade-management words (trailing, move SL, after TP1)."""
    match = grammar.MANAGEMENT.search(low)
    return low[: match.start()] if match else low


def _head(head: str, current: str | None, draft: Draft) -> str | None:
    """Text before a line's first label: a list continuation, or free text ending the section."""
    if not head.strip():
        return current
    if current in grammar.LIST_KINDS and _is_continuation(head):
        _section(current or "", "", head, draft)
        return current
    found = tokens(head)
    bare = list(grammar.BARE_LEVERAGE.finditer(head))
    if len(bare) == 1 and len(found) <= 1:
        draft.bare_leverage.append(Decimal(bare[0].group(1) or bare[0].group(2)))
    draft.loose_prices.extend(t.value for t in found if not t.unit and not t.sign)
    return None


def _is_continuation(head: str) -> bool:
    """A line that starts with a number (``2) 63000 - 30%``, ``0.5 (40% of profit)``)
    continues the open list; a line that starts with words ends it."""
    return bool(_CONTINUATION.match(head))


def _section(kind: str, label: str, segment: str, draft: Draft) -> None:
    """Record one section's content."""
    draft.sections.add(kind)
    if kind in grammar.LIST_KINDS and _MALFORMED.search(segment):
        draft.unreadable.append(segment.strip())
    handler = _HANDLERS.get(kind)
    if handler is not None:
        handler(label, segment, draft)


def _entry(label: str, segment: str, draft: Draft) -> None:
    prices = [t for t in tokens(segment) if not t.unit]
    draft.entries.extend(t.value for t in prices)
    text = label + " " + segment
    draft.zone_word |= bool(grammar.ZONE_WORDS.search(text))
    draft.market |= bool(grammar.MARKET_WORDS.search(segment))
    draft.breakout |= bool(grammar.BREAKOUT_WORDS.search(text))
    if len(prices) == 2 and grammar.RANGE_SEPARATOR.match(segment[prices[0].end : prices[1].start]):
        draft.entry_range = True


def _target(label: str, segment: str, draft: Draft) -> None:
    """Prices become targets; an unsigned percent right after a price is that target's share."""
    waiting = False  # the last target may still take a share
    for token in tokens(segment):
        if not token.unit:
            draft.targets.append((token.value, None))
            waiting = True
        elif token.unit == "%" and token.sign != "+" and waiting:
            price, _ = draft.targets[-1]
            draft.targets[-1] = (price, token.value)
            waiting = False


def _stop(label: str, segment: str, draft: Draft) -> None:
    """A price, or a percent when the section holds no price (``SL 3%``)."""
    found = tokens(segment)
    prices = [t.value for t in found if not t.unit]
    if prices:
        draft.stops.extend(prices)
    else:
        draft.stop_pcts.extend(t.value for t in found if t.unit == "%")


def _leverage(label: str, segment: str, draft: Draft) -> None:
    """``10x``, ``x10``, ``20``, ``10x to 50x`` (both kept; the lower one is used)."""
    found = [t.value for t in tokens(segment) if t.unit != "%"]
    found += [Decimal(m.group(2)) for m in grammar.BARE_LEVERAGE.finditer(segment) if m.group(2)]
    draft.leverage_range |= len(found) > 1
    draft.leverages.extend(found)


def _margin(label: str, segment: str, draft: Draft) -> None:
    draft.leverages.extend(t.value for t in tokens(segment) if t.unit == "x")


def _size(label: str, segment: str, draft: Draft) -> None:
    """``5%``; ``1-4%`` → every number is a percent, the first one counts."""
    found = tokens(segment)
    if any(t.unit == "%" for t in found):
        draft.size_pcts.extend(t.value for t in found if t.unit in {"", "%"})
    elif found:
        draft.notes.append("size not given as a percent: ignored")


def _symbol(label: str, segment: str, draft: Draft) -> None:
    word = re.match(r"\s*[:=-]?\s*([#$]?[a-z0-9]{2,15}(?:\s*/\s*[a-z]{3,4})?)", segment)
    if word:
        draft.coins.append(word.group(1).replace(" ", ""))


def _margin_line(low: str, draft: Draft) -> None:
    """Margin mode: ``cross``/``isolated`` only on a line about leverage or margin."""
    if not grammar.LEVERAGE_HINT.search(low) and low.strip() not in {"cross", "isolated"}:
        return
    for match in _MARGIN_LEVERAGE.finditer(low):
        draft.leverages.append(Decimal(match.group(1)))
    if grammar.ISOLATED_WORDS.search(low):
        draft.margin_mode = "ISOLATED"
    elif grammar.CROSS_WORDS.search(low):
        draft.margin_mode = "CROSSED"


_HANDLERS = {
    "entry": _entry,
    "target": _target,
    "stop": _stop,
    "leverage": _leverage,
    "margin": _margin,
    "size": _size,
    "symbol": _symbol,
}
