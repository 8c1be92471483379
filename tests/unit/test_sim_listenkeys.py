"""The simulator's listenKey registry: ``holders`` (cached) always equals a fresh walk."""

from __future__ import annotations

import contextlib
import random

import pytest

from tradewire.simulator.errors import SimError
from tradewire.simulator.listenkeys import ListenKeys


def walk(keys: ListenKeys, now: int) -> list[str]:
    return [api_key for api_key, key in keys._active.items() if key.expires_at > now]


def test_holders_follow_issue_expiry_close_and_time() -> None:
    keys = ListenKeys(ttl_ms=1_000)
    keys.start("a", 0)
    keys.start("b", 100)
    assert keys.holders(200) == ["a", "b"]
    assert keys.holders(999) == ["a", "b"]
    assert keys.holders(1_000) == ["b"]  # a's key expired at 1,000 without expire_due
    keys.keepalive("b", 900)  # b now lasts until 1,900
    assert keys.holders(1_500) == ["b"]
    keys.start("a", 1_500)  # a new key for a
    assert keys.holders(1_500) == ["a", "b"]
    keys.close("b")
    assert keys.holders(1_600) == ["a"]
    assert [api_key for api_key, _ in keys.expire_due(2_500)] == ["a"]
    assert keys.holders(2_500) == []


@pytest.mark.parametrize("seed", range(5))
def test_holders_equal_a_fresh_walk_under_random_operations(seed: int) -> None:
    rng = random.Random(seed)
    keys = ListenKeys(ttl_ms=500)
    api_keys = [f"k{i}" for i in range(20)]
    now = 0
    for _ in range(3_000):
        now += rng.choice((0, 0, 1, 7, 50, 200))
        op = rng.random()
        api_key = rng.choice(api_keys)
        if op < 0.3:
            keys.start(api_key, now)
        elif op < 0.55:
            with contextlib.suppress(SimError):  # no live key: -1125, as the exchange answers
                keys.keepalive(api_key, now)
        elif op < 0.65:
            keys.close(api_key)
        elif op < 0.75:
            keys.expire_due(now)
        assert keys.holders(now) == walk(keys, now)
