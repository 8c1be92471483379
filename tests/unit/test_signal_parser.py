"""The signal parser, one grammar feature and one rejection reason at a time."""

# ruff: noqa: RUF001  (Russian keywords and typographic dashes are the input under test)

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tradewire.intake.model import (
    ChannelProfile,
    Decision,
    EntryType,
    Kind,
    ParsedSignal,
    TakeProfit,
    Trust,
    Update,
)
from tradewire.intake.parse_cli import main_parse, profile_from
from tradewire.intake.parser import STATUS_REASON, parse
from tradewire.intake.text import normalise

AUTO = ChannelProfile(trust=Trust.AUTO)
BODY = "Entry 60000\nTP 62000\nSL 58000"
SHORT_BODY = "Entry 60000\nTP 58000\nSL 61000"


def auto(text: str, **profile: Any) -> ParsedSignal:
    """Parse under a trusted (AUTO) profile with the given overrides."""
    return parse(text, ChannelProfile(trust=Trust.AUTO, **profile))


def prices(*values: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


def tp_prices(signal: ParsedSignal) -> tuple[Decimal, ...]:
    return tuple(tp.price for tp in signal.take_profits)


# --- the first contract ------------------------------------------------------------------------


def test_plain_one_line_signal() -> None:
    """The plain one-liner other components integrate against."""
    signal = parse("BTCUSDT LONG entry 60000 SL 58000 TP 62000 leverage 10x")
    assert signal.kind is Kind.NEW and signal.decision is Decision.CONFIRM
    assert (signal.symbol, signal.side, signal.leverage) == ("BTCUSDT", "LONG", 10)
    assert signal.entries == prices("60000") and signal.entry_type is EntryType.LIMIT
    assert signal.stop_loss == Decimal(58000)
    assert signal.take_profits == (TakeProfit(Decimal(62000)),)


def test_clean_signal_executes_only_under_auto_trust() -> None:
    """The default profile confirms every clean signal; AUTO executes it."""
    text = "BTCUSDT LONG entry 60000 SL 58000 TP 62000"
    assert parse(text).decision is Decision.CONFIRM
    assert "confirm_all" in parse(text).reason
    assert auto(text).decision is Decision.EXECUTE


# --- normalisation -----------------------------------------------------------------------------


def test_normalise_strips_discord_markdown_links_and_decoration() -> None:
    """Bold, code spans, quotes, fences and links go; lines stay."""
    lines = normalise("**BTC**\n> `Entry` __60__\n```\nSL 1\n```\nhttps://t.me/x join")
    assert lines == ["BTC", "Entry 60", "SL 1", "join"]


def test_normalise_maps_emoji_labels_and_keycaps() -> None:
    """🎯 is a target, 🛑 a stop, keycap digits are list items, 🟢 a weak long mark."""
    assert normalise("🎯 1️⃣ 5")[0].split() == ["target", "1)", "5"]
    assert normalise("🛑 4")[0].split() == ["stop", "4"]
    assert normalise("🟢 BTC")[0].split() == ["<longmark>", "BTC"]


def test_normalise_unifies_numbers() -> None:
    """Thousands separators, $ signs, en-dashes, 30K and a decimal comma become plain numbers."""
    assert normalise("$60,000.5 – 61,000")[0] == "60000.5 - 61000"
    assert normalise("30K 1.5k 0,045")[0] == "30000 1500 0.045"
    assert normalise("100 _ 200")[0] == "100 - 200"


# --- symbols -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "symbol"),
    [
        ("BTCUSDT", "BTCUSDT"), ("BTC/USDT", "BTCUSDT"), ("#BTC/USDT", "BTCUSDT"),
        ("#BTCUSDT", "BTCUSDT"), ("$BTC", "BTCUSDT"), ("#BTC", "BTCUSDT"),
        ("BTC-USDT", "BTCUSDT"), ("BTC.USDT", "BTCUSDT"), ("FHE/ USDT", "FHEUSDT"),
        ("BTCUSDT.P", "BTCUSDT"), ("BTCUSDTPERP", "BTCUSDT"), ("1000PEPEUSDT", "1000PEPEUSDT"),
        ("$TRIA/USDT", "TRIAUSDT"), ("ETH/USDC", "ETHUSDC"), ("XRP", "XRPUSDT"),
    ],
)
def test_symbol_spellings(spelling: str, symbol: str) -> None:
    """Every common spelling of a pair gives the exchange symbol."""
    assert parse(f"{spelling} LONG\n{BODY}").symbol == symbol


