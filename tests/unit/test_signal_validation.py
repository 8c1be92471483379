"""Signal validation: clear errors naming the field, nothing guessed."""

from decimal import Decimal

import pytest
from pydantic import ValidationError

from tradewire.domain import Side
from tradewire.errors import InvalidInput
from tradewire.trading.signals import SignalIn, check_prices

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
    check_prices(Side.SHORT, Decimal(100), Decimal(110), Decimal(90), reference="mark")
    with pytest.raises(InvalidInput) as info:
        check_prices(Side.SHORT, Decimal(100), Decimal(110), Decimal(105), reference="mark")
    assert info.value.field == "take_profit"


def test_absurd_price_ratios_are_rejected() -> None:
    """Prices more than 10x apart are refused as absurd."""
    with pytest.raises(InvalidInput, match="10x"):
        check_prices(Side.LONG, Decimal(100), Decimal(1), Decimal(200), reference="mark")
