"""``POST /api/execute-trade`` end to end through the executor to the exchange simulator: what is
placed, what is refused, and what the operator sees afterwards."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from tests.integration.conftest import World, legs

from tradewire.domain import Leg, client_order_id

pytestmark = pytest.mark.timeout(20)

ETH_SIGNAL = {"symbol": "ETHUSDT", "stop_loss": "2900", "take_profit": "3200"}


def position(account: dict[str, Any], symbol: str) -> Decimal:
    """The account's position amount in ``symbol`` at the exchange (0 when flat)."""
    amounts = [Decimal(p["positionAmt"]) for p in account["positions"] if p["symbol"] == symbol]
    return sum(amounts, Decimal(0))


def protection(account: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The account's open conditional orders at the exchange, by order type."""
    return {algo["orderType"]: algo for algo in account["open_algo_orders"]}


def assert_flat(account: dict[str, Any]) -> None:
    """No position, no open order and no open conditional order at the exchange."""
    assert account["positions"] == []
    assert account["open_orders"] == []
    assert account["open_algo_orders"] == []


def outcomes_by_user(response: Any) -> dict[int, dict[str, Any]]:
    return {t["user_id"]: t for t in response.json()["trades"]}


# --- placement -----------------------------------------------------------------------------------


async def test_a_signal_opens_one_protected_position_per_subscribed_user(world: World) -> None:
    """Each active user gets one OPEN trade: a filled entry and a reduce-only STOP_MARKET and
    TAKE_PROFIT_MARKET at the exchange, carrying our deterministic client ids."""
    alice, alice_keys = await world.add_user("alice")
    bob, bob_keys = await world.add_user("bob")
    response = await world.send_signal("sig-open")
    assert response.status_code == 201
    assert response.json()["status"] == "accepted"
    trades = outcomes_by_user(response)
    assert set(trades) == {alice, bob}
    assert {t["status"] for t in trades.values()} == {"OPEN"}

    for user, keys in ((alice, alice_keys), (bob, bob_keys)):
        account_id = trades[user]["account_id"]
        account = await world.exchange_account(keys)
        assert position(account, "BTCUSDT") == Decimal("0.003")  # 200 USDT at 60000, floored
        assert account["leverage"]["BTCUSDT"] == 10
        algos = protection(account)
        assert set(algos) == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
        for kind, leg, trigger in (("STOP_MARKET", Leg.STOP_LOSS, "58000"),
                                   ("TAKE_PROFIT_MARKET", Leg.TAKE_PROFIT, "63000")):
            assert algos[kind]["reduceOnly"] is True and algos[kind]["side"] == "SELL"
            assert Decimal(algos[kind]["triggerPrice"]) == Decimal(trigger)
            assert algos[kind]["clientAlgoId"] == client_order_id("sig-open", account_id, leg)


async def test_a_trade_shows_its_three_legs_with_the_exchange_ids(world: World) -> None:
    """``GET /api/trades/{id}`` lists the entry with its exchange order id and both protective
    orders with the algo ids the exchange gave them."""
    _, keys = await world.add_user("alice")
    [outcome] = (await world.send_signal("sig-legs")).json()["trades"]
    trade = await world.trade(outcome["trade_id"])
    assert trade["status"] == "OPEN" and trade["symbol"] == "BTCUSDT" and trade["side"] == "LONG"
    assert Decimal(trade["quantity"]) == Decimal("0.003")
    orders = legs(trade)
    assert set(orders) == {"ENTRY", "SL", "TP"}
    assert orders["ENTRY"]["type"] == "MARKET" and orders["ENTRY"]["exchange_order_id"]
    algos = protection(await world.exchange_account(keys))
    assert orders["SL"]["algo_id"] == algos["STOP_MARKET"]["algoId"]
    assert orders["TP"]["algo_id"] == algos["TAKE_PROFIT_MARKET"]["algoId"]
    assert {o["status"] for o in orders.values()} == {"PLACED"}
    assert all(o["error"] is None for o in orders.values())


async def test_the_same_signal_id_twice_opens_nothing_more(world: World) -> None:
    """A repeated ``signal_id`` answers 200 "duplicate" with the first trades, and the exchange
    sees no new order and no change of position."""
    _, keys = await world.add_user("alice")
    first = await world.send_signal("sig-twice")
    before = await world.exchange_account(keys)

    again = await world.send_signal("sig-twice")
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert [t["trade_id"] for t in again.json()["trades"]] == [
        t["trade_id"] for t in first.json()["trades"]
    ]
    after = await world.exchange_account(keys)
    assert position(after, "BTCUSDT") == position(before, "BTCUSDT") == Decimal("0.003")
    assert after["open_orders"] == before["open_orders"]
    assert after["open_algo_orders"] == before["open_algo_orders"]
    assert len(await world.trades()) == 1


async def test_simultaneous_deliveries_of_one_signal_open_one_position(world: World) -> None:
    """Three concurrent requests with one ``signal_id``: one is accepted (201), the others are
    duplicates (200) naming the same trade, and the exchange holds a single position."""
    _, keys = await world.add_user("alice")
    answers = await asyncio.gather(*(world.send_signal("sig-race") for _ in range(3)))
    assert sorted(a.status_code for a in answers) == [200, 200, 201]
    assert {t["trade_id"] for a in answers for t in a.json()["trades"]} == {
        t["id"] for t in await world.trades()
    }
    account = await world.exchange_account(keys)
    assert position(account, "BTCUSDT") == Decimal("0.003")
    assert len(account["open_algo_orders"]) == 2


async def test_a_retried_signal_is_a_duplicate_even_after_the_market_moved(world: World) -> None:
    """Re-sending a signal that was already executed answers 200 "duplicate" with its trades even
    when the mark has since moved past its stop-loss, and places nothing."""
    _, keys = await world.add_user("alice")
    first = await world.send_signal("sig-retry-late")
    await world.set_mark("BTCUSDT", "57500")  # the stop has triggered at the exchange meanwhile
    before = await world.exchange_account(keys)

    again = await world.send_signal("sig-retry-late")
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    assert [t["trade_id"] for t in again.json()["trades"]] == [
        t["trade_id"] for t in first.json()["trades"]
    ]
    after = await world.exchange_account(keys)
    assert after["positions"] == before["positions"]
    assert after["open_orders"] == before["open_orders"]


# --- invalid signals -----------------------------------------------------------------------------


async def test_a_stop_above_the_mark_of_a_market_long_is_rejected_and_places_nothing(
    world: World,
) -> None:
    """A market LONG whose stop-loss is above the mark answers 422 naming ``stop_loss``; no trade
    is recorded, nothing reaches the exchange, and the id stays free for a corrected signal."""
    _, keys = await world.add_user("alice")
    response = await world.send_signal("sig-bad-stop", stop_loss="61000")
    assert response.status_code == 422
    assert response.json()["field"] == "stop_loss"
    assert await world.trades() == []
    assert_flat(await world.exchange_account(keys))

    corrected = await world.send_signal("sig-bad-stop")
    assert corrected.status_code == 201


async def test_an_unknown_symbol_is_rejected_by_name(world: World) -> None:
    """A symbol the exchange does not list answers 422 naming ``symbol``; nothing is recorded."""
    await world.add_user("alice")
    response = await world.send_signal("sig-foo", symbol="FOOUSDT")
    assert response.status_code == 422
    assert response.json()["field"] == "symbol"
    assert await world.trades() == []


async def test_a_signal_naming_an_unknown_user_is_rejected_and_places_nothing(
    world: World,
) -> None:
    """``users`` naming a user that does not exist answers 422 naming ``users``; no other listed
    user is traded."""
    alice, keys = await world.add_user("alice")
    response = await world.send_signal("sig-ghost", users=[alice, 999])
    assert response.status_code == 422
    assert response.json()["field"] == "users"
    assert "999" in response.json()["detail"]
    assert await world.trades() == []
    assert_flat(await world.exchange_account(keys))


async def test_a_leverage_of_zero_is_rejected_by_name(world: World) -> None:
    """Leverage 0 answers 422 naming ``leverage``."""
    await world.add_user("alice")
    response = await world.send_signal("sig-lev0", leverage=0)
    assert response.status_code == 422
    assert response.json()["field"] == "leverage"
    assert await world.trades() == []


# --- refusals, per account -----------------------------------------------------------------------


async def test_a_size_below_the_minimum_notional_fails_the_trade_and_sends_nothing(
    world: World,
) -> None:
    """10 USDT of ETHUSDT (minimum notional 20) fails the trade with an error naming the notional,
    and no order reaches the exchange."""
    _, keys = await world.add_user("alice")
    response = await world.send_signal("sig-tiny", size_usdt="10", **ETH_SIGNAL)
    assert response.status_code == 201
    [outcome] = response.json()["trades"]
    assert outcome["status"] == "FAILED"
    assert "notional" in outcome["error"]
    trade = await world.trade(outcome["trade_id"])
    assert trade["status"] == "FAILED" and "notional" in trade["error"]
    assert legs(trade)["ENTRY"]["status"] == "REJECTED"
    assert_flat(await world.exchange_account(keys))


async def test_insufficient_margin_fails_only_that_users_trade(world: World) -> None:
    """On an account holding 10 USDT the exchange refuses a 5000 USDT entry with -2019: that
    trade FAILS with the exchange's reason while a funded user of the same signal is OPEN."""
    broke, broke_keys = await world.add_user("broke", balance="10")
    funded, funded_keys = await world.add_user("funded")
    response = await world.send_signal("sig-margin", size_usdt="5000")
    assert response.status_code == 201
    trades = outcomes_by_user(response)
    assert trades[broke]["status"] == "FAILED"
    assert "-2019" in trades[broke]["error"]
    assert "Margin is insufficient" in trades[broke]["error"]
    assert trades[funded]["status"] == "OPEN"
    assert_flat(await world.exchange_account(broke_keys))
    funded_account = await world.exchange_account(funded_keys)
    assert position(funded_account, "BTCUSDT") == Decimal("0.083")
    assert set(protection(funded_account)) == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}


