"""Consumer policy details, on the embedded bus (the cross-backend behaviour is in
``tests/contract/test_bus_consumer.py``)."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

import pytest

from tradewire.bus.base import Envelope, Message
from tradewire.bus.consumer import Consumer, Handler
from tradewire.bus.embedded import EmbeddedBus
from tradewire.config import Settings
from tradewire.errors import DependencyDown, TransientError


def envelope(account_id: int = 1, seq: int = 0) -> Envelope:
    return Envelope(
        event_id=f"ev-{account_id}-{seq}", account_id=account_id, user_id=account_id * 10,
        symbol="BTCUSDT", received_ms=1_767_000_000_000, event={"seq": seq},
    )


def consumer_for(bus: EmbeddedBus, handler: Handler, **options: Any) -> Consumer:
    defaults: dict[str, Any] = {
        "name": "w1", "retry_delays_s": (0.01, 0.02), "redelivery_idle_s": 0.1, "block_ms": 20,
    }
    return Consumer(bus, handler, **{**defaults, **options})


async def ok(env: Envelope) -> None:
    return None


async def fail(env: Envelope) -> None:
    raise RuntimeError("always fails")


def test_retry_delays_follow_the_schedule_with_bounded_jitter() -> None:
    """The n-th failure waits delays[n-1] (the last delay beyond the list) plus <= jitter."""
    consumer = Consumer(EmbeddedBus(), ok, name="w", retry_delays_s=(1.0, 2.0, 3.0), jitter=0.1)
    for failed_attempt, base in [(1, 1.0), (2, 2.0), (3, 3.0), (7, 3.0)]:
        for _ in range(50):
            assert base <= consumer.retry_delay_s(failed_attempt) <= base * 1.1
    assert Consumer(EmbeddedBus(), ok, name="w", retry_delays_s=()).retry_delay_s(1) == 0.0


def test_settings_supply_the_policy() -> None:
    """``from_settings`` takes name, attempts, delays and redelivery idle from the settings."""
    settings = Settings(
        worker_name="w-9", max_attempts=5, retry_delays_s=(0.5, 1.5), redelivery_idle_s=9.0
    )
    consumer = Consumer.from_settings(EmbeddedBus(), ok, settings, concurrency=4)
    assert (consumer.name, consumer.max_attempts, consumer.retry_delays_s) == ("w-9", 5, (0.5, 1.5))
    assert (consumer.redelivery_idle_s, consumer.concurrency) == (9.0, 4)


async def test_a_message_that_keeps_killing_its_consumer_is_dead_lettered_unprocessed() -> None:
    """A message already handed out max_attempts times without an ack is not run again."""
    bus = EmbeddedBus(2)
    await bus.publish(envelope())
    await bus.fetch("dead-1", 1, 0)
    for dead in ("dead-2", "dead-3"):
        await bus.reclaim(dead, 0, 1)
    calls: list[Envelope] = []

    async def handler(env: Envelope) -> None:
        calls.append(env)

    consumer = consumer_for(bus, handler, redelivery_idle_s=0.03)
    await consumer.drain(2)
    [letter] = await bus.dlq_list()
    assert calls == [] and letter.attempts == 3 and "4 times" in letter.error


async def test_a_reclaimed_message_has_its_earlier_delivery_counted_as_an_attempt() -> None:
    """Redelivered once after a crash, a failing message gets the remaining two attempts."""
    bus = EmbeddedBus(2)
    await bus.publish(envelope())
    await bus.fetch("dead", 1, 0)
    calls = 0

    async def handler(env: Envelope) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("still broken")

    await consumer_for(bus, handler, redelivery_idle_s=0.03).drain(2)
    [letter] = await bus.dlq_list()
    assert (calls, letter.attempts) == (2, 3)


async def test_in_flight_messages_are_not_taken_by_other_consumers() -> None:
    """While a slow handler runs past redelivery_idle_s, its message is kept fresh (touch), so
    another consumer's reclaim does not take it."""
    bus = EmbeddedBus(2)
    await bus.publish(envelope())
    started = asyncio.Event()

    async def slow(env: Envelope) -> None:
        started.set()
        await asyncio.sleep(0.4)

    consumer = consumer_for(bus, slow, redelivery_idle_s=0.1)
    draining = asyncio.create_task(consumer.drain(3))
    await started.wait()
    stolen: list[Message] = []
    for _ in range(6):
        await asyncio.sleep(0.05)
        stolen += await bus.reclaim("thief", 100, 10)
    await draining
    assert stolen == [] and consumer.stats.processed == 1