def test_lone_coin_needs_a_clear_context() -> None:
    """``XRP`` counts next to a side word or after ``Coin:``; a lower-case word never does."""
    assert parse(f"Coin: SOL\nLONG\n{BODY}").symbol == "SOLUSDT"
    assert parse(f"SHORT SOL\n{SHORT_BODY}").symbol == "SOLUSDT"
    signal = parse(f"sol long\n{BODY}")
    assert signal.symbol is None and signal.reason == "no symbol"


def test_usd_quote_is_read_as_usdt_with_a_warning() -> None:
    signal = parse(f"BTC/USD LONG\n{BODY}")
    assert signal.symbol == "BTCUSDT" and "quote USD read as USDT" in signal.warnings


def test_several_symbols_need_confirmation() -> None:
    """Two different pairs: the first is used and a person confirms."""
    signal = auto(f"BTCUSDT LONG\n{BODY}\nalso watching ETH/USDT")
    assert signal.decision is Decision.CONFIRM and signal.symbol == "BTCUSDT"
    assert "several symbols" in signal.reason


# --- side --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "side"),
    [
        ("BTCUSDT LONG", "LONG"), ("BTCUSDT SHORT", "SHORT"), ("BTCUSDT BUY", "LONG"),
        ("BTCUSDT SELL", "SHORT"), ("BTC Long Setup", "LONG"), ("Position: LONG\nBTCUSDT", "LONG"),
        ("Signal Type: Regular (Short)\n#BTC/USDT", "SHORT"), ("BTCUSDT ЛОНГ", "LONG"),
        ("BTCUSDT шорт", "SHORT"), ("🟢 BTCUSDT", "LONG"), ("📈 BTCUSDT", "LONG"),
        ("🔴 BTCUSDT", "SHORT"), ("SIDE: SHORT📉\nBTCUSDT", "SHORT"),
    ],
)
def test_side_words(header: str, side: str) -> None:
    """Side words, labels, Russian words and emojis."""
    body = BODY if side == "LONG" else SHORT_BODY
    assert parse(f"{header}\n{body}").side == side


def test_sell_followed_by_prices_is_a_target_keyword_not_a_side() -> None:
    """Cornix: ``Sell: 62000`` lists targets; the side then comes from prices (confirm)."""
    signal = auto("BTCUSDT\nBuy: 60000\nSell: 62000 63000\nStop: 58000")
    assert signal.side == "LONG" and tp_prices(signal) == prices("62000", "63000")
    assert signal.decision is Decision.CONFIRM and "inferred" in signal.reason


def test_long_term_is_not_a_side() -> None:
    assert parse("BTCUSDT long term hold\nEntry 60000\nSL 3%\nTP 62000").side is None


def test_written_side_wins_over_decorative_emoji() -> None:
    """A red circle decorating the stop line does not contradict a written LONG."""
    signal = auto("🟢 LONG BTCUSDT\nEntry 60000\nTP 62000\n🔴 SL 58000")
    assert signal.side == "LONG" and signal.decision is Decision.EXECUTE


# --- entries -----------------------------------------------------------------------------------


