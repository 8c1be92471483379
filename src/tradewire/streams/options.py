"""``StreamOptions``: the streams manager's knobs, in one frozen record.

Apart from the manager so that every part of it (connection groups, upkeep, account driving)
reads the same values, and so that ``from_settings`` is the one place mapping the
``TRADEWIRE_`` settings (by field name) onto them. Times are real seconds unless noted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tradewire.config import Settings


@dataclass(frozen=True)
class StreamOptions:
    """The manager's knobs; ``from_settings`` maps the ``TRADEWIRE_`` settings."""

    keys_per_connection: int = 200
    subscribe_batch: int = 50
    control_msgs_per_s: float = 5.0
    connection_max_age_s: float = 23 * 3600
    connect_attempts: int = 300
    connect_window_s: float = 300.0
    keepalive_interval_s: float = 1800.0
    keepalive_max_per_s: float = 10.0
    listenkey_concurrency: int = 16
    reconcile_concurrency: int = 4
    blind_after_s: float = 600.0
    ws_ping_interval_s: float | None = 20.0
    ws_ping_timeout_s: float | None = 20.0
    ws_compression: bool = False
    handoff_timeout_s: float = 15.0
    ip_weight_per_minute: int = 2400  # the exchange's REST weight per IP (listenKey POST: 1)
    stream_shards: int = 256
    refresh_s: float = 2.0  # account listing re-read (real seconds)
    tick_s: float = 0.1  # ownership, keepalives, rotation, liveness (real seconds)
    audit_interval_s: float = 300.0  # LIST_SUBSCRIPTIONS per connection (clock seconds)
    # each socket's rotation / blindness / audit check (clock seconds; spread over it)
    watch_interval_s: float = 1.0
    keepalive_retry_s: float = 30.0  # after a failed PUT (clock seconds)
    max_backoff_s: float = 30.0  # connect / account retries (real seconds)
    # a shard gone from owned() and not in draining() is lost after this; 0: at once (a shard
    # handed over enters draining() the moment it leaves owned(): RedisShards' releasing hook)
    lost_grace_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> StreamOptions:
        names = [name for name in cls.__dataclass_fields__ if hasattr(settings, name)]
        values: dict[str, Any] = {name: getattr(settings, name) for name in names}
        values.update(overrides)
        return cls(**values)

