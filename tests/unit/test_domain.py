"""Domain helpers."""

import re

from tradewire.domain import Leg, client_order_id, leg_of_client_id


def test_client_ids_are_deterministic_and_fit_the_exchange_rule() -> None:
    """The same signal, account and leg always give the same valid client id."""
    first = client_order_id("sig-1", 7, Leg.STOP_LOSS)
    assert first == client_order_id("sig-1", 7, Leg.STOP_LOSS)
    assert first != client_order_id("sig-1", 8, Leg.STOP_LOSS)
    for leg in Leg:
        cid = client_order_id("a very long signal id " * 5, 123456, leg)
        assert re.fullmatch(r"[\.A-Z\:/a-z0-9_-]{1,36}", cid)
        assert leg_of_client_id(cid) is leg


def test_foreign_client_ids_have_no_leg() -> None:
    """Orders we did not place are recognised as foreign."""
    assert leg_of_client_id("web_abc123") is None
    assert leg_of_client_id("autoclose-123") is None
