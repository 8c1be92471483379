"""``tradewire.metrics``: the handler and publish wrappers, the consumer-stats collector, the
bus gauges and the text exposition. The registry is process-wide, so tests compare deltas."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from dataclasses import dataclass, field

import pytest

from tradewire import metrics
from tradewire.bus.base import Envelope
from tradewire.bus.embedded import EmbeddedBus
from tradewire.bus.lanes import ConsumerStats
from tradewire.clock import ManualClock

NAMES = (
    "tradewire_events_published_total", "tradewire_events_consumed_total",
    "tradewire_events_retried_total", "tradewire_events_dead_lettered_total",
    "tradewire_bus_partition_lag", "tradewire_bus_partition_pending", "tradewire_dlq_depth",
    "tradewire_bus_paused", "tradewire_event_processing_seconds",
    "tradewire_event_age_seconds",
)


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def envelope(received_ms: int, **extra: object) -> Envelope:
    return Envelope(
        event_id="ev-1", account_id=1, user_id=10, symbol="BTCUSDT", received_ms=received_ms,
        event={"e": "ORDER_TRADE_UPDATE"}, **extra,  # type: ignore[arg-type]
    )


@dataclass
class FakeConsumer:
    name: str
    stats: ConsumerStats = field(default_factory=ConsumerStats)


async def test_the_handler_wrapper_records_duration_and_age() -> None:
    """A success records its duration (outcome ok) and now - received_ms; the wrapped
    handler's result is unchanged."""
    clock = ManualClock(1_000_000)
    seen: list[Envelope] = []

    async def handler(env: Envelope) -> None:
        await asyncio.sleep(0.02)
        seen.append(env)

    before_count = sample("tradewire_event_processing_seconds_count", outcome="ok")
    before_sum = sample("tradewire_event_processing_seconds_sum", outcome="ok")
    before_age = sample("tradewire_event_age_seconds_sum")
    before_age_count = sample("tradewire_event_age_seconds_count")
    env = envelope(received_ms=1_000_000 - 1_500)
    await metrics.instrument_handler(handler, clock=clock)(env)
    assert seen == [env]
    assert sample("tradewire_event_processing_seconds_count", outcome="ok") == before_count + 1
    assert sample("tradewire_event_processing_seconds_sum", outcome="ok") - before_sum >= 0.02
    assert sample("tradewire_event_age_seconds_count") == before_age_count + 1
    assert sample("tradewire_event_age_seconds_sum") - before_age == pytest.approx(1.5)


async def test_a_failing_handler_is_timed_as_an_error_and_its_exception_kept() -> None:
    """The exception reaches the consumer unchanged; no age is recorded for a failure."""

    async def handler(env: Envelope) -> None:
        raise RuntimeError("boom")

    before = sample("tradewire_event_processing_seconds_count", outcome="error")
    before_age = sample("tradewire_event_age_seconds_count")
    with pytest.raises(RuntimeError, match="boom"):
        await metrics.instrument_handler(handler)(envelope(received_ms=0))
    assert sample("tradewire_event_processing_seconds_count", outcome="error") == before + 1
    assert sample("tradewire_event_age_seconds_count") == before_age


async def test_synthetic_and_replayed_events_have_no_socket_age() -> None:
    async def handler(env: Envelope) -> None:
        return None

    wrapped = metrics.instrument_handler(handler, clock=ManualClock(10_000))
    before = sample("tradewire_event_age_seconds_count")
    await wrapped(envelope(received_ms=0, synthetic=True))
    await wrapped(envelope(received_ms=0, replay_of="1-0"))
    assert sample("tradewire_event_age_seconds_count") == before


async def test_the_publish_wrapper_counts_successful_publishes() -> None:
    bus = EmbeddedBus(2)
    publish = metrics.instrument_publish(bus.publish)
    before = sample("tradewire_events_published_total")
    message_id = await publish(envelope(received_ms=0))
    assert message_id and sample("tradewire_events_published_total") == before + 1

    async def failing(env: Envelope) -> str:
        raise ConnectionError("bus down")

    with pytest.raises(ConnectionError):
        await metrics.instrument_publish(failing)(envelope(received_ms=0))
    assert sample("tradewire_events_published_total") == before + 1


