"""The intake's safety checks as small pure steps (no I/O, no clock of their own).

``IntakeService`` runs them in this order for a NEW message: ``stale_reason`` → the parser's
kind and decision → ``make_plan`` (one concrete order from the parse and the channel's
configuration) → ``content_hash`` (duplicates within the window) → ``rate_limit_reason`` →
``build_signal`` (prices against the mark) → ``route`` (execute now, or wait for an operator).

Choices where a signal offers several:

* **Entry**: a market entry stays market. Otherwise one limit order is placed at the price the
  profile's ``zone_price`` picks among the parsed prices (a zone's two bounds, or several
  explicit entries): ``worst`` (default) = the highest for a LONG and the lowest for a SHORT —
  which is also the first one the price reaches, as Cornix orders them; ``best`` = the other
  end; ``middle`` = the midpoint of a zone, or the explicit entry nearest to it.
* **Stop**: an absolute stop-loss, or ``stop_loss_pct`` resolved against the entry (the mark
  for a market entry) when the order is built — so a pending market signal gets its stop from
  the mark at confirmation time. No stop at all is always a rejection.
* **Size**: ``size_pct`` (capped by the profile's ``max_size_pct``) times ``notional_base_usdt``,
  else the channel's ``size_usdt``; never above ``max_size_usdt``.
* **Leverage**: the signal's, else the channel's ``default_leverage``; capped (not refused) by
  the profile's ``max_leverage`` — a signal's leverage is a suggestion.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from tradewire.domain import MAX_TARGETS, Side, Signal
from tradewire.errors import UNREADABLE_JSON, InvalidInput
from tradewire.intake.model import Decision, EntryType, ParsedSignal, Trust
from tradewire.intake.profiles import ChannelConfig
from tradewire.store.tables import IntakeStatus
from tradewire.trading.signals import check_prices, split_shares

HUNDRED = Decimal(100)
MAX_SIGNAL_ID = 128  # signals.signal_id / trades.signal_id column length
_UNREADABLE: tuple[type[Exception], ...] = (*UNREADABLE_JSON, InvalidOperation)  # a stored plan


@dataclass(frozen=True)
class Plan:
    """The one order a parsed signal becomes, before the mark price is known."""

    symbol: str
    side: Side
    entry: Decimal | None  # None: market
    stop_loss: Decimal | None
    stop_loss_pct: Decimal | None
    targets: tuple[tuple[Decimal, Decimal | None], ...]  # (price, share or None = even split)
    leverage: int
    size_usdt: Decimal

    def as_json(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "side": self.side.value, "entry": _text(self.entry),
            "stop_loss": _text(self.stop_loss), "stop_loss_pct": _text(self.stop_loss_pct),
            "targets": [[str(p), _text(s)] for p, s in self.targets],
            "leverage": self.leverage, "size_usdt": str(self.size_usdt),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            symbol=data["symbol"], side=Side(data["side"]), entry=_number(data["entry"]),
            stop_loss=_number(data["stop_loss"]), stop_loss_pct=_number(data["stop_loss_pct"]),
            targets=tuple((Decimal(p), _number(s)) for p, s in data["targets"]),
            leverage=int(data["leverage"]), size_usdt=Decimal(data["size_usdt"]),
        )


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _number(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def signal_id_for(source: str, channel: str, message_id: str) -> str:
    """``source:channel:message_id``: the Executor's idempotency key for the message (hashed
    when longer than the column allows)."""
    key = f"{source}:{channel}:{message_id}"
    if len(key) <= MAX_SIGNAL_ID:
        return key
    return f"{source}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def stale_reason(sent_at_ms: int, now_ms: int, max_lag_s: float) -> str | None:
    """Why a message is too old to act on, or None. Future times (clock skew) are not stale."""
    age_s = (now_ms - sent_at_ms) / 1000
    if age_s > max_lag_s:
        return f"stale: sent {age_s:.0f} s ago, the limit is {max_lag_s:g} s"
    return None


def rate_limit_reason(accepted_last_minute: int, limit: int) -> str | None:
    """Why one more signal from the channel is refused this minute, or None."""
    if accepted_last_minute >= limit:
        return (f"rate limit: {accepted_last_minute} signals from this channel in the last "
                f"minute (at most {limit})")
    return None


def route(decision: Decision, trust: Trust) -> IntakeStatus:
    """A checked signal executes only when the parser says so and the channel is trusted."""
    if decision is Decision.EXECUTE and trust is Trust.AUTO:
        return IntakeStatus.EXECUTING
    return IntakeStatus.PENDING_CONFIRMATION


def content_hash(parsed: ParsedSignal) -> str:
    """SHA-256 of the canonical content: symbol, side, entry type, sorted entries, stop, sorted
    targets. The same signal written twice (or cross-posted) hashes the same."""
    entries = ",".join(sorted(_canon(p) for p in parsed.entries))
    stop = _canon(parsed.stop_loss) if parsed.stop_loss else f"{_canon(parsed.stop_loss_pct)}%"
    targets = ",".join(sorted(_canon(t.price) for t in parsed.take_profits))
    entry_type = parsed.entry_type.value if parsed.entry_type else "market"
    canonical = f"{parsed.symbol}|{parsed.side}|{entry_type}|{entries}|{stop}|{targets}"
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canon(value: Decimal | None) -> str:
    return "-" if value is None else format(value.normalize(), "f")


def make_plan(parsed: ParsedSignal, config: ChannelConfig) -> Plan:
    """The order for a NEW signal; ``InvalidInput`` with a plain reason when there is none."""
    if not parsed.symbol or parsed.side is None:
        raise InvalidInput("a signal needs a symbol and a side", field="symbol")
    side = Side(parsed.side)
    if parsed.stop_loss is None and parsed.stop_loss_pct is None:
        raise InvalidInput("no stop-loss: tradewire never trades without one", field="stop_loss")
    if parsed.stop_loss_pct is not None and not 0 < parsed.stop_loss_pct < HUNDRED:
        raise InvalidInput("stop-loss percent must be between 0 and 100", field="stop_loss")
    if not parsed.take_profits:
        raise InvalidInput("no take-profit target", field="take_profit")
    if len(parsed.take_profits) > MAX_TARGETS:
        raise InvalidInput(f"more than {MAX_TARGETS} targets", field="take_profit")
    leverage = min(parsed.leverage or config.default_leverage, config.profile.max_leverage)
    return Plan(
        symbol=parsed.symbol, side=side, entry=choose_entry(parsed, side, config),
        stop_loss=parsed.stop_loss, stop_loss_pct=parsed.stop_loss_pct,
        targets=tuple((t.price, t.share) for t in parsed.take_profits),
        leverage=max(1, leverage), size_usdt=position_size(parsed, config),
    )


def choose_entry(parsed: ParsedSignal, side: Side, config: ChannelConfig) -> Decimal | None:
    """The single entry price (None = market); see the module docstring."""
    prices = sorted(parsed.entries)
    if parsed.entry_type is EntryType.MARKET or not prices:
        return None
    if len(prices) == 1:
        return prices[0]
    low, high = prices[0], prices[-1]
    rule = config.profile.zone_price
    if rule == "middle":
        middle = (low + high) / 2
        if parsed.entry_type is EntryType.ZONE:
            return middle.quantize(min(low, high, key=_exponent))
        return min(prices, key=lambda p: (abs(p - middle), p))
    worst = high if side is Side.LONG else low
    best = low if side is Side.LONG else high
    return worst if rule == "worst" else best


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def position_size(parsed: ParsedSignal, config: ChannelConfig) -> Decimal:
    """Position value per account in USDT; see the module docstring."""
    if parsed.size_pct is not None and parsed.size_pct > 0:
        pct = min(parsed.size_pct, config.profile.max_size_pct)
        size = config.notional_base_usdt * pct / HUNDRED
    else:
        size = config.size_usdt
    return min(size, config.max_size_usdt)


def resolve_stop(plan: Plan, reference: Decimal) -> Decimal:
    """The absolute stop: given, or the percentage away from ``reference`` on the losing side,
    rounded to the reference's decimals but to at least five significant digits."""
    if plan.stop_loss is not None:
        return plan.stop_loss
    assert plan.stop_loss_pct is not None
    sign = -1 if plan.side is Side.LONG else 1
    stop = reference * (1 + sign * plan.stop_loss_pct / HUNDRED)
    exponent = min(_exponent(reference), reference.adjusted() - 4, 0)
    return stop.quantize(Decimal(1).scaleb(exponent))


