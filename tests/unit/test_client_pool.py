"""``ClientPool`` caches one client per account and credentials: a rotated key or only a new
secret gets a new client (a stale secret would sign every request wrongly)."""

from __future__ import annotations

import httpx

from tradewire.trading.clients import ClientPool


async def test_a_client_is_reused_until_the_key_or_only_the_secret_changes() -> None:
    async with httpx.AsyncClient() as http:
        pool = ClientPool("https://fapi.example", http)
        first = pool.get(1, "key-1", "secret-1")
        assert pool.get(1, "key-1", "secret-1") is first
        assert first.signs_with("key-1", "secret-1")

        new_secret = pool.get(1, "key-1", "secret-2")  # same key, rotated secret
        assert new_secret is not first
        assert new_secret.signs_with("key-1", "secret-2")
        assert not new_secret.signs_with("key-1", "secret-1")
        assert pool.get(1, "key-1", "secret-2") is new_secret

        new_key = pool.get(1, "key-2", "secret-2")
        assert new_key is not new_secret and new_key.signs_with("key-2", "secret-2")
        assert pool.get(2, "key-2", "secret-2") is not new_key  # one client per account


async def test_the_pool_keeps_no_copy_of_the_secret() -> None:
    """The cache holds clients only (the secret stays inside the client that signs with it)."""
    async with httpx.AsyncClient() as http:
        pool = ClientPool("https://fapi.example", http)
        pool.get(1, "key-1", "very-secret")
        assert "very-secret" not in repr(vars(pool))
