"""``tradewire`` command line: one subcommand per role, each its own composition root."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from tradewire import logging as twlog
from tradewire.config import Settings

Command = Callable[[argparse.Namespace, Settings, asyncio.Event], Coroutine[Any, Any, int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradewire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="every role in one process (+ the built-in simulator)")
    run.add_argument("--demo", action="store_true", help="play the demo scenario once at start")
    sub.add_parser("api", help="the HTTP API")
    sub.add_parser("streams", help="the WS manager: user-data streams -> bus")
    sub.add_parser("worker", help="the event processor: bus -> database, follow-ups, outbox")
    sub.add_parser("notifier", help="sends the outbox to Discord webhooks")
    sim = sub.add_parser("simulator", help="the exchange simulator on its own")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8090)
    sim.add_argument("--ip-weight-per-minute", type=int, default=2400,
                     help="request weight per IP and minute (the exchange: 2400)")
    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"])
    sub.add_parser("demo", help="the demo scenario to completion; prints a JSON summary last")
    monitor = sub.add_parser("monitor", help="signal sources that post to the intake API")
    sources = monitor.add_subparsers(dest="source", required=True)
    from tradewire.intake.discord.cli import add_arguments as bot_arguments

    bot_arguments(sources.add_parser(
        "discord-bot", help="Discord bot (official token, MESSAGE_CONTENT intent)"))
    from tradewire.intake.cdp.cli import add_arguments as cdp_arguments

    cdp_arguments(sources.add_parser(
        "cdp", help="read a Discord channel open in Chrome (opt-in; read docs/cdp-monitor.md)"))
    from tradewire.cli.dlq import add_parsers as dlq_parsers

    dlq_parsers(sub, sources)
    signals = sub.add_parser("signals", help="signal text tools")
    tools = signals.add_subparsers(dest="tool", required=True)
    parse = tools.add_parser("parse", help="parse a message on stdin; one JSON line out")
    parse.add_argument("--profile", default=None,
                       help='channel profile overrides as JSON, e.g. \'{"trust": "auto"}\'')
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    twlog.configure(settings.log_format, settings.log_level)
    command = _commands()[args.command]
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            return runner.run(_with_signals(command, args, settings))
    except KeyboardInterrupt:
        return 130


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for (``TRADEWIRE_EVENT_LOOP=uvloop``, the default where it is installed):
    a quarter less worker CPU per event in ``make bench-bus`` (0.34-0.36 ms against 0.48 ms on
    the standard loop, Redis, same load); ``asyncio``: the standard loop."""
    if settings.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # not on this platform (e.g. Windows): the standard loop
        return None
    return uvloop.new_event_loop


async def _with_signals(command: Command, args: argparse.Namespace, settings: Settings) -> int:
    """Run the command; the first SIGINT/SIGTERM asks it to stop gracefully (``stop`` is set),
    a second one cancels it."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(command(args, settings, stop))
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            task.cancel()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        return await task
    except asyncio.CancelledError:
        return 130


def _commands() -> dict[str, Command]:
    from tradewire.cli import commands

    return {
        "run": commands.run, "api": commands.api, "streams": commands.streams,
        "worker": commands.worker, "notifier": commands.notifier,
        "simulator": commands.simulator, "db": commands.db, "demo": commands.demo,
        "monitor": commands.monitor, "signals": commands.signals,
        "dlq": commands.dlq, "bus": commands.bus,
    }


def print_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=False) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
