"""The intake's pure steps: staleness, rate limit, routing, content hash, the plan (entry, stop,
size, leverage), prices against the mark, channel profiles and the TradingView envelope."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tradewire.domain import Side
from tradewire.errors import ConfigError, InvalidInput
from tradewire.intake import safety, tradingview
from tradewire.intake.model import (
    ChannelProfile,
    Decision,
    EntryType,
    Kind,
    ParsedSignal,
    TakeProfit,
    Trust,
)
from tradewire.intake.profiles import ChannelConfig, ProfileBook
from tradewire.store.tables import IntakeStatus

MARK = Decimal(60000)
CONFIG = ChannelConfig(ChannelProfile(trust=Trust.AUTO), size_usdt=Decimal(200))


def parsed(**overrides: Any) -> ParsedSignal:
    """A clean market LONG on BTCUSDT: stop 58000, targets 61000 and 63000."""
    values: dict[str, Any] = {
        "decision": Decision.EXECUTE, "kind": Kind.NEW, "reason": "clean", "symbol": "BTCUSDT",
        "side": "LONG", "entry_type": EntryType.MARKET, "stop_loss": Decimal(58000),
        "take_profits": (TakeProfit(Decimal(61000)), TakeProfit(Decimal(63000))),
    }
    return ParsedSignal(**{**values, **overrides})


def test_a_message_older_than_the_max_lag_is_stale() -> None:
    """Older than the lag is stale (with the age in the reason); younger or future is not."""
    assert safety.stale_reason(0, 61_000, 60) == "stale: sent 61 s ago, the limit is 60 s"
    assert safety.stale_reason(0, 60_000, 60) is None
    assert safety.stale_reason(5_000, 0, 60) is None


def test_the_rate_limit_refuses_the_signal_after_the_limit() -> None:
    """Seven accepted signals in the minute leave no room for an eighth."""
    assert safety.rate_limit_reason(6, 7) is None
    reason = safety.rate_limit_reason(7, 7)
    assert reason is not None and reason.startswith("rate limit")


@pytest.mark.parametrize(("decision", "trust", "status"), [
    (Decision.EXECUTE, Trust.AUTO, IntakeStatus.EXECUTING),
    (Decision.EXECUTE, Trust.CONFIRM_ALL, IntakeStatus.PENDING_CONFIRMATION),
    (Decision.CONFIRM, Trust.AUTO, IntakeStatus.PENDING_CONFIRMATION),
])
def test_only_a_clean_parse_on_a_trusted_channel_executes(
    decision: Decision, trust: Trust, status: IntakeStatus
) -> None:
    """Execution needs both the parser's "execute" and an AUTO channel."""
    assert safety.route(decision, trust) is status


def test_the_content_hash_ignores_target_order_and_number_spelling() -> None:
    """Reordered targets and ``58000.0`` vs ``58000`` hash the same; another stop does not."""
    first = parsed()
    second = parsed(stop_loss=Decimal("58000.0"),
                    take_profits=(TakeProfit(Decimal(63000)), TakeProfit(Decimal(61000))))
    assert safety.content_hash(first) == safety.content_hash(second)
    assert safety.content_hash(first) != safety.content_hash(parsed(stop_loss=Decimal(57000)))


def test_a_signal_without_a_stop_or_target_has_no_plan() -> None:
    """No stop-loss and no take-profit are rejections, never defaults."""
    with pytest.raises(InvalidInput, match="no stop-loss"):
        safety.make_plan(parsed(stop_loss=None), CONFIG)
    with pytest.raises(InvalidInput, match="no take-profit"):
        safety.make_plan(parsed(take_profits=()), CONFIG)


def test_leverage_is_capped_and_size_follows_the_channel() -> None:
    """The signal's leverage is capped by the profile; a size percentage applies to the notional
    base (capped), otherwise the channel's size, never above the maximum."""
    plan = safety.make_plan(parsed(leverage=50, size_pct=Decimal(5)), CONFIG)
    assert plan.leverage == 20
    assert plan.size_usdt == Decimal(50)  # 5% of 1000
    assert safety.make_plan(parsed(), CONFIG).size_usdt == Decimal(200)
    assert safety.make_plan(parsed(), CONFIG).leverage == 5  # the channel's default
    greedy = safety.make_plan(parsed(size_pct=Decimal(90)), CONFIG)
    assert greedy.size_usdt == Decimal(200)  # capped at 20% of 1000


@pytest.mark.parametrize(("rule", "side", "entry_type", "expected"), [
    ("worst", "LONG", EntryType.ZONE, "60500"),
    ("worst", "SHORT", EntryType.ZONE, "59500"),
    ("best", "LONG", EntryType.ZONE, "59500"),
    ("middle", "LONG", EntryType.ZONE, "60000"),
    ("worst", "LONG", EntryType.LIMIT, "60500"),
    ("middle", "LONG", EntryType.LIMIT, "60000"),
])
def test_the_profile_picks_one_entry(rule: str, side: str, entry_type: EntryType,
                                     expected: str) -> None:
    """A zone or several entries become one limit price by the profile's ``zone_price`` rule."""
    config = ChannelConfig(ChannelProfile(zone_price=rule))
    entries = (Decimal(59500), Decimal(60000), Decimal(60500))
    if entry_type is EntryType.ZONE:
        entries = (Decimal(59500), Decimal(60500))
    signal = parsed(side=side, entry_type=entry_type, entries=entries)
    assert safety.choose_entry(signal, Side(side), config) == Decimal(expected)


