"""Command-line glue for ``tradewire monitor cdp`` (the lead wires the subcommand).

    sub = monitor.add_parser("cdp", help="watch a Discord channel in your browser (opt-in)")
    add_arguments(sub)
    ...
    await run_from_args(args, api_url=..., api_token=operator_token(settings), stop=stop)

Reading Discord through a user's logged-in client may break Discord's terms (self-bots) and
get the account banned, so the command refuses to start without ``--accept-risk``; see
docs/cdp-monitor.md.
"""

from __future__ import annotations

import argparse
import asyncio

from tradewire.errors import ConfigError
from tradewire.intake.cdp.monitor import DEFAULT_DEBUG_URL, run_cdp_monitor

RISK = (
    "Reading Discord through your logged-in browser may violate Discord's terms (self-bots) "
    "and can get the account banned; the DevTools port gives full control of every site "
    "logged in to that browser profile. The Discord bot (tradewire monitor discord-bot) is "
    "the terms-safe alternative. Pass --accept-risk to run it anyway."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel", required=True, metavar="PATTERN",
        help="the tab to watch: part of its URL, e.g. discord.com/channels/<guild>/<channel> "
             "(or re:<regex>)")
    parser.add_argument(
        "--debug-url", default=DEFAULT_DEBUG_URL,
        help=f"the browser's DevTools HTTP endpoint (default: {DEFAULT_DEBUG_URL})")
    parser.add_argument(
        "--allow-remote", action="store_true",
        help="allow a DevTools endpoint that is not on 127.0.0.1 (dangerous)")
    parser.add_argument(
        "--max-lag-s", type=float, default=60.0,
        help="drop a message first seen this long after it was sent (default: 60)")
    parser.add_argument(
        "--api-url", default=None, help="tradewire API base URL (default: this host's API)")
    parser.add_argument(
        "--accept-risk", action="store_true",
        help="I understand that reading Discord through my browser may get my account banned")


async def run_from_args(args: argparse.Namespace, api_url: str, api_token: str,
                        stop: asyncio.Event) -> None:
    if not args.accept_risk:
        raise ConfigError(RISK)
    await run_cdp_monitor(
        args.api_url or api_url, api_token, args.debug_url, args.channel, stop,
        allow_remote=args.allow_remote, max_lag_s=args.max_lag_s)
