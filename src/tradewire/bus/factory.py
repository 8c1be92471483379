"""Bus composition: ``create_bus(settings)`` picks the backend from ``settings.bus_url``."""

from __future__ import annotations

from pathlib import Path

from tradewire.bus.base import Bus
from tradewire.config import Settings
from tradewire.errors import ConfigError

EMBEDDED = "embedded"
MEMORY = "memory"
SQLITE_PREFIX = "sqlite:///"
BUS_FILE = "bus.db"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_AMQP_SCHEMES = ("amqp://", "amqps://")


def create_bus(settings: Settings) -> Bus:
    """Pick the backend from ``settings.bus_url``:

    * ``embedded`` (default) -> ``SqliteBus`` on ``<data_dir>/bus.db``: durable, survives kill -9;
    * ``sqlite:///path/to/bus.db`` -> ``SqliteBus`` on that file;
    * ``memory`` -> ``EmbeddedBus`` (in-process, nothing survives a restart);
    * ``redis://host:port/db`` -> ``RedisStreamsBus``;
    * ``amqp://user:pass@host:port/vhost`` -> ``RabbitMQBus``.

    Nothing is opened here: every backend connects / opens its file lazily on first use;
    composition roots that want to fail fast call ``await bus.setup()`` where it exists.
    """
    url = settings.bus_url.strip()
    partitions = settings.bus_partitions
    if url == EMBEDDED or url.startswith(SQLITE_PREFIX):
        from tradewire.bus.sqlite_bus import SqliteBus

        path = settings.data_dir / BUS_FILE if url == EMBEDDED else Path(url[len(SQLITE_PREFIX):])
        return SqliteBus(path, partitions)
    if url == MEMORY:
        from tradewire.bus.embedded import EmbeddedBus

        return EmbeddedBus(partitions)
    if url.startswith(_REDIS_SCHEMES):
        from tradewire.bus.redis_streams import RedisStreamsBus

        return RedisStreamsBus(url, partitions)
    if url.startswith(_AMQP_SCHEMES):
        from tradewire.bus.rabbitmq import RabbitMQBus

        return RabbitMQBus(url, partitions, pack_max=settings.bus_pack_max)
    raise ConfigError(
        f"unsupported TRADEWIRE_BUS_URL {url!r}: use 'embedded', 'memory', sqlite:///path, "
        "redis://... or amqp://..."
    )
