"""Finding the traded symbol: full pairs, hashtags and (carefully) lone coin names.

Spellings read as ``BTCUSDT``: ``BTCUSDT``, ``BTC/USDT``, ``#BTC/USDT``, ``$BTC``, ``#BTC``,
``BTC-USDT``, ``BTC.USDT``, ``FHE/ USDT``, ``BTCUSDT.P``, ``BTCUSDTPERP``. A coin written alone
(``XRP``) gets the USDT quote only where the line clearly names a coin: after a ``Coin:`` /
``Pair:`` label, or in capitals right next to a side word (``XRP LONG``, ``SHORT SOL``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tradewire.intake import grammar

_SIDE_WORD = r"(?:long|short|buy|sell|лонг|шорт)"
_GAP = r"(?:[\s:|/-]|<longmark>|<shortmark>)*"
_SIDE_NEAR = re.compile(r"^" + _GAP + _SIDE_WORD + r"\b", re.IGNORECASE)
_SIDE_BEFORE = re.compile(r"\b" + _SIDE_WORD + _GAP + r"$", re.IGNORECASE)


@dataclass
class SymbolFinding:
    """Every symbol the message names, in order of appearance, plus notes on implied quotes."""

    symbols: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, base: str, quote: str, note: str | None = None) -> None:
        symbol = (base + quote).upper()
        if any(ch.isalpha() for ch in base) and symbol not in self.symbols:
            self.symbols.append(symbol)
            if note:
                self.notes.append(note)


def find_symbols(lines: list[str], labelled_coins: list[str]) -> SymbolFinding:
    """All symbols in ``lines`` (normalised, case kept); ``labelled_coins`` come from
    ``Coin:``/``Pair:`` sections."""
    found = SymbolFinding()
    for line in lines:
        _pairs_and_hashtags(line, found)
    for coin in labelled_coins:
        _coin(coin, found, f"quote USDT implied for {coin.upper()}")
    if not found.symbols:
        for line in lines:
            _lone_coins(line, found)
    return found


def _pairs_and_hashtags(line: str, found: SymbolFinding) -> None:
    """``BTC/USDT``-like pairs first; then hashtags that are not pairs (``#BTC``)."""
    low = line.lower()
    spans: list[tuple[int, int]] = []
    for match in grammar.PAIR.finditer(low):
        base, quote = match.group(1), match.group(2)
        if base in grammar.NOT_COINS:
            continue
        spans.append(match.span())
        alias = grammar.QUOTE_ALIASES.get(quote)
        note = f"quote {quote.upper()} read as USDT" if alias else None
        found.add(base, alias or quote, note)
    for match in grammar.HASHTAG.finditer(low):
        if not any(start <= match.start() < end for start, end in spans):
            _coin(match.group(1), found, f"quote USDT implied for #{match.group(1).upper()}")


def _coin(word: str, found: SymbolFinding, note: str) -> None:
    """A coin name without a quote becomes ``<COIN>USDT`` unless it is a grammar word."""
    word = word.lower().lstrip("#$")
    if not grammar.is_coin_word(word) or not 2 <= len(word) <= 15:
        return
    pair = grammar.PAIR.fullmatch(word)
    if pair:
        found.add(pair.group(1), grammar.QUOTE_ALIASES.get(pair.group(2), pair.group(2)))
    else:
        found.add(word, "usdt", note)


def _lone_coins(line: str, found: SymbolFinding) -> None:
    """Capitalised words right before or after a side word: ``XRP LONG``, ``SHORT SOL``."""
    for match in grammar.CAPS_WORD.finditer(line):
        word = match.group(1)
        if not grammar.is_coin_word(word.lower()):
            continue
        after = line[match.end() : match.end() + 30]
        before = line[max(0, match.start() - 30) : match.start()]
        if _SIDE_NEAR.match(after) or _SIDE_BEFORE.search(before):
            _coin(word, found, f"quote USDT implied for {word}")
