"""``tradewire dlq ...``, ``tradewire bus ...`` and ``tradewire monitor dlq``.

The ``dlq`` and ``bus`` commands talk to the bus directly (``create_bus(Settings())``): Redis,
RabbitMQ, or the embedded bus file (``data/bus.db``) that ``tradewire run`` uses, which other
processes may open too. Only the in-process ``memory`` bus cannot be reached from here: for it use
the operator API (``/api/dlq``, ``/api/bus``). Exit codes: 0 done, 1 a
``show`` of an unknown id, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from tradewire.bus import dlq
from tradewire.bus.alerts import DlqMonitor
from tradewire.bus.base import Bus
from tradewire.bus.factory import MEMORY, create_bus
from tradewire.config import Settings
from tradewire.errors import InvalidInput
from tradewire.runtime import Runtime, open_runtime


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    monitor_sources: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``dlq``, ``bus`` and ``monitor dlq``."""
    queue = sub.add_parser("dlq", help="inspect, replay and purge the dead-letter queue")
    actions = queue.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="entries, oldest first")
    _filters(listing)
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON document")
    show = actions.add_parser("show", help="one entry in full")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    for name, text in (("replay", "republish entries (marked replay_of) and remove them"),
                       ("purge", "delete entries for good")):
        act = actions.add_parser(name, help=text)
        act.add_argument("ids", nargs="*", metavar="ID")
        _filters(act)
        act.add_argument("--all", action="store_true", help="every entry (no ids or filters)")
        act.add_argument("--dry-run", action="store_true", help="report only, change nothing")
        act.add_argument("--json", action="store_true")
        if name == "replay":
            act.add_argument("--force", action="store_true",
                             help="also republish bodies that are not valid envelopes, raw")
    bus = sub.add_parser("bus", help="pause or resume consumption; status")
    bus.add_argument("action", choices=["pause", "resume", "status"])
    monitor_sources.add_parser("dlq", help="the scheduled DLQ check (error log, Discord alert)")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", type=int, default=None, help="user id")
    parser.add_argument("--symbol", default=None)
    parser.add_argument("--error", default=None, help="text in the error or its type")
    parser.add_argument("--older-than", default=None, help="age, e.g. 30s, 15m, 1h, 2d")


def _filter_of(args: argparse.Namespace) -> dlq.DlqFilter:
    age = dlq.parse_age(args.older_than) if args.older_than else None
    return dlq.DlqFilter(user_id=args.user, symbol=args.symbol, error=args.error,
                         older_than_ms=age)


def _err(text: str) -> None:
    sys.stderr.write(f"tradewire: {text}\n")


def _out(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _shared_bus(settings: Settings) -> Bus | None:
    if settings.bus_url.strip() == MEMORY:
        _err("the memory bus lives inside the `tradewire run` process: use the operator "
             "API (/api/dlq, /api/bus) or set TRADEWIRE_BUS_URL to a shared bus")
        return None
    return create_bus(settings)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def dlq_command(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    bus = _shared_bus(settings)
    if bus is None:
        return 2
    try:
        return await _dlq(bus, args)
    except InvalidInput as exc:
        _err(str(exc))
        return 2
    finally:
        await bus.close()


async def _dlq(bus: Bus, args: argparse.Namespace) -> int:
    now = _now_ms()
    if args.action == "show":
        letter = await bus.dlq_get(args.id)
        if letter is None:
            _err(f"no DLQ entry {args.id!r}")
            return 1
        entry = dlq.describe(letter, now)
        if args.json:
            _out(entry)
        else:
            sys.stdout.writelines(f"{key}: {value}\n" for key, value in entry.items())
        return 0
    flt = _filter_of(args)
    if args.action == "list":
        letters = await dlq.select(bus, flt, now, limit=args.limit)
        entries = [dlq.describe(x, now) for x in letters]
        if args.json:
            _out({"size": await bus.dlq_size(), "entries": entries})
        else:
            sys.stdout.write(f"DLQ size {await bus.dlq_size()}, shown {len(entries)}\n")
            sys.stdout.writelines(_line(e) for e in entries)
        return 0
    dlq.require_target(args.ids, flt, args.all)
    targets = await dlq.select(bus, flt, now, ids=args.ids)
    if args.action == "replay":
        outcomes = await dlq.replay(bus, targets, dry_run=args.dry_run, force=args.force)
    else:
        outcomes = await dlq.purge(bus, targets, dry_run=args.dry_run)
    if args.json:
        _out({"dry_run": args.dry_run, "entries": [o.as_dict() for o in outcomes],
              "dlq_size": await bus.dlq_size()})
    else:
        for o in outcomes:
            extra = f" -> {o.new_id}" if o.new_id else ""
            sys.stdout.write(f"{o.action} {o.id}{extra}{f' ({o.reason})' if o.reason else ''}\n")
        sys.stdout.write(f"{len(outcomes)} entries; DLQ size now {await bus.dlq_size()}\n")
    return 0


def _line(entry: dict[str, Any]) -> str:
    age_s = entry["age_ms"] // 1000
    return (f"{entry['id']}  p{entry['partition']}  user={entry['user_id']}  "
            f"{entry['symbol'] or '-'}  attempts={entry['attempts']}  age={age_s}s  "
            f"{entry['error_type']}: {entry['error'][:120]}\n")


async def bus_command(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    bus = _shared_bus(settings)
    if bus is None:
        return 2
    try:
        if args.action in ("pause", "resume"):
            await bus.set_paused(args.action == "pause")
        _out({"paused": await bus.is_paused(), "pending": await bus.pending(),
              "dlq_size": await bus.dlq_size()})
    finally:
        await bus.close()
    return 0


def dlq_monitor(rt: Runtime) -> DlqMonitor:
    """The DLQ check role, configured from the runtime's settings."""
    s = rt.settings
    return DlqMonitor(
        rt.bus, rt.sessions, rt.clock, webhook_url=s.alert_webhook_url,
        interval_s=s.dlq_check_interval_s, alert_at=s.dlq_alert_at,
        cooldown_s=s.dlq_alert_cooldown_s,
    )


async def monitor_dlq(args: argparse.Namespace, settings: Settings, stop: asyncio.Event) -> int:
    """``tradewire monitor dlq``: the scheduled check until stopped."""
    if settings.bus_url.strip() == MEMORY:
        _err("the memory bus is checked inside `tradewire run`; this monitor needs a "
             "shared bus (TRADEWIRE_BUS_URL)")
        return 2
    async with open_runtime(settings, migrate=False) as rt:
        await dlq_monitor(rt).run(stop)
    return 0
