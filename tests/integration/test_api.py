"""The operator HTTP API: authentication, users and their secrets, trade listings."""

from __future__ import annotations

import logging

import pytest
from tests.integration.conftest import World, body_text, signal

from tradewire.store.users import mask

pytestmark = pytest.mark.timeout(20)


# --- operator authentication --------------------------------------------------------------------


async def test_a_request_without_a_token_is_refused_with_a_bearer_challenge(world: World) -> None:
    """An operator endpoint called with no token answers 401 and asks for a Bearer token."""
    async with world.caller() as client:
        response = await client.get("/api/users")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_a_request_with_a_wrong_token_is_refused(world: World) -> None:
    """An operator endpoint called with a wrong bearer token answers 401 and does nothing."""
    async with world.caller({"Authorization": "Bearer not-the-token"}) as client:
        response = await client.post("/api/execute-trade", json=signal("no-auth-1"))
    assert response.status_code == 401
    assert await world.trades() == []


async def test_the_health_check_needs_no_token(world: World) -> None:
    """``/healthz`` answers 200 "ok" to anyone."""
    async with world.caller() as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


# --- users ---------------------------------------------------------------------------------------


async def test_creating_a_user_never_returns_the_secret_and_masks_the_key(world: World) -> None:
    """``POST /api/users`` answers 201 with the user; the API secret appears nowhere in the answer
    and the API key only masked."""
    keys = await world.new_account()
    response = await world.api.post("/api/users", json={
        "name": "alice", "api_key": keys.api_key, "api_secret": keys.api_secret,
        "discord_webhook_url": "https://discord.example/hooks/1",
    })
    assert response.status_code == 201
    user = response.json()
    assert user["name"] == "alice" and user["active"] is True and user["discord_webhook"] is True
    assert user["api_key"] == mask(keys.api_key) != keys.api_key
    assert keys.api_secret not in response.text
    assert keys.api_key not in response.text


async def test_a_taken_user_name_is_a_conflict(world: World) -> None:
    """Creating a second user with an existing name answers 409 (the name check)."""
    await world.add_user("bob")
    keys = await world.new_account()
    response = await world.api.post("/api/users", json={
        "name": "bob", "api_key": keys.api_key, "api_secret": keys.api_secret,
    })
    assert response.status_code == 409
    assert len((await world.api.get("/api/users")).json()) == 1


async def test_an_exchange_key_registered_twice_is_a_conflict(world: World) -> None:
    """A second user with an already registered API key answers 409: one signal must never
    open two positions on the same exchange account."""
    keys = await world.new_account()
    first = await world.api.post("/api/users", json={
        "name": "dave", "api_key": keys.api_key, "api_secret": keys.api_secret})
    assert first.status_code == 201
    second = await world.api.post("/api/users", json={
        "name": "dave-again", "api_key": keys.api_key, "api_secret": keys.api_secret})
    assert second.status_code == 409
    assert "already registered" in second.json()["detail"]
    assert keys.api_key not in second.text and keys.api_secret not in second.text
    assert [u["name"] for u in (await world.api.get("/api/users")).json()] == ["dave"]


async def test_a_webhook_that_is_not_an_http_url_is_rejected_by_name(world: World) -> None:
    """A ``discord_webhook_url`` that is not http(s) answers 422 naming that field, and the
    rejection does not echo the secret."""
    keys = await world.new_account()
    response = await world.api.post("/api/users", json={
        "name": "carol", "api_key": keys.api_key, "api_secret": keys.api_secret,
        "discord_webhook_url": "ftp://example.com/hook",
    })
    assert response.status_code == 422
    assert response.json()["field"] == "discord_webhook_url"
    assert keys.api_secret not in response.text
    assert (await world.api.get("/api/users")).json() == []


async def test_a_user_without_an_api_secret_is_rejected_by_name(world: World) -> None:
    """A user body without ``api_secret`` answers 422 naming ``api_secret``."""
    keys = await world.new_account()
    response = await world.api.post("/api/users", json={"name": "dan", "api_key": keys.api_key})
    assert response.status_code == 422
    assert response.json()["field"] == "api_secret"


