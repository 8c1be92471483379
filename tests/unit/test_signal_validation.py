"""Signal validation: clear errors naming the field, nothing guessed."""

from decimal import Decimal

import pytest
from pydantic import ValidationError

from tradewire.domain import Side, Target
from tradewire.errors import InvalidInput
from tradewire.trading.signals import SignalIn, check_prices


def targets(*prices: int) -> tuple[Target, ...]:
    return tuple(Target(Decimal(p), Decimal(1) / len(prices)) for p in prices)

BASE = {
    "signal_id": "s1", "symbol": "btcusdt", "side": "long", "entry": "market",
    "stop_loss": "58000", "take_profit": "63000", "leverage": 10, "size_usdt": "100",
}


def test_a_complete_signal_is_normalised() -> None:
    """Symbol upper-cased, BUY/LONG unified, market entry has no price."""
    signal = SignalIn.model_validate({**BASE, "side": "BUY"}).to_signal()
    assert signal.symbol == "BTCUSDT" and signal.side is Side.LONG
    assert signal.entry_price is None and signal.stop_loss == Decimal("58000")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"side": "sideways"}, "side"),
        ({"symbol": "BTC"}, "symbol"),
        ({"stop_loss": "-1"}, "stop_loss"),
        ({"stop_loss": "abc"}, "stop_loss"),
        ({"leverage": 500}, "leverage"),
        ({"size_usdt": 0}, "size_usdt"),
        ({"users": []}, "users"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_fields_are_named(change: dict[str, object], field: str) -> None:
    """Each invalid field is reported by name."""
    with pytest.raises(ValidationError) as info:
        SignalIn.model_validate({**BASE, **change})
    assert field in str(info.value)


@pytest.mark.parametrize("missing", ["side", "stop_loss", "take_profit", "signal_id", "size_usdt"])
def test_no_defaults_for_what_moves_money(missing: str) -> None:
    """A signal without side, stop-loss, target, id or size is rejected, never guessed."""
    body = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ValidationError) as info:
        SignalIn.model_validate(body)
    assert missing in str(info.value)


def test_limit_entry_with_stop_above_it_is_rejected_for_a_long() -> None:
    """A LONG whose stop is above its entry is refused, naming stop_loss."""
    with pytest.raises(ValidationError, match="stop_loss is on the wrong side"):
        SignalIn.model_validate({**BASE, "entry": "57000"})


def test_short_prices_mirror_long_ones() -> None:
    """For a SHORT the target is below and the stop above the price."""
    check_prices(Side.SHORT, Decimal(100), Decimal(110), targets(90), reference="mark")
    with pytest.raises(InvalidInput) as info:
        check_prices(Side.SHORT, Decimal(100), Decimal(110), targets(90, 105), reference="mark")
    assert info.value.field == "take_profit"


def test_absurd_price_ratios_are_rejected() -> None:
    """Prices more than 10x apart are refused as absurd."""
    with pytest.raises(InvalidInput, match="10x"):
        check_prices(Side.LONG, Decimal(100), Decimal(1), targets(200), reference="mark")


def test_several_targets_split_the_position_evenly_unless_shares_are_given() -> None:
    """``take_profits`` takes prices or {price, share}; missing shares split what is left."""
    signal = SignalIn.model_validate({
        **{k: v for k, v in BASE.items() if k != "take_profit"},
        "take_profits": ["61000", {"price": "62000", "share": "0.5"}, "63000"],
    }).to_signal()
    assert [t.price for t in signal.targets] == [Decimal(61000), Decimal(62000), Decimal(63000)]
    assert [t.share for t in signal.targets] == [Decimal("0.25"), Decimal("0.5"), Decimal("0.25")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"take_profits": ["61000"]}, "exactly one of take_profit or take_profits"),
        ({"take_profit": None, "take_profits": []}, "at least one target"),
        ({"take_profit": None, "take_profits": [{"price": 61000, "share": 0.7},
                                                {"price": 62000, "share": 0.7}]}, "add up to 1"),
        ({"take_profit": None, "take_profits": [str(61000 + i) for i in range(11)]}, "at most 10"),
        ({"take_profit": None, "take_profits": ["61000", "59000"]}, "wrong side"),
    ],
)
def test_bad_target_lists_are_rejected(change: dict[str, object], message: str) -> None:
    """Both target fields, no target, shares over 100%, more than ten, or one on the wrong side
    of the entry are refused with a clear message."""
    body = {**BASE, "entry": "60000", **change}
    if body.get("take_profit") is None:
        body.pop("take_profit", None)
    with pytest.raises(ValidationError, match=message):
        SignalIn.model_validate(body)
