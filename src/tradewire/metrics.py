"""Prometheus metrics: one process-wide registry, rendered by ``GET /metrics`` (API) or by
``start_metrics_server`` (processes without the API). Unauthenticated and secret-free: scrape
it from the internal network only; ``start_metrics_server`` binds 127.0.0.1 unless told.

Metrics (``_total`` is added to counters by the exposition):

* ``tradewire_events_published_total`` — counted by ``instrument_publish``.
* ``tradewire_events_{consumed,retried,dead_lettered}_total{consumer}`` — read at scrape time
  from ``Consumer.stats`` (``processed``, ``retried``, ``dead_lettered``) of the consumers
  registered with ``watch_consumer`` (weakly held; summed per consumer name).
* ``tradewire_bus_partition_lag{partition}``, ``tradewire_bus_partition_pending{partition}``,
  ``tradewire_dlq_depth``, ``tradewire_bus_paused`` — set by ``refresh_bus_gauges(bus)``, which
  ``BusGaugeRefresher`` runs every ``interval_s``; ``tradewire_bus_gauge_refresh_errors_total``.
* ``tradewire_event_processing_seconds{outcome}`` (handler duration, every attempt; outcome
  ``ok``/``error``) and ``tradewire_event_age_seconds`` (``now - envelope.received_ms`` when the
  handler succeeds: socket-to-commit latency; synthetic and replayed events are not recorded,
  their ``received_ms`` is not a socket time) — recorded by ``instrument_handler`` (and by
  ``instrument_batch_handler``: each event of a batch with the batch's duration).
* Streams layer (``tradewire.streams``; the ``streams`` process's metrics endpoint):
  ``tradewire_stream_connections`` (open ``/private/stream`` sockets, or one-socket streams),
  ``tradewire_stream_keys_per_connection{stat="max"|"mean"}``,
  ``tradewire_stream_accounts{state}`` (accounts per ``AccountState``),
  ``tradewire_stream_accounts_wanted`` / ``tradewire_stream_accounts_streaming`` (equal: every
  account this pod owns is subscribed), ``tradewire_stream_accounts_blind``,
  ``tradewire_stream_owned_shards``; counters ``tradewire_stream_reconnects_total``,
  ``tradewire_stream_rotations_total``, ``tradewire_stream_rekeys_total``,
  ``tradewire_stream_keepalives_total{outcome}`` (listenKey PUTs: ok/invalid/error),
  ``tradewire_stream_listenkey_posts_total``, ``tradewire_stream_reconciliations_total{outcome}``,
  ``tradewire_stream_synthetic_events_total``; and the histogram
  ``tradewire_stream_publish_seconds`` (socket receipt -> bus ack, 0.1 ms .. 1 s buckets),
  recorded by ``PublishTimer`` around the ``BatchPublisher``'s ``publish_many`` and
  ``start_publish`` (where the bus has it), which also counts ``tradewire_events_published_total``.

Wiring guide for the lead:
``config.py``: ``metrics_port: int = 0`` (0 = no server) and ``metrics_host: str = "127.0.0.1"``.
``cli/roles.py``: ``worker`` -> ``handler = metrics.instrument_handler(processor.handle)``,
``consumer = Consumer.from_settings(rt.bus, handler, ...)``, ``metrics.watch_consumer(consumer)``;
``streams_manager`` -> ``timer = metrics.PublishTimer()``,
``BatchPublisher(timer.wrap(rt.bus.publish_many), start=timer.wrap_start(...))`` and
``StreamsManager(..., timer=timer)``
(done: the socket reader notes each envelope's receipt time).
``cli/commands.py``: in ``worker``/``streams``/``notifier`` call
``metrics.start_metrics_server(settings.metrics_port, settings.metrics_host)`` after
``open_runtime`` (``close()`` the result on exit), and in ``worker`` run
``metrics.BusGaugeRefresher(rt.bus).run(stop)`` next to ``consumer.run(stop)`` (``until_stopped``).
``api`` needs nothing: ``GET /metrics`` is on the app.
``cli/stack.py``: add ``metrics.BusGaugeRefresher(self.rt.bus).run(self.stop)`` to the
``until_stopped`` jobs (the one-process stack is scraped through the API's ``/metrics``).
Run ``BusGaugeRefresher`` in worker processes: bus gauges are backend-wide (sum them over
processes only for RabbitMQ ``pending``, which is per process).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from tradewire.bus.base import Bus, Envelope, Landed, StartMany
from tradewire.bus.batch_lanes import BatchHandler, Deferred
from tradewire.bus.lanes import ConsumerStats
from tradewire.clock import Clock, SystemClock
from tradewire.logging import log

logger = logging.getLogger("tradewire.metrics")

T = TypeVar("T")
Handler = Callable[[Envelope], Awaitable[None]]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # "text/plain; version=0.0.4": every Prometheus parses it
# No ``*_created`` series (a process-wide prometheus_client setting).
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

PUBLISHED = Counter(
    "tradewire_events_published", "Events published to the bus by this process.",
    registry=REGISTRY,
)
PARTITION_LAG = Gauge(
    "tradewire_bus_partition_lag", "Messages stored but never delivered to the consumer group.",
    ["partition"], registry=REGISTRY,
)
PARTITION_PENDING = Gauge(
    "tradewire_bus_partition_pending",
    "Messages delivered and not yet acked (RabbitMQ: by this process only).",
    ["partition"], registry=REGISTRY,
)
DLQ_DEPTH = Gauge("tradewire_dlq_depth", "Entries in the dead-letter queue.", registry=REGISTRY)
BUS_PAUSED = Gauge(
    "tradewire_bus_paused", "1 while consumption is paused (tradewire bus pause).",
    registry=REGISTRY,
)
REFRESH_ERRORS = Counter(
    "tradewire_bus_gauge_refresh_errors", "Failed refreshes of the bus gauges.",
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "tradewire_event_processing_seconds", "Duration of one handler attempt.", ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
EVENT_AGE_SECONDS = Histogram(
    "tradewire_event_age_seconds",
    "From receipt on the exchange socket to successful processing (socket-to-commit).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
    registry=REGISTRY,
)

STREAM_CONNECTIONS = Gauge(
    "tradewire_stream_connections", "Open user-data stream sockets of this process.",
    registry=REGISTRY,
)
STREAM_KEYS_PER_CONNECTION = Gauge(
    "tradewire_stream_keys_per_connection", "listenKeys subscribed per open connection.",
    ["stat"], registry=REGISTRY,
)
STREAM_ACCOUNTS = Gauge(
    "tradewire_stream_accounts", "Accounts of this process per stream state.", ["state"],
    registry=REGISTRY,
)
STREAM_WANTED = Gauge(
    "tradewire_stream_accounts_wanted", "Active accounts in the shards this process owns.",
    registry=REGISTRY,
)
STREAM_STREAMING = Gauge(
    "tradewire_stream_accounts_streaming",
    "Accounts whose listenKey is subscribed on an open connection.", registry=REGISTRY,
)
STREAM_BLIND = Gauge(
    "tradewire_stream_accounts_blind", "Accounts whose stream is known not to deliver.",
    registry=REGISTRY,
)
STREAM_OWNED_SHARDS = Gauge(
    "tradewire_stream_owned_shards", "Virtual shards of accounts this process owns.",
    registry=REGISTRY,
)
STREAM_RECONNECTS = Counter(
    "tradewire_stream_reconnects", "Connections reopened after being dropped or found blind.",
    registry=REGISTRY,
)
STREAM_ROTATIONS = Counter(
    "tradewire_stream_rotations", "Connections replaced before the exchange's 24 h cut.",
    registry=REGISTRY,
)
STREAM_REKEYS = Counter(
    "tradewire_stream_rekeys", "listenKeys replaced (expired, keepalive refused, missing).",
    registry=REGISTRY,
)
STREAM_KEEPALIVES = Counter(
    "tradewire_stream_keepalives", "listenKey keepalive PUTs by outcome.", ["outcome"],
    registry=REGISTRY,
)
STREAM_LISTENKEY_POSTS = Counter(
    "tradewire_stream_listenkey_posts", "listenKey POSTs (new keys).", registry=REGISTRY,
)
STREAM_RECONCILIATIONS = Counter(
    "tradewire_stream_reconciliations", "REST reconciliations after a gap, by outcome.",
    ["outcome"], registry=REGISTRY,
)
STREAM_SYNTHETIC = Counter(
    "tradewire_stream_synthetic_events", "Synthetic events published by reconciliation.",
    registry=REGISTRY,
)
for _outcome in ("ok", "invalid", "error"):  # every series present from the start (rates)
    STREAM_KEEPALIVES.labels(outcome=_outcome)
for _outcome in ("ok", "error"):
    STREAM_RECONCILIATIONS.labels(outcome=_outcome)
STREAM_PUBLISH_SECONDS = Histogram(
    "tradewire_stream_publish_seconds",
    "From receipt of a frame on the exchange socket to the bus acknowledging its envelope.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
             0.5, 1.0),
    registry=REGISTRY,
)


# -- consumer counters ---------------------------------------------------------------------------


class Watched(Protocol):
    """What ``watch_consumer`` reads (``tradewire.bus.consumer.Consumer`` fits)."""

    name: str
    stats: ConsumerStats


_watched: weakref.WeakValueDictionary[int, Watched] = weakref.WeakValueDictionary()  # by id()
_watched_lock = threading.Lock()  # the metrics server scrapes from its own thread


def watch_consumer(consumer: Watched) -> None:
    """Expose ``consumer.stats`` as counters (held weakly: a dropped consumer disappears)."""
    with _watched_lock:
        _watched[id(consumer)] = consumer


def unwatch_consumer(consumer: Watched) -> None:
    with _watched_lock:
        if _watched.get(id(consumer)) is consumer:
            del _watched[id(consumer)]


_STATS_COUNTERS = (
    ("tradewire_events_consumed", "Events processed successfully and acked.", "processed"),
    ("tradewire_events_retried", "Failed attempts followed by another attempt.", "retried"),
    ("tradewire_events_dead_lettered", "Events moved to the dead-letter queue.", "dead_lettered"),
)


class ConsumerStatsCollector(Collector):
    """Reads the watched consumers' ``stats`` at scrape time."""

    def collect(self) -> Iterator[Metric]:
        with _watched_lock:
            consumers = list(_watched.values())
        for name, help_text, field in _STATS_COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=["consumer"])
            totals: dict[str, int] = {}
            for consumer in consumers:
                totals[consumer.name] = totals.get(consumer.name, 0) + getattr(
                    consumer.stats, field
                )
            for consumer_name, value in sorted(totals.items()):
                family.add_metric([consumer_name], value)
            yield family

    def describe(self) -> Iterator[Metric]:
        for name, help_text, _ in _STATS_COUNTERS:
            yield CounterMetricFamily(name, help_text, labels=["consumer"])


