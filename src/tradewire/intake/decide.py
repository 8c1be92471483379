"""Judging a NEW signal: resolve each field, run the safety checks, pick the decision.

Three lists build the verdict: *problems* reject the signal (the first few become the
reason), *doubts* make a readable signal need a person's confirmation, *notes* are warnings
that change nothing. Rules chosen where the text is ambiguous:

* side: a written side word wins over emojis; LONG and SHORT both written, or no side, → the
  side is inferred from prices only when the stop and every target agree (doubt: never
  executed); otherwise rejected. Nothing ever defaults to LONG.
* entry: no entry label but exactly one unlabelled number (``BTCUSDT LONG 60000 SL …``) → that
  is the entry (doubt); no entry price at all → market entry assumed (doubt). A market word
  with prices → MARKET, the prices kept as references for the checks. Two prices are a zone
  with the word zone/range/between, or written ``a - b`` under a ``two_prices_mean="zone"``
  profile (doubt); else two limit entries (Cornix). A zone keeps both bounds; the intake
  service picks one price by ``profile.zone_price``.
* stop: several stop prices → the first (doubt). ``SL 3%`` → ``stop_loss_pct``. No stop at
  all is rejected, or (``require_stop_loss=False``) a doubt: it is never executed.
* leverage: a range → its lower bound; above ``profile.max_leverage`` → clamped (doubt);
  above 125x or below 1x → rejected.
* size: first of a range; above ``profile.max_size_pct`` → capped (note).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal

from tradewire.intake import checks
from tradewire.intake.checks import SideName
from tradewire.intake.classify import Sides
from tradewire.intake.model import (
    ChannelProfile,
    Decision,
    EntryType,
    Kind,
    ParsedSignal,
    TakeProfit,
    Trust,
)
from tradewire.intake.scanner import Draft
from tradewire.intake.symbols import SymbolFinding

MAX_TARGETS = 10
EXCHANGE_MAX_LEVERAGE = 125


@dataclass
class Judgement:
    """What is wrong (reject), doubtful (confirm) or merely worth saying (warning)."""

    problems: list[str] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def decision(self, trust: Trust) -> tuple[Decision, str]:
        """The decision and its plain-words reason."""
        if self.problems:
            return Decision.REJECT, "; ".join(self.problems[:3])
        if self.doubts:
            return Decision.CONFIRM, "needs confirmation: " + "; ".join(self.doubts)
        if trust is Trust.CONFIRM_ALL:
            return Decision.CONFIRM, "clean signal; channel trust is confirm_all"
        return Decision.EXECUTE, "clean signal from a trusted channel"

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.doubts + self.notes)


def decide_new(
    draft: Draft, symbols: SymbolFinding, sides: Sides, profile: ChannelProfile
) -> ParsedSignal:
    """The verdict on a NEW signal."""
    judged = Judgement(notes=list(symbols.notes) + draft.notes)
    symbol = _symbol(symbols, judged)
    for text in draft.unreadable:
        judged.problems.append(f"unreadable number in '{text}'")
    stop = _stop(draft, judged)
    side = _side(sides, draft, stop, judged)
    targets = _targets(draft, side, judged)
    entry_type, entries, bounds = _entries(draft, side, profile, judged)
    stop_pct = _stop_pct(draft, stop, profile, judged)
    if side is not None:
        prices = checks.Prices(side, bounds, stop, tuple(tp.price for tp in targets))
        judged.problems.extend(checks.price_problems(prices))
    leverage = _leverage(draft, profile, judged)
    size = _size(draft, profile, judged)
    decision, reason = judged.decision(profile.trust)
    return ParsedSignal(
        decision, Kind.NEW, reason, symbol=symbol, side=side, entries=entries,
        entry_type=entry_type, stop_loss=stop, stop_loss_pct=stop_pct, take_profits=targets,
        leverage=leverage, margin_mode=draft.margin_mode, size_pct=size,
        warnings=judged.warnings,
    )


def _symbol(found: SymbolFinding, judged: Judgement) -> str | None:
    if not found.symbols:
        judged.problems.append("no symbol")
        return None
    if len(found.symbols) > 1:
        names = ", ".join(found.symbols)
        judged.doubts.append(f"several symbols ({names}); {found.symbols[0]} used")
    return found.symbols[0]


def _stop(draft: Draft, judged: Judgement) -> Decimal | None:
    if len(set(draft.stops)) > 1:
        judged.doubts.append(f"several stop prices; the first ({draft.stops[0]}) used")
    return draft.stops[0] if draft.stops else None


def _stop_pct(
    draft: Draft, stop: Decimal | None, profile: ChannelProfile, judged: Judgement
) -> Decimal | None:
    """The percent stop when no stop price was written; no stop at all is a problem."""
    if stop is not None:
        return None
    if draft.stop_pcts:
        pct = abs(draft.stop_pcts[0])
        if not 0 < pct < 100:
            judged.problems.append(f"stop-loss of {pct}% is not a stop")
        return pct
    if profile.require_stop_loss:
        judged.problems.append("no stop-loss")
    else:
        judged.doubts.append("no stop-loss (the channel allows it; a person confirms)")
    return None


def _side(
    sides: Sides, draft: Draft, stop: Decimal | None, judged: Judgement
) -> SideName | None:
    """A written side word, else an emoji, else prices (a doubt), else a problem."""
    for found, how in ((sides.strong, "written"), (sides.weak, "shown by emojis")):
        if len(found) == 1:
            return next(iter(found))
        if len(found) > 1:
            judged.doubts.append(f"both LONG and SHORT {how}")
            break
    inferred = checks.infer_side(stop, [price for price, _ in draft.targets])
    if inferred is None:
        judged.problems.append("no side (LONG/SHORT) and the prices do not imply one")
        return None
    judged.doubts.append(f"side {inferred} inferred from the stop and targets")
    return inferred


def _entries(
    draft: Draft, side: SideName | None, profile: ChannelProfile, judged: Judgement
) -> tuple[EntryType, tuple[Decimal, ...], tuple[Decimal, ...]]:
    """Entry type, the entry prices to use, and every written entry price (for checks)."""
    written = tuple(draft.entries)
    if not written and not draft.market and len(draft.loose_prices) == 1:
        written = tuple(draft.loose_prices)
        judged.doubts.append(f"entry {written[0]} read from an unlabelled price")
    if draft.breakout:
        judged.doubts.append("breakout entry (above/below): check the order type")
    if draft.market and written:
        judged.notes.append("market entry; the quoted prices are kept as references")
    elif not written and not draft.market:
        judged.doubts.append("no entry price: market entry assumed")
    if draft.market or not written:
        return EntryType.MARKET, written, written
    zone = draft.zone_word or (draft.entry_range and profile.two_prices_mean == "zone")
    if len(written) == 2 and zone:
        return _zone(written, side, draft.zone_word, judged)
    if side is None:
        return EntryType.LIMIT, written, written
    ordered = tuple(sorted(written, reverse=side == "LONG"))
    if ordered != written:
        judged.notes.append(f"entries sorted for a {side}")
    return EntryType.LIMIT, ordered, written


def _zone(
    bounds: tuple[Decimal, ...], side: SideName | None, worded: bool, judged: Judgement
) -> tuple[EntryType, tuple[Decimal, ...], tuple[Decimal, ...]]:
    """A zone keeps both bounds, the first one reached first; the service picks one price by
    ``profile.zone_price`` (worst by default: the highest for a LONG)."""
    if not worded:
        judged.doubts.append("two prices without the word zone read as a zone (channel profile)")
    ordered = tuple(sorted(bounds, reverse=side == "LONG"))
    return EntryType.ZONE, ordered, bounds


def _targets(draft: Draft, side: SideName | None, judged: Judgement) -> tuple[TakeProfit, ...]:
    """Up to ten targets in the order they fill; shares only when they add up to 100%."""
    written = draft.targets
    if not written:
        judged.doubts.append("no take-profit")
    if len(written) > MAX_TARGETS:
        judged.notes.append(f"{len(written)} targets: only the first {MAX_TARGETS} kept")
        written = written[:MAX_TARGETS]
    shares = [share for _, share in written if share is not None]
    use_shares = len(shares) == len(written) and abs(sum(shares, Decimal(0)) - 100) <= 1
    if shares and not use_shares:
        judged.notes.append("percentages next to targets ignored (they do not add up to 100%)")
    targets = [TakeProfit(p, s / 100 if use_shares and s else None) for p, s in written]
    if side is not None:
        ordered = sorted(targets, key=lambda tp: tp.price, reverse=side == "SHORT")
        if ordered != targets:
            judged.notes.append(f"targets sorted for a {side}")
        targets = ordered
    return tuple(targets)


def _leverage(draft: Draft, profile: ChannelProfile, judged: Judgement) -> int | None:
    """The written leverage (lower bound of a range), clamped to the profile's maximum."""
    values = draft.leverages
    if not values and len(draft.bare_leverage) == 1:
        values = draft.bare_leverage
        judged.notes.append(f"leverage read from a bare '{values[0]}x'")
    if not values:
        return None
    value = min(values)
    if draft.leverage_range and len(set(values)) > 1:
        judged.notes.append(f"leverage range: the lower bound {value}x used")
    lever = int(value.to_integral_value(rounding=ROUND_FLOOR))
    if not 1 <= lever <= EXCHANGE_MAX_LEVERAGE:
        judged.problems.append(f"leverage {value}x is not a usable leverage")
        return None
    if lever > profile.max_leverage:
        cap = profile.max_leverage
        judged.doubts.append(f"leverage {lever}x clamped to the channel's max {cap}x")
        return profile.max_leverage
    return lever


def _size(draft: Draft, profile: ChannelProfile, judged: Judgement) -> Decimal | None:
    """The first size percent, capped at ``profile.max_size_pct``."""
    if not draft.size_pcts:
        return None
    size = draft.size_pcts[0]
    if size <= 0:
        judged.notes.append("size of 0% ignored")
        return None
    if size > profile.max_size_pct:
        judged.notes.append(f"size {size}% capped at {profile.max_size_pct}%")
        return profile.max_size_pct
    return size
