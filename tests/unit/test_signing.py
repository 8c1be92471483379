"""Request signing (reference §6)."""

import hashlib
import hmac
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest

from tradewire.exchange.signing import encode_params, format_value, sign, signed_query

DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_PAYLOAD = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    "&recvWindow=5000&timestamp=1591702613943"
)
DOC_SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


def test_sign_matches_the_exchange_documentation_example() -> None:
    """The HMAC example of the Binance docs signs to the documented hex digest."""
    assert sign(DOC_SECRET, DOC_PAYLOAD) == DOC_SIGNATURE


def test_signed_query_puts_timestamp_recv_window_then_signature_last() -> None:
    """Parameters keep their order, then timestamp and recvWindow, and the signature comes last."""
    query = signed_query(
        {"symbol": "BTCUSDT", "side": "BUY", "quantity": Decimal("0.010")},
        secret="s3cret",
        timestamp_ms=1767000000000,
        recv_window_ms=5000,
    )
    keys = [key for key, _ in parse_qsl(query)]
    assert keys == ["symbol", "side", "quantity", "timestamp", "recvWindow", "signature"]
    unsigned, signature = query.rsplit("&signature=", 1)
    assert (
        unsigned == "symbol=BTCUSDT&side=BUY&quantity=0.01&timestamp=1767000000000&recvWindow=5000"
    )
    expected = hmac.new(b"s3cret", unsigned.encode(), hashlib.sha256).hexdigest()
    assert signature == expected


def test_signature_covers_query_and_body_concatenated_directly() -> None:
    """With a body, the signed payload is query string + body with nothing in between."""
    query = signed_query({"a": 1}, secret="k", timestamp_ms=5, recv_window_ms=10, body="b=2")
    unsigned, signature = query.rsplit("&signature=", 1)
    assert signature == sign("k", unsigned + "b=2")


def test_parameters_have_one_wire_form() -> None:
    """Booleans are lowercase, decimals plain without exponent or trailing zeros, None skipped."""
    assert format_value(True) == "true"
    assert format_value(Decimal("1E+2")) == "100"
    assert format_value(Decimal("0.0100")) == "0.01"
    assert format_value(Decimal("-0")) == "0"
    assert encode_params({"a": None, "b": "x:y", "c": 3}) == "b=x%3Ay&c=3"
    with pytest.raises(TypeError):
        format_value(1.5)  # type: ignore[arg-type]
