"""Shard mapping and the embedded shard ownership (``streams.shards``)."""

from __future__ import annotations

from collections import Counter

import pytest

from tradewire.config import Settings
from tradewire.errors import ConfigError
from tradewire.streams.shards import DEFAULT_SHARDS, LocalShards, create_shards, shard_of
from tradewire.streams.shards_redis import RedisShards


def test_shard_of_is_stable_across_processes_and_versions() -> None:
    # Pinned values: a change of the hash would move every account to another pod at deploy.
    assert [shard_of(a) for a in (0, 1, 2, 42, 123_456_789)] == [117, 118, 108, 122, 49]
    assert shard_of(42, 16) == 10
    assert all(0 <= shard_of(a, 7) < 7 for a in range(1_000))


def test_shard_of_spreads_5000_accounts_evenly_over_256_shards() -> None:
    counts = Counter(shard_of(account) for account in range(1, 5_001))
    expected = 5_000 / DEFAULT_SHARDS  # ~19.5 accounts per shard
    assert len(counts) == DEFAULT_SHARDS  # no empty shard
    assert min(counts.values()) >= 5 and max(counts.values()) <= 40
    chi2 = sum((counts[s] - expected) ** 2 / expected for s in range(DEFAULT_SHARDS))
    assert chi2 < 320  # 255 degrees of freedom: a uniform hash stays below this (p > 0.003)


async def test_local_shards_own_everything_and_never_hand_over() -> None:
    shards = LocalShards("pod-1")
    await shards.start()
    assert shards.member == "pod-1" and shards.shards == DEFAULT_SHARDS
    assert shards.owned() is None  # None = every shard
    await shards.mark_ready(3)
    assert shards.draining() == {} and shards.ready_elsewhere(3) is False
    await shards.stop()
    assert shards.draining() == {}
    await shards.close()


def test_create_shards_is_local_without_a_redis_coordinator() -> None:
    for bus_url in ("embedded", "memory", "sqlite:///x.db", "amqp://g:g@127.0.0.1/"):
        shards = create_shards(Settings(bus_url=bus_url, lock_url="memory", stream_shards=64))
        assert isinstance(shards, LocalShards) and shards.shards == 64
    assert create_shards(Settings(bus_url="memory", stream_name="pod-7")).member == "pod-7"
    assert create_shards(Settings(bus_url="memory"), member="pod-8").member == "pod-8"


def test_create_shards_uses_the_bus_or_lock_redis() -> None:
    settings = Settings(
        bus_url="redis://127.0.0.1:6379/6", stream_name="pod-1", shard_lease_ttl_s=3.0,
        shard_lease_renew_s=1.0, handoff_timeout_s=9.0,
    )
    shards = create_shards(settings)  # constructing connects nothing
    assert isinstance(shards, RedisShards)
    assert (shards.member, shards.shards, shards.ttl_s, shards.renew_s) == ("pod-1", 256, 3, 1)
    assert shards.handoff_timeout_s == 9.0
    rabbit = Settings(bus_url="amqp://g:g@127.0.0.1/", lock_url="redis://127.0.0.1:6379/6")
    assert isinstance(create_shards(rabbit, "pod-2"), RedisShards)
    with pytest.raises(ConfigError):
        create_shards(Settings(bus_url="redis://127.0.0.1:6379/6", shard_lease_ttl_s=1.0,
                               shard_lease_renew_s=1.0))
