"""Consumer policy on every backend: per-key order, retries in place, DLQ, redelivery.

Each test runs on every backend of ``test_bus.BACKENDS`` (see ``test_bus.open_bus``), with short
retry delays, and uses ``Consumer.drain`` instead of sleeps; and in both consumer modes: one
task per lane, and batches of lane heads (``batch_handler``, here each event of a batch run by
the same handler, ``bus.batch_lanes.one_by_one``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import pytest
from test_bus import BACKENDS, PARTITIONS, envelope, fetch_all, open_bus

from tradewire.bus.base import Bus, Envelope, partition_for
from tradewire.bus.batch_lanes import one_by_one
from tradewire.bus.consumer import Consumer, Handler
from tradewire.errors import DependencyDown, PermanentError, TransientError


@pytest.fixture(params=BACKENDS)
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    async with open_bus(request.param, request) as opened:
        yield opened


_MODE = {"batches": False}


@pytest.fixture(autouse=True, params=["lanes", "batches"])
def consumer_mode(request: pytest.FixtureRequest) -> None:
    _MODE["batches"] = request.param == "batches"


def make_consumer(bus: Bus, handler: Handler, **options: Any) -> Consumer:
    defaults: dict[str, Any] = {
        "name": "w1", "retry_delays_s": (0.05, 0.1), "redelivery_idle_s": 0.3, "block_ms": 50,
    }
    if _MODE["batches"]:
        defaults.update(batch_handler=one_by_one(handler), batch_max=8)
    return Consumer(bus, handler, **{**defaults, **options})


def symbols_in_partition_of(key_env: Envelope, count: int) -> list[str]:
    """Symbols of ``key_env``'s account whose key lands in the same partition."""
    target = partition_for(key_env.key, PARTITIONS)
    symbols = (f"C{i}USDT" for i in range(10_000))
    same = (s for s in symbols if partition_for(f"{key_env.account_id}:{s}", PARTITIONS) == target)
    return [next(same) for _ in range(count)]


async def test_each_key_is_processed_in_order_while_keys_run_concurrently(bus: Bus) -> None:
    """5 keys x 50 events with random handler delays and some failed first attempts: every
    key sees its events in publish order, one at a time, while different keys overlap."""
    for seq in range(50):
        for account in range(1, 6):
            await bus.publish(envelope(account, seq=seq))
    seen: dict[str, list[int]] = defaultdict(list)
    failed_once: set[str] = set()
    active: set[str] = set()
    peak = 0

    async def handler(env: Envelope) -> None:
        nonlocal peak
        assert env.key not in active, "two events of one key ran at the same time"
        active.add(env.key)
        peak = max(peak, len(active))
        try:
            await asyncio.sleep(random.uniform(0, 0.003))
            if env.event["seq"] % 10 == 3 and env.event_id not in failed_once:
                failed_once.add(env.event_id)
                raise TransientError("first attempt fails")
            seen[env.key].append(env.event["seq"])
        finally:
            active.discard(env.key)

    consumer = make_consumer(bus, handler, retry_delays_s=(0.02,), concurrency=32)
    await consumer.drain(15)
    assert {key: seqs == list(range(50)) for key, seqs in seen.items()} == {
        f"{account}:BTCUSDT": True for account in range(1, 6)
    }
    assert peak > 1
    assert (consumer.stats.processed, consumer.stats.retried) == (250, 25)
    assert await bus.pending() == 0


async def test_a_failed_attempt_is_retried_in_place_after_growing_delays(bus: Bus) -> None:
    """A handler failing twice then succeeding runs 3 times, waiting ~delays[0] then ~delays[1]."""
    loop = asyncio.get_running_loop()
    attempts: list[float] = []

    async def handler(env: Envelope) -> None:
        attempts.append(loop.time())
        if len(attempts) < 3:
            raise TransientError("database unavailable")

    await bus.publish(envelope())
    consumer = make_consumer(bus, handler, retry_delays_s=(0.05, 0.1))
    await consumer.drain(5)
    gaps = [later - earlier for earlier, later in pairwise(attempts)]
    assert len(attempts) == 3
    for gap, delay in zip(gaps, (0.05, 0.1), strict=True):
        assert delay - 0.005 <= gap < delay * (1 + consumer.jitter) + 0.05
    assert (consumer.stats.processed, consumer.stats.retried) == (1, 2)
    assert await bus.dlq_size() == 0 and await bus.pending() == 0