def test_a_percent_stop_is_resolved_against_the_mark_of_a_market_entry() -> None:
    """``SL 3%`` on a market LONG at mark 60000 is a stop at 58200."""
    plan = safety.make_plan(parsed(stop_loss=None, stop_loss_pct=Decimal(3)), CONFIG)
    signal = safety.build_signal(plan, MARK, "s", Decimal(5))
    assert signal.stop_loss == Decimal(58200)
    assert [t.price for t in signal.targets] == [Decimal(61000), Decimal(63000)]
    assert sum(t.share for t in signal.targets) == 1


def test_prices_are_checked_against_the_mark() -> None:
    """A stop above the mark of a LONG, or a limit entry far from the mark, is rejected."""
    plan = safety.make_plan(parsed(), CONFIG)
    with pytest.raises(InvalidInput, match="stop_loss is on the wrong side of the mark"):
        safety.build_signal(plan, Decimal(57500), "s", Decimal(5))
    far = safety.make_plan(parsed(entry_type=EntryType.LIMIT, entries=(Decimal(59000),),
                                  take_profits=(TakeProfit(Decimal(61000)),)), CONFIG)
    with pytest.raises(InvalidInput, match="from the mark"):
        safety.build_signal(far, Decimal(60500), "s", Decimal(2))
    assert safety.build_signal(far, Decimal(60500), "s", Decimal(5)).entry_price == 59000


def test_a_plan_survives_its_json_round_trip() -> None:
    """The stored plan reads back identical (a pending signal is rebuilt from it)."""
    plan = safety.make_plan(parsed(stop_loss=None, stop_loss_pct=Decimal("2.5")), CONFIG)
    assert safety.Plan.from_json(plan.as_json()) == plan


def test_long_signal_ids_are_hashed_to_fit() -> None:
    """``source:channel:message_id`` is kept when short and hashed when too long."""
    assert safety.signal_id_for("cdp", "c", "1") == "cdp:c:1"
    long_id = safety.signal_id_for("cdp", "c" * 200, "1")
    assert len(long_id) <= 128 and long_id.startswith("cdp:sha256:")


def test_profiles_inherit_the_default_and_are_found_by_source_then_channel() -> None:
    """A channel entry overrides ``default``; lookup tries ``source:channel`` then ``channel``;
    unknown channels get the default; a bad key is a ``ConfigError``."""
    book = ProfileBook.from_data({
        "default": {"max_lag_s": 30, "size_usdt": "150"},
        "channels": {"discord_bot:1": {"trust": "auto"}, "tradingview": {"max_leverage": 5}},
    })
    vip = book.for_channel("discord_bot", "1")
    assert vip.profile.trust is Trust.AUTO and vip.profile.max_lag_s == 30
    assert vip.size_usdt == Decimal(150) and vip.profile.name == "discord_bot:1"
    assert book.for_channel("tradingview", "tradingview").profile.max_leverage == 5
    assert book.for_channel("telegram", "1").profile.trust is Trust.CONFIRM_ALL
    with pytest.raises(ConfigError):
        ProfileBook.from_data({"default": {"trust": "yolo"}})


def test_tradingview_symbols_are_normalised() -> None:
    """Exchange prefixes and perpetual suffixes are removed."""
    for name in ("BINANCE:BTCUSDT.P", "btcusdt.p", "BTC/USDT", "BTCUSDTPERP"):
        assert tradingview.normalise_symbol(name) == "BTCUSDT"


def test_the_tradingview_secret_comes_from_the_body_or_the_query() -> None:
    """A JSON body carries its secret; plain text takes the query's; an unset secret matches
    nothing."""
    envelope = tradingview.open_envelope('{"secret": "s", "alert_id": "a", "symbol": "X"}')
    assert envelope.secret == "s" and envelope.text is None and "secret" not in envelope.meta
    text = tradingview.open_envelope("BTCUSDT LONG SL 1", query_secret="q")
    assert text.secret == "q" and text.text == "BTCUSDT LONG SL 1"
    assert tradingview.secret_matches("s", "s")
    assert not tradingview.secret_matches("", "")
    assert not tradingview.secret_matches("s", "t")


def test_a_json_alert_becomes_a_parsed_signal() -> None:
    """Side from ``action``, a percent stop, a list of targets and a percent size are read."""
    signal = tradingview.alert_signal({"symbol": "ETHUSDT.P", "action": "sell", "sl": "2%",
                                       "tp": [2900, "2800"], "size": "5%", "entry": 3000})
    assert signal.decision is Decision.EXECUTE and signal.side == "SHORT"
    assert signal.stop_loss_pct == Decimal(2) and signal.size_pct == Decimal(5)
    assert signal.entries == (Decimal(3000),) and signal.entry_type is EntryType.LIMIT
    assert [t.price for t in signal.take_profits] == [Decimal(2900), Decimal(2800)]
    broken = tradingview.alert_signal({"symbol": "ETHUSDT", "action": "buy", "tp": 1})
    assert broken.decision is Decision.REJECT and "sl" in broken.reason
