"""Signal parser (bootstrap version; the full section scanner replaces it)."""

from __future__ import annotations

import re
from decimal import Decimal

from tradewire.intake.model import (
    ChannelProfile,
    Decision,
    EntryType,
    Kind,
    ParsedSignal,
    TakeProfit,
    Trust,
)

DEFAULT_PROFILE = ChannelProfile()
_NUM = r"(\d+(?:\.\d+)?)"


def _find(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text, re.IGNORECASE)
    return match.group(1) if match else None


def parse(text: str, profile: ChannelProfile = DEFAULT_PROFILE) -> ParsedSignal:
    """Parse one message into a verdict (minimal: symbol, side, entry, SL, TP, leverage)."""
    symbol = _find(r"\b([A-Z0-9]{2,15}USDT)\b", text.upper())
    side_word = _find(r"\b(LONG|SHORT)\b", text)
    entry = _find(r"entry\s*:?\s*" + _NUM, text)
    stop = _find(r"\bSL\s*:?\s*" + _NUM, text)
    tps = re.findall(r"\bTP\d*\s*:?\s*" + _NUM, text, re.IGNORECASE)
    lev = _find(r"leverage\s*:?\s*(\d+)\s*x?", text)
    if not symbol or not side_word or not stop:
        return ParsedSignal(Decision.REJECT, Kind.UNKNOWN, "not a signal")
    decision = Decision.EXECUTE if profile.trust is Trust.AUTO else Decision.CONFIRM
    return ParsedSignal(
        decision, Kind.NEW, "clean signal", symbol=symbol,
        side="LONG" if side_word.upper() == "LONG" else "SHORT",
        entries=(Decimal(entry),) if entry else (),
        entry_type=EntryType.LIMIT if entry else EntryType.MARKET,
        stop_loss=Decimal(stop), take_profits=tuple(TakeProfit(Decimal(t)) for t in tps),
        leverage=int(lev) if lev else None,
    )