def test_several_entries_are_sorted_by_direction() -> None:
    """Cornix sorts entries: a LONG buys the highest first, a SHORT sells the lowest first."""
    assert parse("BTCUSDT LONG\nBuy 59000 60000\nTP 62000\nSL 58000").entries == prices(
        "60000", "59000"
    )
    assert parse("BTCUSDT SHORT\nEntry 60500 60000\nTP 58000\nSL 61000").entries == prices(
        "60000", "60500"
    )


def test_numbered_entry_list() -> None:
    text = "BTCUSDT LONG\nEntry Targets:\n1) 60000\n2) 59500\nTP 62000\nSL 58000"
    assert parse(text).entries == prices("60000", "59500")


def test_zone_keeps_both_bounds_first_reached_first() -> None:
    """A zone keeps its two bounds (the service picks one by ``zone_price``)."""
    long = parse("BTCUSDT LONG\nEntry zone: 60000 - 61000\nTP 63000\nSL 58000")
    short = parse("BTCUSDT SHORT\nBuy zone 60000-61000\nTP 58000\nSL 62000")
    assert long.entry_type is EntryType.ZONE and long.entries == prices("61000", "60000")
    assert short.entry_type is EntryType.ZONE and short.entries == prices("60000", "61000")


def test_two_prices_without_the_word_zone() -> None:
    """``a - b`` is two entries (Cornix), or a zone needing confirmation under a zone profile."""
    text = "BTCUSDT LONG\nEntry: 60000 - 61000\nTP 63000\nSL 58000"
    entries = auto(text)
    assert entries.entry_type is EntryType.LIMIT and entries.decision is Decision.EXECUTE
    zone = auto(text, two_prices_mean="zone")
    assert zone.entry_type is EntryType.ZONE and zone.decision is Decision.CONFIRM


@pytest.mark.parametrize("word", ["market", "CMP", "now", "current price", "Market Price"])
def test_market_entry_words(word: str) -> None:
    signal = auto(f"BTCUSDT LONG\nEntry: {word}\nTP 62000\nSL 58000")
    assert signal.entry_type is EntryType.MARKET and signal.entries == ()
    assert signal.decision is Decision.EXECUTE


def test_missing_entry_assumes_market_but_asks() -> None:
    signal = auto("BTCUSDT LONG\nTP 62000\nSL 58000")
    assert signal.entry_type is EntryType.MARKET and signal.decision is Decision.CONFIRM


def test_one_unlabelled_price_is_the_entry_but_asks() -> None:
    """``BTCUSDT LONG 60000 SL …``: the lone number is the entry, and a person confirms."""
    signal = auto("BTCUSDT LONG 60000 SL 58000 TP 62000")
    assert signal.entries == prices("60000") and signal.entry_type is EntryType.LIMIT
    assert signal.decision is Decision.CONFIRM and "unlabelled" in signal.reason


def test_breakout_entry_asks_for_confirmation() -> None:
    signal = auto("BTCUSDT LONG\nEnter above 60000\nTP 62000\nSL 58000")
    assert signal.entries == prices("60000") and signal.decision is Decision.CONFIRM


# --- targets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "targets",
    [
        "TP1: 62000\nTP2: 63000\nTP3: 64000",
        "Targets: 62000, 63000, 64000",
        "Targets: 62000 - 63000 - 64000",
        "Targets: 62000 / 63000 / 64000",
        "Targets:\n62000\n63000\n64000",
        "Targets:\n1) 62000\n2) 63000\n3) 64000",
        "Take-Profit Targets:\n1. 62000\n2. 63000\n3. 64000",
        "Target 1: 62000\nTarget 2: 63000\nTarget 3: 64000",
        "🎯 62000\n🎯 63000\n🎯 64000",
        "TP 62000 TP 63000 TP 64000",
        "Targets: 64000, 62000, 63000",
    ],
)
def test_target_list_formats(targets: str) -> None:
    """Every list format gives the same three targets, in the order they fill."""
    signal = parse(f"BTCUSDT LONG\nEntry 60000\n{targets}\nSL 58000")
    assert tp_prices(signal) == prices("62000", "63000", "64000")