REGISTRY.register(ConsumerStatsCollector())


# -- bus gauges ----------------------------------------------------------------------------------


async def refresh_bus_gauges(bus: Bus) -> None:
    """Read depths, DLQ size and the pause flag from ``bus`` into the gauges."""
    depths = await bus.partition_depths()
    dlq = await bus.dlq_size()
    paused = await bus.is_paused()
    for partition, depth in depths.items():
        PARTITION_LAG.labels(partition=str(partition)).set(depth.lag)
        PARTITION_PENDING.labels(partition=str(partition)).set(depth.pending)
    DLQ_DEPTH.set(dlq)
    BUS_PAUSED.set(1 if paused else 0)


class BusGaugeRefresher:
    """``refresh_bus_gauges`` every ``interval_s`` until ``stop``; a failure is logged and
    counted, the gauges keep their last values."""

    def __init__(self, bus: Bus, interval_s: float = 5.0) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.bus, self.interval_s = bus, interval_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.interval_s):
                    await refresh_bus_gauges(self.bus)
            except Exception as exc:
                REFRESH_ERRORS.inc()
                log(logger, logging.WARNING, "refreshing bus metrics failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await stop.wait()


# -- handler and publisher wrappers --------------------------------------------------------------


def instrument_handler(handler: Handler, *, clock: Clock | None = None) -> Handler:
    """Wrap an event handler (``EventProcessor.handle``): every attempt's duration goes to
    ``tradewire_event_processing_seconds``, a success's age to ``tradewire_event_age_seconds``.
    Exceptions propagate unchanged (the consumer's retry policy still sees them)."""
    wall = clock or SystemClock()

    async def instrumented(envelope: Envelope) -> None:
        started = time.perf_counter()
        try:
            await handler(envelope)
        except BaseException:
            PROCESSING_SECONDS.labels(outcome="error").observe(time.perf_counter() - started)
            raise
        PROCESSING_SECONDS.labels(outcome="ok").observe(time.perf_counter() - started)
        if not envelope.synthetic and envelope.replay_of is None:
            EVENT_AGE_SECONDS.observe(max(0, wall.now_ms() - envelope.received_ms) / 1000)

    return instrumented


def instrument_batch_handler(handler: BatchHandler, *, clock: Clock | None = None
                             ) -> BatchHandler:
    """``instrument_handler`` for the consumer's batch handler (``EventProcessor.handle_many``):
    each event's attempt takes the batch's duration; ``Deferred`` events were not attempted."""
    wall = clock or SystemClock()

    async def instrumented(envelopes: Sequence[Envelope]) -> Sequence[BaseException | None]:
        started = time.perf_counter()
        try:
            answers = await handler(envelopes)
        except BaseException:
            took = time.perf_counter() - started
            for _ in envelopes:
                PROCESSING_SECONDS.labels(outcome="error").observe(took)
            raise
        took, now_ms = time.perf_counter() - started, wall.now_ms()
        ok, error = PROCESSING_SECONDS.labels(outcome="ok"), PROCESSING_SECONDS.labels("error")
        for envelope, answer in zip(envelopes, answers, strict=True):
            if answer is None:
                ok.observe(took)
                if not envelope.synthetic and envelope.replay_of is None:
                    EVENT_AGE_SECONDS.observe(max(0, now_ms - envelope.received_ms) / 1000)
            elif not isinstance(answer, Deferred):
                error.observe(took)
        return answers

    return instrumented


def instrument_publish(
    publish: Callable[[Envelope], Awaitable[T]],
) -> Callable[[Envelope], Awaitable[T]]:
    """Wrap ``bus.publish``: each successful publish counts one published event."""

    async def metered(envelope: Envelope) -> T:
        result = await publish(envelope)
        PUBLISHED.inc()
        return result

    return metered


PublishMany = Callable[[Sequence[Envelope]], Awaitable[T]]


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(amount)`` for each amount (no labels, no exemplars), counted per
    bucket first: one increment per bucket touched instead of two locked ones per amount (the
    streams process observes every event it publishes)."""
    bounds: list[float] | None = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:  # another prometheus_client layout
        for amount in amounts:
            histogram.observe(amount)
        return
    if not amounts:
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        counts[bisect.bisect_left(bounds, amount)] += 1  # first bound >= amount, as observe
    total.inc(sum(amounts))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


class PublishTimer:
    """Socket receipt -> bus ack per envelope, into ``tradewire_stream_publish_seconds``.

    The socket reader calls ``received(envelope, time.perf_counter())`` before handing the
    envelope on; ``wrap(publish_many)`` observes, when a batch is acknowledged, every envelope
    of it that was noted (synthetic ones are not), and counts the batch as published."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}  # id(envelope) -> perf_counter at receipt

    def received(self, envelope: Envelope, at: float) -> None:
        self._started[id(envelope)] = at

    def wrap(self, publish_many: PublishMany[T]) -> PublishMany[T]:
        async def timed(envelopes: Sequence[Envelope]) -> T:
            result = await publish_many(envelopes)
            self._acked(envelopes)
            return result

        return timed

    def wrap_start(self, start: StartMany) -> StartMany:
        """The same for a ``PublishStarter.start_publish``: observed when it reports success."""
        def timed(envelopes: Sequence[Envelope], on_done: Landed) -> bool:
            def landed(error: BaseException | None) -> None:
                if error is None:
                    self._acked(envelopes)
                on_done(error)

            return start(envelopes, landed)

        return timed

    def _acked(self, envelopes: Sequence[Envelope]) -> None:
        now = time.perf_counter()
        pop = self._started.pop
        latencies = [now - started for envelope in envelopes
                     if (started := pop(id(envelope), None)) is not None]
        observe_many(STREAM_PUBLISH_SECONDS, [max(0.0, s) for s in latencies])
        PUBLISHED.inc(len(envelopes))


# -- exposition ----------------------------------------------------------------------------------


def render() -> bytes:
    """The registry in Prometheus text format (serve with ``CONTENT_TYPE``)."""
    return generate_latest(REGISTRY)


@dataclass
class MetricsServer:
    """prometheus_client's HTTP server (a daemon thread) serving ``REGISTRY``."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> MetricsServer | None:
    """Serve ``/metrics`` on ``host:port`` for processes without the API; ``port <= 0``:
    disabled (returns None). Default host 127.0.0.1: expose it wider only on an internal
    network — it is unauthenticated."""
    if port <= 0:
        return None
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    log(logger, logging.INFO, "metrics server up", host=host, port=int(server.server_address[1]))
    return MetricsServer(server, thread)
