"""Settings from the environment (prefix ``TRADEWIRE_``) or a ``.env`` file.

The defaults are the one-machine deployment: a SQLite file and a generated master key under
``./data/``, the embedded bus, in-process locks and the built-in exchange simulator. The
distributed deployment changes only these values (see README "Distributed run").
"""

from __future__ import annotations

import base64
import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SIMULATOR = "sim"
"""``exchange_url`` value meaning: start the built-in simulator and trade against it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRADEWIRE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Path("data")
    database_url: str = ""  # default: sqlite file under data_dir
    bus_url: str = "embedded"  # durable file data/bus.db; memory | redis://… | amqp://…
    lock_url: str = "memory"  # or redis://host:port/db
    exchange_url: str = SIMULATOR  # or http(s)://host:port of a Binance USD-M compatible REST API
    exchange_ws_url: str = ""  # default: derived from exchange_url (http→ws)
    sim_host: str = "127.0.0.1"
    sim_port: int = 8090
    master_key: str = ""  # base64 32 bytes; default: generated into data_dir/master.key
    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"  # CLI processes (uvloop where installed)
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    operator_token: str = ""  # bearer token for operator endpoints; empty: generated into data_dir
    bus_partitions: int = Field(default=16, ge=1, le=1024)
    # RabbitMQ: envelopes of one partition that one publish_many packs into one AMQP message
    # (1: a message per event, as before packs; see tradewire.bus.rabbitmq)
    bus_pack_max: int = Field(default=50, ge=1, le=1000)
    retry_delays_s: tuple[float, ...] = (1.0, 2.0, 3.0)
    max_attempts: int = Field(default=3, ge=1)
    # a message of a consumer killed with SIGKILL is reclaimed by another one within
    # 4/3 x redelivery_idle_s (reclaim runs every redelivery_idle_s / 3): 13.3 s by default
    redelivery_idle_s: float = Field(default=10.0, gt=0)
    alert_webhook_url: str = ""  # operators' Discord webhook for DLQ alerts
    keepalive_interval_s: float = 30 * 60
    notifier_poll_s: float = 0.5
    worker_name: str = Field(default_factory=lambda: f"worker-{os.getpid()}")
    # --- signal intake (see tradewire.intake.profiles for the profiles file format) ---
    intake_profiles_file: Path | None = None  # JSON channel profiles; None: defaults only
    intake_dedupe_window_s: float = Field(default=600.0, gt=0)  # same content → duplicate
    intake_max_entry_distance_pct: Decimal = Field(default=Decimal(5), gt=0)  # entry vs mark
    intake_confirm_ttl_s: float = Field(default=300.0, gt=0)  # how long a pending one may wait
    intake_default_size_usdt: Decimal = Field(default=Decimal(100), gt=0)  # per account
    intake_notional_base_usdt: Decimal = Field(default=Decimal(1000), gt=0)  # "Amount: 5%" base
    intake_max_size_usdt: Decimal = Field(default=Decimal(1000), gt=0)  # hard cap per account
    intake_default_leverage: int = Field(default=5, ge=1, le=125)  # when a signal names none
    tradingview_secret: str = ""  # shared secret in alert bodies; empty: webhook refuses all
    tradingview_budget_s: float = Field(default=2.0, gt=0)  # answer TradingView within this
    # --- DLQ monitor (the third line of defence; tradewire.bus.alerts) ---
    dlq_check_interval_s: float = Field(default=300, gt=0)  # how often the DLQ is checked
    dlq_alert_at: int = Field(default=10, ge=1)  # DLQ size that raises a red Discord alert
    dlq_alert_cooldown_s: float = Field(default=3600, ge=0)  # repeat a standing alert after this
    # --- dependency outage (tradewire.bus.outage): probe the database from .. to, doubling ---
    outage_probe_min_s: float = Field(default=0.5, gt=0)
    outage_probe_max_s: float = Field(default=10.0, gt=0)
    # --- worker batch path (tradewire.processor.batch_apply); batch max 0: one event at a time ---
    worker_batch_max: int = Field(default=256, ge=0)  # events applied together at most
    worker_batch_wait_ms: float = Field(default=2.0, ge=0)  # wait this long for more events
    # events in flight per worker process (bounds a batch, so the transactions per event under
    # a backlog); a batch's acks and Redis lock calls each go out as one pipeline (bus.acks,
    # locks.redis), so this is not bounded by the Redis client's connection pool
    worker_concurrency: int = Field(default=512, ge=1)

    metrics_port: int = Field(default=0, ge=0, le=65535)  # worker/streams/notifier; 0: off
    metrics_host: str = "127.0.0.1"  # scrape from the internal network only

    @field_validator("retry_delays_s", mode="before")
    @classmethod
    def _parse_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(part) for part in value.split(",") if part.strip())
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tradewire.db').as_posix()}"

    @property
    def uses_simulator(self) -> bool:
        return self.exchange_url == SIMULATOR

    @property
    def rest_base_url(self) -> str:
        if self.uses_simulator:
            return f"http://{self.sim_host}:{self.sim_port}"
        return self.exchange_url.rstrip("/")

    @property
    def ws_base_url(self) -> str:
        if self.exchange_ws_url:
            return self.exchange_ws_url.rstrip("/")
        base = self.rest_base_url
        return "ws" + base[4:] if base.startswith("http") else base

    # --- streams layer (tradewire.streams; docs/streams.md) ---
    stream_shards: int = Field(default=256, ge=1, le=65536)  # virtual shards of accounts
    shard_lease_ttl_s: float = Field(default=6.0, gt=0)  # a dead pod's shards move within
    shard_lease_renew_s: float = Field(default=2.0, gt=0)  # ttl + renew (~8 s)
    handoff_timeout_s: float = Field(default=15.0, ge=0)  # graceful stop: keep sockets until
    #   the new owners report the shards streaming, at most this long (+ 60 s per started
    #   ip_weight_per_minute accounts held, while another pod is live: their listenKey POSTs)
    stream_name: str = Field(default_factory=lambda: f"streams-{os.getpid()}")  # pod member name
    keys_per_connection: int = Field(default=200, ge=1, le=1024)  # 1: one socket per account
    subscribe_batch: int = Field(default=50, ge=1, le=1024)  # listenKeys per SUBSCRIBE message
    control_msgs_per_s: float = Field(default=5.0, gt=0, le=10)  # per connection (limit: 10)
    connection_max_age_s: float = Field(default=23 * 3600, gt=0)  # rotate before the 24 h cut
    connect_attempts: int = Field(default=300, ge=1)  # per egress IP and window ...
    connect_window_s: float = Field(default=300.0, gt=0)  # ... (reference §3.3)
    # request weight per minute this process may spend of its egress IP's budget (the exchange:
    # 2400 per IP); processes sharing one IP each get their share (e.g. 2 pods: 1200)
    ip_weight_per_minute: int = Field(default=2400, ge=1)
    keepalive_max_per_s: float = Field(default=10.0, gt=0)  # global cap on listenKey PUTs
    listenkey_concurrency: int = Field(default=16, ge=1)  # listenKey POSTs in flight
    reconcile_concurrency: int = Field(default=4, ge=1)  # accounts reconciled at once
    blind_after_s: float = Field(default=600.0, gt=0)  # no frame (pings incl.) this long: blind
    ws_ping_interval_s: float = Field(default=20.0, gt=0)  # client pings; no pong in
    ws_ping_timeout_s: float = Field(default=20.0, gt=0)  # this long closes the socket
    # permessage-deflate on user-data sockets: decompression showed as up to ~20 % of the
    # streams process's per-event profile (bench-streams: no clear change in events/s); on
    # where bandwidth is dear
    ws_compression: bool = False
    # publish_many calls in flight at once from the streams process (never two with one key:
    # order per key holds); 1 sends one batch at a time
    stream_publish_in_flight: int = Field(default=4, ge=1, le=64)

    # --- partition ownership (tradewire.bus.ownership): lease TTL and renew period ---
    partition_lease_ttl_s: float = Field(default=6.0, gt=0)  # a dead worker's partitions move
    partition_lease_renew_s: float = Field(default=2.0, gt=0)  # within ttl + renew (~8 s)


def _read_or_create(path: Path, make: bytes, what: str) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(make.decode() + "\n")
    path.chmod(0o600)
    logging.getLogger("tradewire.config").warning(
        "generated a new %s into %s; keep it safe and set it explicitly in production", what, path
    )
    return make.decode()


def master_key_bytes(settings: Settings) -> bytes:
    """The 32-byte master key for secret encryption: from settings, or generated on first run."""
    text = settings.master_key or _read_or_create(
        settings.data_dir / "master.key", base64.urlsafe_b64encode(os.urandom(32)), "master key"
    )
    try:
        key = base64.urlsafe_b64decode(text)
    except ValueError as exc:  # binascii.Error is a ValueError
        from tradewire.errors import ConfigError

        raise ConfigError("TRADEWIRE_MASTER_KEY is not valid base64") from exc
    if len(key) != 32:
        from tradewire.errors import ConfigError

        raise ConfigError("TRADEWIRE_MASTER_KEY must decode to 32 bytes")
    return key


def operator_token(settings: Settings) -> str:
    """Bearer token for operator endpoints: from settings, or generated on first run."""
    if settings.operator_token:
        return settings.operator_token
    return _read_or_create(
        settings.data_dir / "operator.token",
        base64.urlsafe_b64encode(os.urandom(24)).rstrip(b"="),
        "operator token",
    )