def test_target_shares_when_they_add_up_to_100() -> None:
    signal = parse("BTCUSDT LONG\nEntry 60000\nTP1 62000 - 50%\nTP2 63000 (50%)\nSL 58000")
    assert [tp.share for tp in signal.take_profits] == [Decimal("0.5"), Decimal("0.5")]


def test_target_percentages_that_are_gains_are_ignored() -> None:
    signal = parse("BTCUSDT LONG\nEntry 60000\nTP1 62000 (3%)\nTP2 63000 (5%)\nSL 58000")
    assert all(tp.share is None for tp in signal.take_profits)
    assert any("do not add up" in w for w in signal.warnings)


def test_at_most_ten_targets() -> None:
    targets = ", ".join(str(61000 + 100 * i) for i in range(12))
    signal = parse(f"BTCUSDT LONG\nEntry 60000\nTargets: {targets}\nSL 58000")
    assert len(signal.take_profits) == 10


def test_management_lines_are_not_prices() -> None:
    """``Trigger: Target (1)`` and ``move SL after TP1`` add no targets or stops."""
    text = f"BTCUSDT LONG\n{BODY}\nTrailing Configuration:\nStop: Breakeven -\nTrigger: Target (1)"
    signal = auto(text)
    assert tp_prices(signal) == prices("62000") and signal.stop_loss == Decimal(58000)
    assert signal.decision is Decision.EXECUTE


# --- stop-loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stop",
    ["SL 58000", "Stop: 58000", "Stoploss 58000", "Stop-Loss: 58000", "Stop Loss: 58,000",
     "Stop Targets:\n1) 58000", "🛑 58000", "⛔️ 58000", "✖️ 58000", "Стоп: 58000"],
)
def test_stop_keywords(stop: str) -> None:
    assert parse(f"BTCUSDT LONG\nEntry 60000\nTP 62000\n{stop}").stop_loss == Decimal(58000)


def test_percent_stop() -> None:
    signal = auto("BTCUSDT LONG\nEntry 60000\nTP 62000\nSL: 3%")
    assert signal.stop_loss is None and signal.stop_loss_pct == Decimal(3)
    assert signal.decision is Decision.EXECUTE


def test_stop_percent_annotation_next_to_a_price_is_ignored() -> None:
    signal = parse("BTCUSDT LONG\nEntry 60000\nTP 62000\nSL 58000 (-3.3%)")
    assert signal.stop_loss == Decimal(58000) and signal.stop_loss_pct is None


# --- leverage, margin and size -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "leverage", "mode"),
    [
        ("Leverage: 10x", 10, None), ("Lev 20", 20, None), ("Leverage: x15", 15, None),
        ("Cross 20x", 20, "CROSSED"), ("Isolated (5X)", 5, "ISOLATED"),
        ("Leverage: Cross (20.0X)", 20, "CROSSED"), ("Leverage: 10x To 50x", 10, None),
        ("Margin: Isolated\nLeverage: 8x", 8, "ISOLATED"), ("Плечо: 10х", 10, None),
    ],
)
def test_leverage_and_margin(line: str, leverage: int, mode: str | None) -> None:
    signal = parse(f"BTCUSDT LONG\n{BODY}\n{line}")
    assert (signal.leverage, signal.margin_mode) == (leverage, mode)


def test_bare_leverage_only_on_a_line_that_holds_nothing_else() -> None:
    assert parse(f"BTCUSDT LONG 25x\n{BODY}", ChannelProfile(max_leverage=50)).leverage == 25
    assert parse(f"BTCUSDT LONG\n{BODY}\nWe made 25x last month, 3 times").leverage is None


def test_golden_cross_is_not_a_margin_mode() -> None:
    assert parse(f"BTCUSDT LONG\n{BODY}\nGolden cross on the daily").margin_mode is None


