"""Bus composition: ``create_bus(settings)`` picks the backend from ``settings.bus_url``."""

from __future__ import annotations

from tradewire.bus.base import Bus
from tradewire.config import Settings
from tradewire.errors import ConfigError

EMBEDDED = "embedded"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def create_bus(settings: Settings) -> Bus:
    """``embedded`` -> ``EmbeddedBus``; ``redis://host:port/db`` -> ``RedisStreamsBus``.

    Nothing is opened here. The Redis bus creates its streams and consumer group lazily on
    first use; composition roots that want to fail fast call ``await bus.setup()``.
    """
    url = settings.bus_url.strip()
    if url == EMBEDDED:
        from tradewire.bus.embedded import EmbeddedBus

        return EmbeddedBus(settings.bus_partitions)
    if url.startswith(_REDIS_SCHEMES):
        from tradewire.bus.redis_streams import RedisStreamsBus

        return RedisStreamsBus(url, settings.bus_partitions)
    raise ConfigError(f"unsupported TRADEWIRE_BUS_URL {url!r}: use 'embedded' or redis://...")
