"""The terms-of-service-safe Discord listener: a bot account on the gateway (``gateway.py``,
sans-I/O), message events turned into ``RawMessage`` (``messages.py``), the asyncio adapter that
posts them to the intake API (``bot.py``) and its command-line glue (``cli.py``).

Importing this package opens nothing; ``websockets`` and ``httpx`` load with ``bot``.
"""

from tradewire.intake.discord.gateway import (
    DEFAULT_INTENTS,
    DiscordGatewayFatal,
    GatewaySession,
)
from tradewire.intake.discord.messages import MessageTranslator, snowflake_ms

__all__ = [
    "DEFAULT_INTENTS",
    "DiscordGatewayFatal",
    "GatewaySession",
    "MessageTranslator",
    "snowflake_ms",
]