async def test_users_are_listed_without_their_keys(world: World) -> None:
    """``GET /api/users`` lists every user in creation order, with no key or secret."""
    alice, alice_keys = await world.add_user("alice")
    bob, _ = await world.add_user("bob")
    response = await world.api.get("/api/users")
    assert response.status_code == 200
    assert [(u["id"], u["name"], u["active"]) for u in response.json()] == [
        (alice, "alice", True), (bob, "bob", True),
    ]
    assert alice_keys.api_secret not in response.text and alice_keys.api_key not in response.text


async def test_a_disabled_user_gets_no_trades_until_enabled_again(world: World) -> None:
    """A signal for all users skips a disabled user; once enabled again the user is traded."""
    alice, _ = await world.add_user("alice")
    bob, _ = await world.add_user("bob")
    disabled = await world.api.post(f"/api/users/{bob}/disable")
    assert disabled.status_code == 200 and disabled.json()["active"] is False

    first = await world.send_signal("while-bob-disabled")
    assert first.status_code == 201
    assert [t["user_id"] for t in first.json()["trades"]] == [alice]

    enabled = await world.api.post(f"/api/users/{bob}/enable")
    assert enabled.status_code == 200 and enabled.json()["active"] is True
    second = await world.send_signal("after-bob-enabled")
    assert sorted(t["user_id"] for t in second.json()["trades"]) == [alice, bob]


async def test_disabling_an_unknown_user_is_not_found(world: World) -> None:
    """Disabling a user id that does not exist answers 404."""
    response = await world.api.post("/api/users/999/disable")
    assert response.status_code == 404


# --- trades --------------------------------------------------------------------------------------


async def test_trades_are_filtered_by_user_status_and_symbol(world: World) -> None:
    """``GET /api/trades`` narrows by ``user_id``, ``status`` and ``symbol`` (any case), newest
    first."""
    alice, _ = await world.add_user("alice")
    bob, _ = await world.add_user("bob")
    both_btc = (await world.send_signal("btc-both")).json()["trades"]
    alice_eth_too_small = (await world.send_signal(
        "eth-alice-small", symbol="ETHUSDT", stop_loss="2900", take_profit="3200",
        size_usdt="10", users=[alice],
    )).json()["trades"]
    bob_eth = (await world.send_signal(
        "eth-bob", symbol="ETHUSDT", stop_loss="2900", take_profit="3200", size_usdt="100",
        users=[bob],
    )).json()["trades"]
    [alice_btc] = [t["trade_id"] for t in both_btc if t["user_id"] == alice]
    [alice_eth] = [t["trade_id"] for t in alice_eth_too_small]
    [bob_eth_id] = [t["trade_id"] for t in bob_eth]

    def ids(rows: list[dict[str, object]]) -> list[object]:
        return [row["id"] for row in rows]

    assert ids(await world.trades(user_id=alice)) == [alice_eth, alice_btc]
    assert ids(await world.trades(status="FAILED")) == [alice_eth]
    assert ids(await world.trades(symbol="ethusdt")) == [bob_eth_id, alice_eth]
    assert ids(await world.trades(user_id=bob, symbol="ETHUSDT", status="OPEN")) == [bob_eth_id]
    assert len(await world.trades(status="OPEN")) == 3


async def test_an_unknown_trade_is_not_found(world: World) -> None:
    """``GET /api/trades/{id}`` of an id that does not exist answers 404."""
    response = await world.api.get("/api/trades/4242")
    assert response.status_code == 404


# --- secrets in logs -----------------------------------------------------------------------------


async def test_api_secrets_are_never_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Creating users and trading for them — including an exchange refusal — writes the API
    secret into no log record, even at DEBUG."""
    caplog.set_level(logging.DEBUG)
    _, funded = await world.add_user("alice")
    _, broke = await world.add_user("bob", balance="10")
    response = await world.send_signal("logged-signal", size_usdt="5000")
    assert response.status_code == 201
    assert sorted(t["status"] for t in response.json()["trades"]) == ["FAILED", "OPEN"]

    assert any(r.name.startswith("tradewire.") for r in caplog.records), "nothing to check"
    for record in caplog.records:
        written = " ".join([
            record.getMessage(), repr(record.args), repr(getattr(record, "fields", None)),
            record.exc_text or "",
        ])
        for secret in (funded.api_secret, broke.api_secret):
            assert secret not in written, f"secret logged by {record.name}: {record.msg!r}"
    assert funded.api_secret not in body_text(response)
