"""The monitor's pure core: observer reports in, ``RawMessage`` out (no I/O, no awaiting).

The DOM re-adds rows all the time (virtualised list, scroll, channel switch, reload, a new
tab), so the observer's reports are only sightings. ``MessageTracker.feed`` decides:

- rows whose snowflake time is before the monitor started are backlog: never posted;
- a message first seen more than ``max_lag_ms`` after it was sent is stale: not posted;
- the same message id with the same text again is a re-render: not posted;
- the same message id with new text is an edit: posted with ``edit`` one higher.

The edit counter lives here, not in the page, so it survives reloads and reconnects (the
observer's own ``edit`` field is only a hint and is not read).
"""

from __future__ import annotations

import json
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from tradewire.clock import Clock
from tradewire.errors import UNREADABLE_JSON
from tradewire.intake.model import RawMessage, Source

DISCORD_EPOCH_MS = 1_420_070_400_000
_SNOWFLAKE = re.compile(r"\d{1,20}")
_CHANNEL_IN_URL = re.compile(r"/channels/[^/?#]+/(\d+)")


def snowflake_ms(snowflake: str | int) -> int:
    """Unix milliseconds at which Discord created the id (``(id >> 22) + 2015-01-01``)."""
    return (int(snowflake) >> 22) + DISCORD_EPOCH_MS


def make_snowflake(unix_ms: int, sequence: int = 0) -> str:
    """A Discord-shaped id for ``unix_ms`` (for tests and fixtures)."""
    return str(((unix_ms - DISCORD_EPOCH_MS) << 22) | (sequence & 0x3FFFFF))


class ChannelMatch:
    """Which tab URLs are the monitored channel.

    A plain pattern matches as a substring ending at a path boundary, so
    ``discord.com/channels/1/2`` does not match ``.../channels/1/23``; ``re:<regex>`` searches
    the URL with a regular expression.
    """

    def __init__(self, pattern: str) -> None:
        if not pattern:
            raise ValueError("channel pattern must not be empty")
        self.pattern = pattern
        if pattern.startswith("re:"):
            self._regex = re.compile(pattern[3:])
        else:
            self._regex = re.compile(re.escape(pattern) + r"(?=$|[/?#])")

    def __call__(self, url: str) -> bool:
        return self._regex.search(url) is not None


@dataclass(frozen=True)
class Sighting:
    """One observer report (the binding payload), validated."""

    channel_id: str
    message_id: str
    text: str
    author: str | None
    url: str

    @classmethod
    def parse(cls, payload: str) -> Sighting | None:
        try:
            data: Any = json.loads(payload)
        except UNREADABLE_JSON:
            return None
        if not isinstance(data, dict):
            return None
        channel, message = data.get("channelId"), data.get("messageId")
        text, author, url = data.get("text"), data.get("author"), data.get("url")
        if not (isinstance(channel, str) and _SNOWFLAKE.fullmatch(channel)
                and isinstance(message, str) and _SNOWFLAKE.fullmatch(message)
                and isinstance(text, str) and isinstance(url, str)):
            return None
        if int(message) >> 22 == 0:
            return None
        name = (author.strip()[:200] or None) if isinstance(author, str) else None
        return cls(channel, message, text[:20_000], name, url)


class MessageTracker:
    """Turns sightings into messages to post; counts what it dropped and why (``dropped``)."""

    def __init__(
        self,
        start_ms: int,
        channel: ChannelMatch,
        clock: Clock,
        *,
        max_lag_ms: int = 60_000,
        capacity: int = 50_000,
    ) -> None:
        self.start_ms = start_ms
        self.channel = channel
        self.clock = clock
        self.max_lag_ms = max_lag_ms
        self.capacity = capacity
        self.dropped: Counter[str] = Counter()
        self._seen: OrderedDict[str, tuple[int, str]] = OrderedDict()  # id -> (edit, text)

    def feed(self, payload: str) -> RawMessage | None:
        """The message to post for this report, or None (see ``dropped`` for why)."""
        sighting = Sighting.parse(payload)
        reason = self._reject(sighting)
        if reason is not None:
            self.dropped[reason] += 1
            return None
        assert sighting is not None
        known = self._seen.get(sighting.message_id)
        edit = 0 if known is None else known[0] + 1
        self._remember(sighting.message_id, edit, sighting.text)
        return RawMessage(
            source=Source.CDP, channel=sighting.channel_id, message_id=sighting.message_id,
            author=sighting.author, sent_at_ms=snowflake_ms(sighting.message_id),
            text=sighting.text, edit=edit,
        )

    def _reject(self, sighting: Sighting | None) -> str | None:
        if sighting is None:
            return "malformed"
        if not self.channel(sighting.url):
            return "other_page"
        in_url = _CHANNEL_IN_URL.search(sighting.url)
        if in_url is not None and in_url.group(1) != sighting.channel_id:
            return "other_channel"
        known = self._seen.get(sighting.message_id)
        if known is not None:
            return "duplicate" if known[1] == sighting.text else None
        sent_ms = snowflake_ms(sighting.message_id)
        if sent_ms < self.start_ms:
            return "backlog"
        if self.clock.now_ms() - sent_ms > self.max_lag_ms:
            return "stale"
        return None

    def _remember(self, message_id: str, edit: int, text: str) -> None:
        self._seen[message_id] = (edit, text)
        self._seen.move_to_end(message_id)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