def build_signal(
    plan: Plan, mark: Decimal, signal_id: str, max_entry_distance_pct: Decimal
) -> Signal:
    """The executable signal, checked against the mark: stop on the losing side and every target
    on the winning side of the mark (and of the entry), the entry within
    ``max_entry_distance_pct`` of the mark, no two prices 10x apart. ``InvalidInput`` if not."""
    stop = resolve_stop(plan, plan.entry or mark)
    try:
        targets = split_shares(list(plan.targets))
    except ValueError as exc:
        raise InvalidInput(str(exc), field="take_profit") from exc
    up = plan.side is Side.LONG
    targets = tuple(sorted(targets, key=lambda t: t.price, reverse=not up))  # nearest first
    check_prices(plan.side, mark, stop, targets, reference="mark")
    if plan.entry is not None:
        check_prices(plan.side, plan.entry, stop, targets, reference="entry")
        distance = abs(plan.entry - mark) / mark * HUNDRED
        if distance > max_entry_distance_pct:
            raise InvalidInput(
                f"entry {plan.entry} is {distance:.1f}% from the mark {mark} "
                f"(at most {max_entry_distance_pct}%)", field="entry",
            )
    return Signal(
        signal_id=signal_id, symbol=plan.symbol, side=plan.side, stop_loss=stop,
        targets=targets, leverage=plan.leverage, size_usdt=plan.size_usdt,
        entry_price=plan.entry,
    )


def level_changes(before: dict[str, Any] | None, after: ParsedSignal) -> str | None:
    """What an edit changed in the stop or targets (parsed JSON before, parse after), or None."""
    if before is None:
        return None
    now = after.as_json()
    changes = []
    for key in ("stop_loss", "stop_loss_pct"):
        if before.get(key) != now.get(key):
            changes.append(f"{key} {before.get(key)} → {now.get(key)}")
    old_tps = [t.get("price") for t in before.get("take_profits") or []]
    new_tps = [t.get("price") for t in now.get("take_profits") or []]
    if old_tps != new_tps:
        changes.append(f"targets {old_tps} → {new_tps}")
    return "; ".join(changes) or None


def decode_json(text: str | None) -> dict[str, Any] | None:
    """A stored JSON column as a dict (None when empty or unreadable)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except _UNREADABLE:
        return None
    return value if isinstance(value, dict) else None
