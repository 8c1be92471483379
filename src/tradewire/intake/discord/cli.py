"""Command-line glue for ``tradewire monitor discord-bot`` (the lead wires the subcommand).

    sub = monitor.add_parser("discord-bot", help="...")
    add_arguments(sub)
    ...
    await run_from_args(args, api_url=..., api_token=operator_token(settings), stop=stop)

The bot token comes from ``--token`` or, better (a flag shows in ``ps``), ``$DISCORD_BOT_TOKEN``.
It is never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Iterable, Mapping

from tradewire.errors import ConfigError
from tradewire.intake.discord.bot import DEFAULT_GATEWAY_URL, BotOptions, run_discord_bot

TOKEN_ENV = "DISCORD_BOT_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token", default=None, metavar="TOKEN",
        help=f"Discord bot token (default: ${TOKEN_ENV}; prefer the variable)")
    parser.add_argument(
        "--channel", dest="channel_ids", action="append", default=[], metavar="ID",
        help="id of a channel to watch (repeat, or separate with commas); required")
    parser.add_argument(
        "--author", dest="author_ids", action="append", default=[], metavar="ID",
        help="only messages by this user/bot/webhook id (repeat, or commas); default: anyone")
    parser.add_argument(
        "--direct-messages", action="store_true",
        help="also ask for DIRECT_MESSAGES (DM channel ids must still be listed in --channel)")
    parser.add_argument(
        "--gateway-url", default=DEFAULT_GATEWAY_URL, help="Discord gateway (tests: a local one)")
    parser.add_argument(
        "--api-url", default=None, help="tradewire API base URL (default: this host's API)")


def bot_token(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> str:
    token = (args.token or environ.get(TOKEN_ENV, "")).strip()
    if not token:
        raise ConfigError(f"no Discord bot token: set ${TOKEN_ENV} (or pass --token)")
    return token


def snowflakes(values: Iterable[str], what: str) -> list[str]:
    """Split comma-separated ids and check that each is a Discord snowflake (digits)."""
    ids = [part.strip() for value in values for part in value.split(",") if part.strip()]
    bad = [i for i in ids if not i.isdigit()]
    if bad:
        raise ConfigError(f"{what} ids are numbers (Developer Mode -> Copy ID), not {bad}")
    return ids


async def run_from_args(args: argparse.Namespace, api_url: str, api_token: str,
                        stop: asyncio.Event, *, options: BotOptions | None = None) -> None:
    """Run the bot as the command line asked; ``ConfigError`` for bad or missing arguments,
    ``DiscordGatewayFatal`` when Discord refuses the bot."""
    channels = snowflakes(args.channel_ids, "channel")
    if not channels:
        raise ConfigError("give at least one --channel to watch")
    await run_discord_bot(
        args.api_url or api_url, api_token, bot_token(args), channels, stop,
        gateway_url=args.gateway_url, author_ids=snowflakes(args.author_ids, "author"),
        direct_messages=args.direct_messages, options=options)