def test_the_collector_reads_watched_consumers_stats_at_scrape_time() -> None:
    """Counters follow ``stats`` without any call; consumers of one name are summed;
    an unwatched consumer disappears."""
    first, second = FakeConsumer("unit-w"), FakeConsumer("unit-w")
    metrics.watch_consumer(first)
    metrics.watch_consumer(second)
    try:
        first.stats.processed, second.stats.processed = 5, 2
        first.stats.retried, first.stats.dead_lettered = 3, 1
        assert sample("tradewire_events_consumed_total", consumer="unit-w") == 7
        assert sample("tradewire_events_retried_total", consumer="unit-w") == 3
        assert sample("tradewire_events_dead_lettered_total", consumer="unit-w") == 1
        second.stats.processed = 4
        assert sample("tradewire_events_consumed_total", consumer="unit-w") == 9
    finally:
        metrics.unwatch_consumer(first)
        metrics.unwatch_consumer(second)
    assert metrics.REGISTRY.get_sample_value(
        "tradewire_events_consumed_total", {"consumer": "unit-w"}) is None


async def test_bus_gauges_reflect_depths_dlq_and_pause() -> None:
    bus = EmbeddedBus(2)
    for i in range(3):
        await bus.publish_raw(1, f"m{i}".encode())
    [message] = await bus.fetch("c1", 1, 100)
    await bus.set_paused(True)
    await metrics.refresh_bus_gauges(bus)
    assert sample("tradewire_bus_partition_lag", partition="1") == 2
    assert sample("tradewire_bus_partition_pending", partition="1") == 1
    assert metrics.REGISTRY.get_sample_value("tradewire_bus_partition_lag",
                                             {"partition": "0"}) == 0
    assert sample("tradewire_dlq_depth") == 0
    assert sample("tradewire_bus_paused") == 1
    await bus.ack(message)
    await bus.set_paused(False)
    stop = asyncio.Event()
    refresher = asyncio.create_task(metrics.BusGaugeRefresher(bus, interval_s=0.01).run(stop))
    try:
        async with asyncio.timeout(2):
            while sample("tradewire_bus_partition_pending", partition="1") != 0:
                await asyncio.sleep(0.01)
        assert sample("tradewire_bus_paused") == 0
    finally:
        stop.set()
        await refresher


async def test_a_failing_refresh_is_counted_and_the_refresher_keeps_going() -> None:
    bus = EmbeddedBus(2)

    async def broken() -> int:
        raise ConnectionError("bus down")

    bus.dlq_size = broken  # type: ignore[method-assign]
    before = sample("tradewire_bus_gauge_refresh_errors_total")
    stop = asyncio.Event()
    refresher = asyncio.create_task(metrics.BusGaugeRefresher(bus, interval_s=0.01).run(stop))
    async with asyncio.timeout(2):
        while sample("tradewire_bus_gauge_refresh_errors_total") < before + 2:
            await asyncio.sleep(0.01)
    stop.set()
    await refresher


def test_render_contains_every_metric_name() -> None:
    consumer = FakeConsumer("unit-render")
    metrics.watch_consumer(consumer)
    metrics.PARTITION_LAG.labels(partition="0").set(0)
    metrics.PARTITION_PENDING.labels(partition="0").set(0)
    try:
        text = metrics.render().decode()
    finally:
        metrics.unwatch_consumer(consumer)
    for name in NAMES:
        assert f"\n{name}" in text, name
    assert metrics.CONTENT_TYPE.startswith("text/plain")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_metrics_server_serves_the_registry_on_localhost() -> None:
    assert metrics.start_metrics_server(0) is None  # port 0: disabled
    server = metrics.start_metrics_server(free_port())
    assert server is not None
    try:
        assert server.server.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        assert "tradewire_dlq_depth" in body
    finally:
        server.close()
