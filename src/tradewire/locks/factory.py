"""Lock composition: ``create_locks(settings)`` picks the backend from ``settings.lock_url``."""

from __future__ import annotations

from tradewire.config import Settings
from tradewire.errors import ConfigError
from tradewire.locks.base import Locks

MEMORY = "memory"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def create_locks(settings: Settings) -> Locks:
    """``memory`` -> ``MemoryLocks``; ``redis://host:port/db`` -> ``RedisLocks``. Opens nothing."""
    url = settings.lock_url.strip()
    if url == MEMORY:
        from tradewire.locks.memory import MemoryLocks

        return MemoryLocks()
    if url.startswith(_REDIS_SCHEMES):
        from tradewire.locks.redis import RedisLocks

        return RedisLocks(url)
    raise ConfigError(f"unsupported TRADEWIRE_LOCK_URL {url!r}: use 'memory' or redis://...")