async def test_a_refused_stop_loss_closes_the_position_and_fails_the_trade(world: World) -> None:
    """When the exchange refuses the stop-loss after the market entry filled, the position is
    closed, no conditional order is left, and the trade FAILS saying the stop-loss was refused."""
    _, keys = await world.add_user("alice")
    world.exchange_refuses("STOP_MARKET")
    response = await world.send_signal("sig-no-stop")
    assert response.status_code == 201
    [outcome] = response.json()["trades"]
    assert outcome["status"] == "FAILED"
    assert "stop-loss refused" in outcome["error"]
    assert_flat(await world.exchange_account(keys))
    trade = await world.trade(outcome["trade_id"])
    assert trade["status"] == "FAILED" and "stop-loss refused" in trade["error"]


async def test_a_refused_take_profit_keeps_the_trade_open_under_its_stop(world: World) -> None:
    """When only the take-profit is refused the trade stays OPEN, protected by its stop-loss, and
    its TP leg is FAILED with the exchange's reason."""
    _, keys = await world.add_user("alice")
    world.exchange_refuses("TAKE_PROFIT_MARKET")
    response = await world.send_signal("sig-no-tp")
    assert response.status_code == 201
    [outcome] = response.json()["trades"]
    assert outcome["status"] == "OPEN"
    account = await world.exchange_account(keys)
    assert position(account, "BTCUSDT") == Decimal("0.003")
    assert set(protection(account)) == {"STOP_MARKET"}
    orders = legs(await world.trade(outcome["trade_id"]))
    assert orders["TP"]["status"] == "FAILED"
    assert "take-profit refused" in orders["TP"]["error"] and "-2021" in orders["TP"]["error"]
    assert orders["SL"]["status"] == "PLACED" and orders["SL"]["algo_id"]