async def test_run_stops_on_request_and_leaves_unfinished_work_pending() -> None:
    """After ``stop`` is set, work still running past ``grace_s`` is abandoned and stays
    pending in the bus for redelivery."""
    bus = EmbeddedBus(2)
    await bus.publish(envelope(1))
    await bus.publish(envelope(2))
    hang = asyncio.Event()

    async def handler(env: Envelope) -> None:
        if env.account_id == 2:
            await hang.wait()

    consumer = consumer_for(bus, handler, grace_s=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    while consumer.stats.processed < 1:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(running, 1.0)
    assert await bus.pending() == 1 and consumer.in_flight == 0


async def test_drain_gives_up_after_its_timeout() -> None:
    """A handler that never finishes makes ``drain`` raise ``TimeoutError``."""
    bus = EmbeddedBus(2)
    await bus.publish(envelope())

    async def never(env: Envelope) -> None:
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        await consumer_for(bus, never).drain(0.2)
    assert await bus.pending() == 1


async def test_a_failed_ack_leaves_the_message_for_redelivery() -> None:
    """If the ack fails, the message stays pending and is processed again (at-least-once)."""

    class FlakyAckBus(EmbeddedBus):
        failures = 1

        async def ack(self, message: Message) -> None:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("bus unreachable")
            await super().ack(message)

    bus = FlakyAckBus(2)
    await bus.publish(envelope())
    seen: list[Envelope] = []

    async def handler(env: Envelope) -> None:
        seen.append(env)

    consumer = consumer_for(bus, handler, redelivery_idle_s=0.05)
    await consumer.drain(2)
    assert seen == [envelope(), envelope()]
    assert (consumer.stats.processed, consumer.stats.reclaimed) == (1, 1)


async def test_in_flight_work_never_exceeds_the_concurrency_limit() -> None:
    """At most ``concurrency`` messages are fetched and held at a time."""
    bus = EmbeddedBus(4)
    for account in range(40):
        await bus.publish(envelope(account))
    peak = 0
    consumer: Consumer

    async def handler(env: Envelope) -> None:
        nonlocal peak
        peak = max(peak, consumer.in_flight)
        await asyncio.sleep(0.005)

    consumer = consumer_for(bus, handler, concurrency=5)
    await consumer.drain(5)
    assert peak == 5 and consumer.stats.processed == 40


async def test_a_failing_consumer_counts_retries_and_dead_letters() -> None:
    """Stats count every retry and every dead letter."""
    bus = EmbeddedBus(2)
    for account in (1, 2):
        await bus.publish(envelope(account))
    consumer = consumer_for(bus, fail, max_attempts=2)
    await consumer.drain(2)
    assert (consumer.stats.retried, consumer.stats.dead_lettered) == (2, 2)
    assert consumer.stats.processed == 0 and await bus.dlq_size() == 2


def test_redelivery_defaults_bound_a_takeover_to_well_under_15_seconds() -> None:
    """Defaults: idle 10 s, touch + reclaim every 10/3 s → a SIGKILLed worker's message is
    reclaimed within 10 + 3.33 = 13.3 s; the outage probe backs off 0.5 s → 10 s."""
    settings = Settings()
    consumer = Consumer.from_settings(EmbeddedBus(), ok, settings)
    assert consumer.redelivery_idle_s == 10.0
    assert consumer.maintenance_interval_s <= consumer.redelivery_idle_s / 3
    assert consumer.redelivery_idle_s + consumer.maintenance_interval_s < 15.0
    assert consumer.outage_probe_s == (0.5, 10.0)


async def test_a_transient_error_is_retried_with_growing_delays_then_dead_lettered() -> None:
    """TransientError: max_attempts tries, waiting delays[0] then delays[1], then the DLQ."""
    bus = EmbeddedBus(2)
    await bus.publish(envelope())
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def handler(env: Envelope) -> None:
        times.append(loop.time())
        raise TransientError("exchange unavailable")

    consumer = consumer_for(bus, handler, retry_delays_s=(0.05, 0.15), jitter=0.0)
    await consumer.drain(3)
    gaps = [b - a for a, b in pairwise(times)]
    [letter] = await bus.dlq_list()
    assert (len(times), letter.attempts, letter.error_type) == (3, 3, "TransientError")
    assert 0.05 <= gaps[0] < 0.12 and 0.15 <= gaps[1] < 0.25


async def test_an_unknown_exception_is_treated_as_transient() -> None:
    """An exception outside the tree is retried like a transient error (then the DLQ)."""
    bus = EmbeddedBus(2)
    await bus.publish(envelope())
    consumer = consumer_for(bus, fail)
    await consumer.drain(3)
    [letter] = await bus.dlq_list()
    assert (letter.attempts, letter.error_type, consumer.stats.retried) == (3, "RuntimeError", 2)


async def test_one_keys_database_outage_holds_every_key_until_the_probe_succeeds() -> None:
    """Only key 1 sees ``DependencyDown`` (for ~0.5 s): other keys are not attempted while the
    outage lasts, nothing is fetched meanwhile, the probe backs off, and all is processed
    afterwards with no attempt counted and no dead letter."""
    bus = EmbeddedBus(2)
    await bus.publish(envelope(1))
    loop = asyncio.get_running_loop()
    probes: list[float] = []
    others: list[float] = []
    first_ok = asyncio.Event()

    async def handler(env: Envelope) -> None:
        if env.account_id == 1:
            probes.append(loop.time())
            if probes[-1] - probes[0] < 0.5:
                raise DependencyDown("connection refused")
            first_ok.set()
        else:
            others.append(loop.time())

    consumer = consumer_for(bus, handler, max_attempts=1, outage_probe_s=(0.05, 0.2))
    draining = asyncio.create_task(consumer.drain(5))
    while not consumer.in_outage:
        await asyncio.sleep(0.005)
    for account in (2, 3, 4):
        await bus.publish(envelope(account))
    await draining
    gaps = [b - a for a, b in pairwise(probes)]
    assert gaps[0] < gaps[-1] <= 0.2 * 1.05 + 0.05  # growing, capped
    assert min(others) >= probes[-1]  # nothing else ran during the outage
    assert (consumer.stats.outages, consumer.stats.retried, consumer.stats.processed) == (1, 0, 4)
    assert await bus.dlq_size() == 0 and await bus.pending() == 0 and first_ok.is_set()
