"""Per-channel profiles: how a channel writes, how much it is trusted, how big its trades are.

The file named by ``TRADEWIRE_INTAKE_PROFILES_FILE`` (optional) is JSON::

    {
      "default":  {"trust": "confirm_all", "max_lag_s": 60},
      "channels": {
        "tradingview":             {"trust": "auto", "size_usdt": "200"},
        "discord_bot:123456789":   {"name": "vip", "trust": "auto", "max_signals_per_minute": 5,
                                    "notional_base_usdt": "2000", "max_size_usdt": "500"}
      }
    }

Every key of an entry is optional. ``ChannelProfile`` keys (``name``, ``trust``,
``two_prices_mean``, ``zone_price``, ``require_stop_loss``, ``max_leverage``, ``max_size_pct``,
``max_signals_per_minute``, ``max_lag_s``) shape parsing and the safety checks; the sizing keys
are tradewire's own:

* ``size_usdt`` — position value per account when the signal names no size;
* ``notional_base_usdt`` — what "Amount: 5%" is a percentage of (5% of 2000 = 100 USDT);
* ``max_size_usdt`` — hard cap on the position value per account, whatever the signal says;
* ``default_leverage`` — when the signal names none (always capped by ``max_leverage``).

``default`` overrides the built-in defaults (``ChannelProfile()`` and the ``TRADEWIRE_INTAKE_*``
settings) for every channel; a channel entry overrides ``default``. A channel is looked up as
``"<source>:<channel>"`` first (e.g. ``"discord_bot:123"``), then as ``"<channel>"`` alone
(e.g. ``"tradingview"``); unknown channels get the default profile (``confirm_all`` unless the
file says otherwise), so nothing from a new channel trades without a human.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tradewire.config import Settings
from tradewire.errors import ConfigError
from tradewire.intake.model import ChannelProfile, Trust


@dataclass(frozen=True)
class ChannelConfig:
    """A channel's ``ChannelProfile`` and its sizing."""

    profile: ChannelProfile = field(default_factory=ChannelProfile)
    size_usdt: Decimal = Decimal(100)
    notional_base_usdt: Decimal = Decimal(1000)
    max_size_usdt: Decimal = Decimal(1000)
    default_leverage: int = 5


class _Entry(BaseModel):
    """One entry of the profiles file (every key optional)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    trust: Trust | None = None
    two_prices_mean: Literal["entries", "zone"] | None = None
    zone_price: Literal["worst", "middle", "best"] | None = None
    require_stop_loss: bool | None = None
    max_leverage: int | None = Field(default=None, ge=1, le=125)
    max_size_pct: Decimal | None = Field(default=None, gt=0, le=100)
    max_signals_per_minute: int | None = Field(default=None, ge=1)
    max_lag_s: float | None = Field(default=None, gt=0)
    size_usdt: Decimal | None = Field(default=None, gt=0)
    notional_base_usdt: Decimal | None = Field(default=None, gt=0)
    max_size_usdt: Decimal | None = Field(default=None, gt=0)
    default_leverage: int | None = Field(default=None, ge=1, le=125)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: _Entry = Field(default_factory=_Entry)
    channels: dict[str, _Entry] = Field(default_factory=dict)


_PROFILE_KEYS = {f.name for f in fields(ChannelProfile)}


def _apply(base: ChannelConfig, entry: _Entry, name: str | None = None) -> ChannelConfig:
    given = entry.model_dump(exclude_none=True)
    if name is not None:
        given.setdefault("name", name)
    profile = replace(base.profile, **{k: v for k, v in given.items() if k in _PROFILE_KEYS})
    sizing = {k: v for k, v in given.items() if k not in _PROFILE_KEYS}
    return replace(base, profile=profile, **sizing)


class ProfileBook:
    """The configured channels and the default for all others."""

    def __init__(
        self, default: ChannelConfig | None = None,
        channels: Mapping[str, ChannelConfig] | None = None,
    ) -> None:
        self.default = default or ChannelConfig()
        self.channels = dict(channels or {})

    def for_channel(self, source: str, channel: str) -> ChannelConfig:
        """The channel's configuration: ``source:channel``, then ``channel``, then default."""
        return (
            self.channels.get(f"{source}:{channel}")
            or self.channels.get(channel)
            or self.default
        )

    @classmethod
    def from_data(cls, data: Mapping[str, Any], base: ChannelConfig | None = None) -> ProfileBook:
        """Profiles from the decoded JSON document; ``ConfigError`` naming what is wrong."""
        try:
            parsed = _File.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"intake profiles: {exc}") from exc
        default = _apply(base or ChannelConfig(), parsed.default)
        channels = {key: _apply(default, entry, key) for key, entry in parsed.channels.items()}
        return cls(default, channels)

    @classmethod
    def load(cls, path: Path | None, base: ChannelConfig | None = None) -> ProfileBook:
        """Profiles from a JSON file (None: the defaults only)."""
        if path is None:
            return cls(base)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read intake profiles {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"intake profiles {path}: the document must be a JSON object")
        return cls.from_data(data, base)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProfileBook:
        base = ChannelConfig(
            size_usdt=settings.intake_default_size_usdt,
            notional_base_usdt=settings.intake_notional_base_usdt,
            max_size_usdt=settings.intake_max_size_usdt,
            default_leverage=settings.intake_default_leverage,
        )
        return cls.load(settings.intake_profiles_file, base)


@dataclass(frozen=True)
class IntakeConfig:
    """Service-wide knobs (per-channel ones live in the profiles)."""

    dedupe_window_s: float = 600.0
    max_entry_distance_pct: Decimal = Decimal(5)
    confirm_ttl_s: float = 300.0  # a pending message may be confirmed this long after it was sent
    tradingview_secret: str = ""
    tradingview_budget_s: float = 2.0
    mark_timeout_s: float = 1.0  # the mark price is needed before the verdict; don't wait long

    @classmethod
    def from_settings(cls, settings: Settings) -> IntakeConfig:
        return cls(settings.intake_dedupe_window_s, settings.intake_max_entry_distance_pct,
                   settings.intake_confirm_ttl_s, settings.tradingview_secret,
                   settings.tradingview_budget_s)
