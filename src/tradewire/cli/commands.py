"""The subcommands. Each is a composition root: it builds what its role needs from settings."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tradewire import heap, metrics
from tradewire.cli import dlq as dlq_cli
from tradewire.cli import roles
from tradewire.cli.demo import DemoFailed, Endpoints, closed_by, orders_placed, run_scenario
from tradewire.cli.main import print_json
from tradewire.cli.stack import Stack
from tradewire.config import Settings, operator_token
from tradewire.notify.sink import WebhookSink
from tradewire.runtime import open_runtime
from tradewire.serving import BackgroundServer
from tradewire.store.db import upgrade

logger = logging.getLogger("tradewire")


def _say(text: str) -> None:
    sys.stderr.write(f"  ▸ {text}\n")


async def run(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    async with Stack(settings) as stack:
        token_file = Path(stack.settings.data_dir) / "operator.token"
        _say(f"API on {stack.api.base_url}  (bearer token: {token_file})")
        if stack.sim is not None:
            _say(f"exchange simulator on {stack.sim.base_url}")
        if args.demo:
            async with BackgroundServer(WebhookSink().app) as sink:
                summary = await _play(stack, sink.base_url)
            _say(f"demo done: {summary}")
            _say("the service stays up for your own signals (Ctrl-C to stop); see README")
        await _first(stop.wait(), stack.wait())
    return 0


async def _first(*jobs: Any) -> None:
    tasks = [asyncio.ensure_future(job) for job in jobs]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()


async def demo(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    with tempfile.TemporaryDirectory(prefix="tradewire-demo-") as tmp:
        update: dict[str, Any] = {"data_dir": Path(tmp), "api_port": 0, "sim_port": 0}
        async with Stack(settings.model_copy(update=update), refresh_s=0.5) as stack:
            sink_app = WebhookSink()
            async with BackgroundServer(sink_app.app) as sink:
                try:
                    summary = await _play(stack, sink.base_url)
                except DemoFailed as exc:
                    _say(f"demo failed: {exc}")
                    return 1
            summary["notifications_sent"] = len(sink_app.messages)
    print_json(summary)
    return 0


async def _play(stack: Stack, sink_url: str) -> dict[str, Any]:
    """The scenario against a running stack, then the figures once everything settled."""
    if stack.sim is None:
        raise DemoFailed("the demo needs the built-in simulator (TRADEWIRE_EXCHANGE_URL=sim)")
    ends = Endpoints(stack.api.base_url, operator_token(stack.settings), stack.sim.base_url,
                     f"{sink_url}/hooks")
    result = await run_scenario(ends, announce=_say)
    await _settle(stack)
    trades = result["trades"]
    return {
        "signals": result["signals"],
        "orders_placed": orders_placed(trades),
        "trades_closed_sl": closed_by(trades, "STOP_LOSS"),
        "trades_closed_tp": closed_by(trades, "TAKE_PROFIT"),
        "notifications_sent": stack.notifier.sent,
        "events_processed": stack.consumer.stats.processed,
        "dlq": await stack.rt.bus.dlq_size(),
    }


async def _settle(stack: Stack, quiet_s: float = 0.5, timeout_s: float = 20.0) -> None:
    """Wait until the bus is drained and the outbox sent, and nothing moved for ``quiet_s``."""
    async with asyncio.timeout(timeout_s):
        last = -1
        while True:
            await stack.notifier.drain(timeout_s)
            busy = stack.consumer.in_flight + await stack.rt.bus.pending()
            seen = stack.consumer.stats.processed
            if busy == 0 and seen == last:
                return
            last = seen
            await asyncio.sleep(quiet_s)


async def api(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    async with open_runtime(settings) as rt, roles.api_server(rt):
        await stop.wait()
    return 0


async def streams(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    async with open_runtime(settings, migrate=False) as rt, _metrics_server(settings):
        manager = roles.streams_manager(rt)
        heap.settle()  # the startup heap is built: keep it out of the collector
        await manager.run(stop)
    return 0


async def worker(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    async with open_runtime(settings, migrate=False) as rt, _metrics_server(settings):
        consumer, _ = roles.worker(rt)
        heap.settle()  # the startup heap is built: keep it out of the collector
        try:
            await roles.until_stopped(
                stop, consumer.run(stop), metrics.BusGaugeRefresher(rt.bus).run(stop))
        finally:
            await consumer.ownership.close()
    return 0


@contextlib.asynccontextmanager
async def _metrics_server(settings: Settings) -> AsyncIterator[None]:
    """``/metrics`` on ``TRADEWIRE_METRICS_PORT`` for roles without the API (0: none)."""
    server = metrics.start_metrics_server(settings.metrics_port, settings.metrics_host)
    try:
        yield
    finally:
        if server is not None:
            server.close()


async def notifier(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    async with open_runtime(settings, migrate=False) as rt, _metrics_server(settings):
        await roles.notifier(rt).run(stop)
    return 0


async def simulator(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    from tradewire.simulator.app import create_app
    from tradewire.simulator.limits import LimitConfig
    from tradewire.simulator.server import SimulatorServer

    app = create_app(limits=LimitConfig(ip_weight_per_minute=args.ip_weight_per_minute))
    async with SimulatorServer(host=args.host, port=args.port, app=app) as sim:
        _say(f"exchange simulator on {sim.base_url}")
        await stop.wait()
    return 0


async def db(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    await upgrade(settings.resolved_database_url)
    _say(f"database migrated: {settings.resolved_database_url.split('@')[-1]}")
    return 0


def _api_url(args: argparse.Namespace, settings: Settings) -> str:
    given: str | None = getattr(args, "api_url", None)
    return given or f"http://{settings.api_host}:{settings.api_port}"


async def monitor(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    """A signal source posting RawMessages to the intake API of this deployment."""
    from tradewire.errors import ConfigError

    if args.source == "dlq":
        return await dlq_cli.monitor_dlq(args, settings, stop)
    try:
        if args.source == "discord-bot":
            from tradewire.intake.discord.cli import run_from_args as run_bot

            await run_bot(args, _api_url(args, settings), operator_token(settings), stop)
        elif args.source == "cdp":
            from tradewire.intake.cdp.cli import run_from_args as run_cdp

            await run_cdp(args, _api_url(args, settings), operator_token(settings), stop)
    except ConfigError as exc:
        _say(f"monitor stopped: {exc}")
        return 2
    return 0


dlq = dlq_cli.dlq_command
bus = dlq_cli.bus_command


async def signals(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    """``tradewire signals parse``: the parser's decision on stdin's text, as one JSON line."""
    import json

    from tradewire.intake.parse_cli import main_parse

    try:
        overrides = json.loads(args.profile) if args.profile else None
        line = main_parse(sys.stdin.read(), overrides)
    except ValueError as exc:
        _say(f"bad --profile: {exc}")
        return 2
    sys.stdout.write(line.rstrip("\n") + "\n")
    return 0
