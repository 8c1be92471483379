"""Gateway message events -> ``RawMessage``: pure steps, no I/O.

    snowflake_ms(id)            when a snowflake was made (epoch ms)
    embed_text(embeds)          the readable text of rich embeds (bots post signals as embeds)
    message_text(content, embeds)
    MessageTranslator.translate(event, data) -> list[RawMessage]

The translator filters to the configured channels (and authors) and keeps, per message id, what
it last posted, so an edit carries ``edit = n`` and a delete carries the last text it had.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tradewire.intake.model import RawMessage, Source

DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_TEXT = 20_000
IS_CROSSPOST = 1 << 1  # message flag: a copy delivered by an announcement-channel follow
REFERENCE_FORWARD = 1  # message_reference.type: a forwarded message, not a reply


def snowflake_ms(snowflake: str | int) -> int:
    return (int(snowflake) >> 22) + DISCORD_EPOCH_MS


def embed_text(embeds: Any) -> str:
    """Title, description and fields (``name: value``) of rich embeds; link previews (type
    link/article/image/video/gifv) are skipped: they are not what the author wrote."""
    if not isinstance(embeds, list):
        return ""
    parts: list[str] = []
    for embed in embeds:
        if not isinstance(embed, dict) or embed.get("type", "rich") != "rich":
            continue
        parts.extend(_text(embed.get(key)) for key in ("title", "description"))
        for field in embed.get("fields") or []:
            if isinstance(field, dict):
                parts.append(_field_text(_text(field.get("name")), _text(field.get("value"))))
    return "\n".join(part for part in parts if part)


def message_text(content: str, embeds: Any) -> str:
    return "\n".join(part for part in (content, embed_text(embeds)) if part)[:MAX_TEXT]


def reply_target(data: dict[str, Any]) -> str | None:
    """The id of the message this one replies to (crossposted copies and forwards carry a
    reference to their origin, which is not a reply)."""
    reference = data.get("message_reference")
    if not isinstance(reference, dict) or reference.get("message_id") is None:
        return None
    flags = data.get("flags")
    if isinstance(flags, int) and flags & IS_CROSSPOST:
        return None
    if reference.get("type") == REFERENCE_FORWARD:
        return None
    return str(reference["message_id"])


@dataclass
class _Seen:
    author: str | None
    reply_to: str | None
    content: str
    embeds: Any
    text: str
    edit: int = 0


class MessageTranslator:
    """Filters and converts MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE(_BULK)."""

    def __init__(self, channel_ids: Iterable[str | int], author_ids: Iterable[str | int] = (),
                 *, remember: int = 10_000) -> None:
        self.channel_ids = frozenset(str(c) for c in channel_ids)
        self.author_ids = frozenset(str(a) for a in author_ids)
        self._remember = remember
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    def translate(self, event: str, data: dict[str, Any]) -> list[RawMessage]:
        if str(data.get("channel_id")) not in self.channel_ids:
            return []
        if event == "MESSAGE_CREATE":
            return self._created(data)
        if event == "MESSAGE_UPDATE":
            return self._updated(data)
        if event == "MESSAGE_DELETE":
            return self._deleted(str(data.get("channel_id")), data.get("id"))
        if event == "MESSAGE_DELETE_BULK":
            ids = data.get("ids") or []
            return [m for i in ids for m in self._deleted(str(data["channel_id"]), i)]
        return []

    def _created(self, data: dict[str, Any]) -> list[RawMessage]:
        message_id = str(data.get("id", ""))
        author = _author(data)
        if not message_id.isdigit() or message_id in self._seen or not self._wanted(author):
            return []
        content = _text(data.get("content"))
        seen = _Seen(author, reply_target(data), content, data.get("embeds"),
                     message_text(content, data.get("embeds")))
        self._remember_seen(message_id, seen)
        return [self._raw(str(data["channel_id"]), message_id, seen)]

    def _updated(self, data: dict[str, Any]) -> list[RawMessage]:
        message_id = str(data.get("id", ""))
        if not message_id.isdigit() or ("content" not in data and "embeds" not in data):
            return []  # no text in it (pins, flags, thread changes)
        seen = self._seen.get(message_id)
        known = seen is not None
        if seen is None:  # written before we connected, or forgotten
            seen = _Seen(_author(data), reply_target(data), "", None, "")
        if not self._wanted(seen.author):
            return []
        content = _text(data["content"]) if "content" in data else seen.content
        embeds = data.get("embeds", seen.embeds)
        text = message_text(content, embeds)
        if text == seen.text and (known or not text):
            return []  # e.g. a link preview was added: nothing the author changed
        seen.content, seen.embeds, seen.text, seen.edit = content, embeds, text, seen.edit + 1
        self._remember_seen(message_id, seen)
        return [self._raw(str(data["channel_id"]), message_id, seen)]

    def _deleted(self, channel: str, message_id: Any) -> list[RawMessage]:
        if message_id is None or not str(message_id).isdigit():
            return []
        seen = self._seen.pop(str(message_id), None)
        if seen is None:  # unknown author: post anyway, a delete of nothing is harmless
            seen = _Seen(None, None, "", None, "")
        elif not self._wanted(seen.author):
            return []
        return [self._raw(channel, str(message_id), seen).model_copy(update={"deleted": True})]

    def _wanted(self, author: str | None) -> bool:
        return not self.author_ids or author in self.author_ids

    def _remember_seen(self, message_id: str, seen: _Seen) -> None:
        self._seen[message_id] = seen
        self._seen.move_to_end(message_id)
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)

    @staticmethod
    def _raw(channel: str, message_id: str, seen: _Seen) -> RawMessage:
        return RawMessage(
            source=Source.DISCORD_BOT, channel=channel, message_id=message_id,
            reply_to=seen.reply_to, author=seen.author, sent_at_ms=snowflake_ms(message_id),
            text=seen.text, edit=seen.edit)


def _author(data: dict[str, Any]) -> str | None:
    author = data.get("author")
    if isinstance(author, dict) and author.get("id") is not None:
        return str(author["id"])
    return None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _field_text(name: str, value: str) -> str:
    if not name or not value:
        return name or value
    separator = "\n" if "\n" in value else " "
    return f"{name.rstrip(':').rstrip()}:{separator}{value}"