async def test_after_the_last_failed_attempt_the_message_is_dead_lettered(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    """Three failures: one DLQ entry with attempts=3 and the error, the original acked, and an
    error log carrying userId, symbol and error."""
    calls = 0

    async def handler(env: Envelope) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("order rejected by the exchange")

    sent = envelope(account_id=7, symbol="ETHUSDT")
    await bus.publish(sent)
    consumer = make_consumer(bus, handler, retry_delays_s=(0.01, 0.02))
    with caplog.at_level(logging.ERROR, logger="tradewire.bus.consumer"):
        await consumer.drain(5)
    [letter] = await bus.dlq_list()
    assert (calls, letter.attempts, letter.error_type) == (3, 3, "RuntimeError")
    assert letter.error == "order rejected by the exchange"
    assert Envelope.decode(letter.body) == sent
    assert letter.first_failed_ms <= letter.last_failed_ms
    assert letter.extra["event_id"] == sent.event_id
    assert await bus.pending() == 0 and consumer.stats.dead_lettered == 1
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    fields = record.__dict__["fields"]
    assert (fields["userId"], fields["symbol"]) == (70, "ETHUSDT")
    assert "order rejected" in fields["error"]


async def test_a_failing_key_does_not_block_other_keys(bus: Bus) -> None:
    """While one key waits between retries, later events of other keys — in the same
    partition too — are processed."""
    loop = asyncio.get_running_loop()
    bad = envelope(1, "BTCUSDT")
    others = [envelope(1, s, seq=i) for i, s in enumerate(symbols_in_partition_of(bad, 3))]
    others += [envelope(account, seq=0) for account in (2, 3, 4)]
    await bus.publish(bad)
    for env in others:
        await bus.publish(env)
    bad_attempts: list[float] = []
    good_done: list[float] = []

    async def handler(env: Envelope) -> None:
        if env == bad:
            bad_attempts.append(loop.time())
            raise TransientError("still failing")
        good_done.append(loop.time())

    consumer = make_consumer(bus, handler, retry_delays_s=(0.2, 0.2))
    await consumer.drain(5)
    assert len(good_done) == len(others)
    assert max(good_done) < bad_attempts[1]
    assert await bus.dlq_size() == 1


async def test_messages_of_a_dead_consumer_are_reclaimed_by_another(bus: Bus) -> None:
    """A message fetched by a consumer that died before acking is processed by another
    consumer once it has been idle for ``redelivery_idle_s``."""
    await bus.publish(envelope(1))
    assert len(await fetch_all(bus, "dead")) == 1  # ... and the "dead" consumer never acks
    await bus.publish(envelope(2))
    seen: list[int] = []

    async def handler(env: Envelope) -> None:
        seen.append(env.account_id)

    consumer = make_consumer(bus, handler, name="alive", redelivery_idle_s=0.2)
    await consumer.drain(5)
    assert seen == [2, 1]
    assert (consumer.stats.processed, consumer.stats.reclaimed) == (2, 1)
    assert await bus.pending() == 0


async def test_a_malformed_body_is_dead_lettered_at_once_while_the_next_message_flows(
    bus: Bus,
) -> None:
    """A body that is not an envelope is permanent: it lands in the DLQ after one attempt
    (attempts=1, PermanentError), and the valid message behind it in the same partition is
    processed too."""
    good = envelope()
    await bus.publish_raw(partition_for(good.key, PARTITIONS), b"{not json")
    await bus.publish(good)
    handled: list[Envelope] = []

    async def handler(env: Envelope) -> None:
        handled.append(env)

    consumer = make_consumer(bus, handler, retry_delays_s=(5.0, 5.0))
    await consumer.drain(4)
    [letter] = await bus.dlq_list()
    assert (letter.body, letter.attempts, letter.error_type) == (b"{not json", 1, "PermanentError")
    assert handled == [good] and consumer.stats.retried == 0
    assert await bus.pending() == 0


async def test_a_permanent_error_is_dead_lettered_after_exactly_one_attempt(bus: Bus) -> None:
    """An event the handler rejects as permanent (e.g. the exchange's wire schema rejects it)
    is tried once and dead-lettered with its error type; nothing is retried."""
    calls = 0

    async def handler(env: Envelope) -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("ORDER_TRADE_UPDATE.o.X: expected a status, got None")

    await bus.publish(envelope())
    consumer = make_consumer(bus, handler, retry_delays_s=(5.0, 5.0))
    await consumer.drain(4)
    [letter] = await bus.dlq_list()
    assert (calls, letter.attempts, letter.error_type) == (1, 1, "PermanentError")
    assert consumer.stats.retried == 0 and await bus.pending() == 0


async def test_a_dependency_outage_pauses_consumption_and_loses_nothing(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    """While the database is down (``DependencyDown`` for ~0.6 s) no attempt is counted and
    nothing is dead-lettered — even with max_attempts=1 — and no key advances: a database
    outage affects every key. Once it is back every event is processed, in order per key,
    with one error log when the outage began and one info when it ended."""
    loop = asyncio.get_running_loop()
    down_until = loop.time() + 10.0  # set at the first call
    for seq in range(5):
        for account in (1, 2, 3):
            await bus.publish(envelope(account, seq=seq))
    seen: dict[str, list[int]] = defaultdict(list)
    done_during_outage = 0
    started = False

    async def handler(env: Envelope) -> None:
        nonlocal down_until, done_during_outage, started
        if not started:
            started, down_until = True, loop.time() + 0.6
        if loop.time() < down_until:
            raise DependencyDown("connection refused")
        seen[env.key].append(env.event["seq"])

    consumer = make_consumer(bus, handler, max_attempts=1, outage_probe_s=(0.05, 0.2))
    with caplog.at_level(logging.INFO, logger="tradewire.bus.consumer"):
        await consumer.drain(10)
    assert {key: seqs == list(range(5)) for key, seqs in seen.items()} == {
        f"{account}:BTCUSDT": True for account in (1, 2, 3)
    }
    assert await bus.dlq_size() == 0 and await bus.pending() == 0
    assert (consumer.stats.processed, consumer.stats.retried) == (15, 0)
    assert consumer.stats.outages >= 1 and consumer.stats.dead_lettered == 0
    began = [r for r in caplog.records if "consumption paused until" in r.getMessage()]
    ended = [r for r in caplog.records if "consumption resumed" in r.getMessage()]
    assert len(began) == consumer.stats.outages == len(ended)
    assert began[0].levelno == logging.ERROR and ended[0].levelno == logging.INFO