def test_leverage_above_the_profile_max_is_clamped_and_confirmed() -> None:
    signal = auto(f"BTCUSDT LONG\n{BODY}\nMargin mode: Cross (100.0X)")
    assert signal.leverage == 20 and signal.decision is Decision.CONFIRM
    assert "clamped" in signal.reason


@pytest.mark.parametrize(
    ("line", "size"),
    [("Amount: 5%", "5"), ("Wallet size 2%", "2"), ("SIZE: 1-4%", "1"), ("Amount: 40%", "20")],
)
def test_size_lines(line: str, size: str) -> None:
    """First option of a range, capped at the profile's 20%."""
    assert parse(f"BTCUSDT LONG\n{BODY}\n{line}").size_pct == Decimal(size)


# --- languages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "BTC/USDT ЛОНГ\nВход: 60000\nЦель: 62000\nСтоп: 58000",
        "BTC/USDT LONG\nEntrada: 60000\nObjetivo 1: 62000\nStop: 58000",
        "BTC/USDT LONG\nGiriş: 60000\nHedef 1: 62000\nStop: 58000",
    ],
)
def test_other_languages(text: str) -> None:
    signal = auto(text)
    assert signal.decision is Decision.EXECUTE and signal.entries == prices("60000")
    assert tp_prices(signal) == prices("62000") and signal.stop_loss == Decimal(58000)


# --- status posts, updates, chatter --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Target 2 hit", "TP1 reached ✅", "closed at stoploss", "Stopped out", "all targets done",
        "+120% profit", "#BTC/USDT Take-Profit target 3 ✅", "SL hit", "signal cancelled",
        "BTCUSDT LONG\nEntry 60000\nTP1 62000 ✅\nSL 58000",
    ],
)
def test_status_posts_never_open_a_trade(text: str) -> None:
    signal = auto(text)
    assert signal.kind is Kind.STATUS and signal.decision is Decision.REJECT
    assert signal.reason == STATUS_REASON


@pytest.mark.parametrize(
    ("text", "update"),
    [
        ("move SL to 59000", Update("move_stop", price=Decimal(59000))),
        ("new stop loss: 59500", Update("move_stop", price=Decimal(59500))),
        ("SL to breakeven", Update("breakeven")),
        ("move stop to entry", Update("breakeven")),
        ("close 50%", Update("close", fraction=Decimal("0.5"))),
        ("close half", Update("close", fraction=Decimal("0.5"))),
        ("close BTC", Update("close")),
        ("CLOSE", Update("close")),
        ("EXIT", Update("close")),
        ("cancel ETH signal", Update("cancel")),
    ],
)
def test_updates(text: str, update: Update) -> None:
    signal = parse(text)
    assert signal.kind is Kind.UPDATE and signal.update == update
    assert signal.decision is Decision.CONFIRM


def test_stop_moved_to_a_target_level_has_no_price() -> None:
    """``move SL to TP1`` names a level, not a price: the ``1`` of TP1 is not the new stop."""
    signal = auto("move sl to tp1 on BTCUSDT")
    assert signal.update == Update("move_stop") and signal.decision is Decision.CONFIRM


def test_update_executes_under_auto_only_when_it_names_its_symbol() -> None:
    assert auto("close BTC").decision is Decision.EXECUTE
    assert auto("close BTC").symbol == "BTCUSDT"
    bare = auto("CLOSE")
    assert bare.decision is Decision.CONFIRM and "no symbol" in bare.reason


def test_update_that_also_states_prices_needs_a_person() -> None:
    """``close BTC at 61000``: the price cannot be expressed by the update, so it is confirmed."""
    signal = auto("Close BTC at 61000")
    assert signal.update == Update("close") and signal.decision is Decision.CONFIRM


def test_a_percent_is_not_a_new_stop_price() -> None:
    assert auto("move SL to 50% on BTCUSDT").update == Update("move_stop")