async def test_a_refused_stop_loss_is_recorded_on_its_leg(world: World) -> None:
    """The operator's view of a trade whose stop-loss was refused shows the SL leg FAILED with the
    exchange's reason, as it does for a refused take-profit."""
    await world.add_user("alice")
    world.exchange_refuses("STOP_MARKET")
    [outcome] = (await world.send_signal("sig-sl-leg")).json()["trades"]
    stop = legs(await world.trade(outcome["trade_id"]))["SL"]
    assert stop["status"] == "FAILED"
    assert stop["error"] is not None and "-2021" in stop["error"]


async def test_a_users_caps_lower_leverage_and_size_for_that_user_only(world: World) -> None:
    """A user with max_leverage 3 and max_position_usdt 100 gets 3x and half the position of a
    200 USDT signal at 10x; a user without caps gets the signal as sent."""
    capped, capped_keys = await world.add_user("careful", max_leverage=3,
                                               max_position_usdt="100")
    free, free_keys = await world.add_user("bold")
    response = await world.send_signal("sig-caps")
    assert response.status_code == 201
    careful = await world.exchange_account(capped_keys)
    bold = await world.exchange_account(free_keys)
    assert careful["leverage"]["BTCUSDT"] == 3 and bold["leverage"]["BTCUSDT"] == 10
    assert position(careful, "BTCUSDT") == Decimal("0.001")  # 100 USDT at 60000, floored
    assert position(bold, "BTCUSDT") == Decimal("0.003")
    trades = outcomes_by_user(response)
    assert (await world.trade(trades[capped]["trade_id"]))["leverage"] == 3
    assert free in trades
