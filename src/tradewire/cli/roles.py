"""Role factories: each builds one role from a ``Runtime``. ``run`` wires them all in one
process; ``api``/``streams``/``worker``/``notifier`` start one each."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from tradewire import metrics
from tradewire.api.app import create_app
from tradewire.api.deps import ApiDeps
from tradewire.bus.base import PublishStarter
from tradewire.bus.consumer import Consumer
from tradewire.bus.ownership import create_ownership
from tradewire.config import operator_token
from tradewire.intake.service import create_intake_service
from tradewire.logging import log
from tradewire.notify.notifier import Notifier
from tradewire.processor.worker import EventProcessor
from tradewire.runtime import Runtime
from tradewire.serving import BackgroundServer
from tradewire.streams.directory import StoreDirectory
from tradewire.streams.manager import StreamsManager
from tradewire.streams.options import StreamOptions
from tradewire.streams.publisher import BatchPublisher
from tradewire.streams.reconcile import Reconciler
from tradewire.streams.shards import create_shards
from tradewire.trading.execute import Executor

logger = logging.getLogger("tradewire")


def api_server(rt: Runtime, host: str | None = None, port: int | None = None) -> BackgroundServer:
    executor = Executor(rt.sessions, rt.box, rt.pool)
    deps = ApiDeps(
        sessions=rt.sessions, box=rt.box, executor=executor, bus=rt.bus,
        token=operator_token(rt.settings),
        intake=create_intake_service(rt.settings, rt.sessions, executor, rt.clock),
    )
    return BackgroundServer(
        create_app(deps),
        host or rt.settings.api_host,
        rt.settings.api_port if port is None else port,
    )


def streams_manager(rt: Runtime, *, refresh_s: float = 2.0) -> StreamsManager:
    """The streams role: accounts from the database (decrypted only when new or changed),
    envelopes through one ``BatchPublisher`` in front of ``bus.publish_many`` and, on a bus
    that has it (Redis), ``start_publish`` (timed socket -> bus ack into
    ``tradewire_stream_publish_seconds``), shard ownership from ``create_shards``
    (``LocalShards``: every shard), REST reconciliation after gaps."""
    settings = rt.settings
    timer = metrics.PublishTimer()
    bus = rt.bus
    publisher = BatchPublisher(
        timer.wrap(bus.publish_many),
        start=timer.wrap_start(bus.start_publish) if isinstance(bus, PublishStarter) else None,
        max_in_flight=settings.stream_publish_in_flight)
    return StreamsManager(
        StoreDirectory(rt.sessions, rt.box, rt.pool, engine=rt.engine), publisher,
        settings.ws_base_url, rt.clock,
        options=StreamOptions.from_settings(settings, refresh_s=refresh_s),
        shards=create_shards(settings), timer=timer,
        reconciler=Reconciler(rt.sessions, clock=rt.clock,
                              concurrency=settings.reconcile_concurrency),
    )


def worker(rt: Runtime) -> tuple[Consumer, EventProcessor]:
    settings = rt.settings
    processor = EventProcessor(
        rt.sessions, rt.box, rt.pool, rt.locks, batch_max=settings.worker_batch_max,
        batch_wait_s=settings.worker_batch_wait_ms / 1000,
    )
    consumer = Consumer.from_settings(
        rt.bus, metrics.instrument_handler(processor.handle), settings,
        concurrency=settings.worker_concurrency, ownership=create_ownership(settings),
        batch_handler=(metrics.instrument_batch_handler(processor.handle_many)
                       if settings.worker_batch_max > 0 else None),
        batch_max=max(1, settings.worker_batch_max),
        batch_wait_s=settings.worker_batch_wait_ms / 1000,
    )
    metrics.watch_consumer(consumer)
    return consumer, processor


def notifier(rt: Runtime) -> Notifier:
    return Notifier(rt.sessions, rt.http, rt.clock, poll_s=rt.settings.notifier_poll_s)


async def until_stopped(stop: asyncio.Event, *jobs: Awaitable[None]) -> None:
    """Run jobs until ``stop`` is set or one of them fails (then stop the rest)."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                log(logger, logging.ERROR, "a role stopped with an error",
                    error=repr(task.exception()))
    finally:
        stop.set()
        waiter.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=15)
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