def test_update_to_a_zero_stop_is_rejected() -> None:
    assert auto("move SL to 0 on BTCUSDT").decision is Decision.REJECT


def test_update_with_an_impossible_fraction_is_rejected() -> None:
    signal = auto("close 150% of BTC")
    assert signal.kind is Kind.UPDATE and signal.decision is Decision.REJECT


@pytest.mark.parametrize(
    "text", ["Join our VIP 🚀 https://t.me/x", "gm fam", "", "Long term I am bullish"]
)
def test_chatter_is_not_a_signal(text: str) -> None:
    signal = auto(text)
    assert signal.kind is Kind.UNKNOWN and signal.decision is Decision.REJECT


# --- rejection reasons -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("LONG\nEntry 60000\nTP 62000\nSL 58000", "no symbol"),
        ("BTCUSDT\nEntry 60000\nTP 62000\nSL 3%", "no side"),
        ("BTCUSDT LONG\nEntry 60000\nTP 62000", "no stop-loss"),
        ("BTCUSDT LONG\nEntry 60000\nTP 62000\nSL 61000", "stop-loss 61000 is not below"),
        ("BTCUSDT SHORT\nEntry 60000\nTP 58000\nSL 59000", "stop-loss 59000 is not above"),
        ("BTCUSDT LONG\nEntry 60000\nTP 59000\nSL 58000", "take-profit 59000 is not above"),
        ("BTCUSDT SHORT\nEntry 60000\nTP 61000\nSL 62000", "take-profit 61000 is not below"),
        ("BTCUSDT LONG\nEntry 60000\nTP 620000\nSL 58000", "more than 10x apart"),
        ("BTCUSDT LONG\nEntry 60.000.5\nTP 62000\nSL 58000", "unreadable number"),
        ("BTCUSDT LONG\nEntry 0\nTP 62000\nSL 58000", "is not a price"),
        ("BTCUSDT LONG\nEntry 60000\nTP 62000\nSL 58000\nLeverage 500x", "not a usable"),
        ("BTCUSDT LONG\nEntry 60000\nTP 62000\nSL 0%", "is not a stop"),
    ],
)
def test_rejection_reasons(text: str, reason: str) -> None:
    signal = auto(text)
    assert signal.decision is Decision.REJECT and reason in signal.reason


def test_side_inferred_from_prices_is_never_executed() -> None:
    signal = auto("BTCUSDT\nEntry 60000\nTP 62000\nSL 58000")
    assert signal.side == "LONG" and signal.decision is Decision.CONFIRM


def test_no_stop_allowed_by_the_profile_still_needs_a_person() -> None:
    signal = auto("BTCUSDT LONG\nEntry 60000\nTP 62000", require_stop_loss=False)
    assert signal.decision is Decision.CONFIRM and "no stop-loss" in signal.reason


# --- the CLI line ------------------------------------------------------------------------------


def test_main_parse_prints_one_json_line_with_the_verdict_first() -> None:
    line = main_parse("BTCUSDT LONG entry 60000 SL 58000 TP 62000", {"trust": "auto"})
    assert "\n" not in line
    data = json.loads(line)
    assert list(data)[:11] == [
        "decision", "kind", "symbol", "side", "entries", "entry_type", "stop_loss",
        "take_profits", "leverage", "margin_mode", "reason",
    ]
    assert data["decision"] == "execute" and data["entries"] == ["60000"]
    assert data["take_profits"] == [{"price": "62000", "share": None}]


def test_profile_overrides_are_checked() -> None:
    assert profile_from({"max_size_pct": 5}).max_size_pct == Decimal(5)
    with pytest.raises(ValueError, match="unknown profile fields: trsut"):
        profile_from({"trsut": "auto"})
    with pytest.raises(ValueError, match="zone_price must be one of"):
        profile_from({"zone_price": "cheapest"})
    with pytest.raises(ValueError):
        profile_from({"trust": "sometimes"})
