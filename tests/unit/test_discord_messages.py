"""Discord message events -> RawMessage: filters, snowflake time, embeds, edits, deletes."""

from __future__ import annotations

from typing import Any

from tradewire.intake.discord.messages import (
    MessageTranslator,
    embed_text,
    reply_target,
    snowflake_ms,
)
from tradewire.intake.model import RawMessage, Source

CHANNEL = "1100000000000000001"
OTHER = "1100000000000000002"
AUTHOR = "2200000000000000001"
MSG = "1234567890123456789"  # (MSG >> 22) + 1420070400000 = 1714414322167 ms


def create(content: str = "BTCUSDT LONG", *, message_id: str = MSG, channel: str = CHANNEL,
           author: str = AUTHOR, **extra: Any) -> dict[str, Any]:
    return {"id": message_id, "channel_id": channel, "author": {"id": author, "bot": True},
            "content": content, "embeds": [], "type": 0, "flags": 0, **extra}


def test_snowflake_time_is_discord_epoch_plus_the_high_bits() -> None:
    """A snowflake's top 42 bits are milliseconds since 2015-01-01."""
    assert snowflake_ms(MSG) == (int(MSG) >> 22) + 1_420_070_400_000 == 1_714_414_322_167
    assert snowflake_ms(175928847299117063) == 1_462_015_105_796  # Discord docs' example


def test_a_message_in_a_watched_channel_becomes_one_raw_message() -> None:
    """Ids, author, snowflake time and the reply reference are carried over."""
    data = create("close half", message_reference={"message_id": "999", "channel_id": CHANNEL},
                  type=19)
    [raw] = MessageTranslator([CHANNEL]).translate("MESSAGE_CREATE", data)
    assert raw == RawMessage(source=Source.DISCORD_BOT, channel=CHANNEL, message_id=MSG,
                             reply_to="999", author=AUTHOR, sent_at_ms=snowflake_ms(MSG),
                             text="close half", edit=0)


def test_other_channels_and_authors_are_ignored() -> None:
    """Only configured channels, and when authors are configured, only those authors."""
    translator = MessageTranslator([CHANNEL], author_ids=[AUTHOR])
    assert translator.translate("MESSAGE_CREATE", create(channel=OTHER)) == []
    assert translator.translate("MESSAGE_CREATE", create(author="5")) == []
    assert len(translator.translate("MESSAGE_CREATE", create())) == 1


def test_rich_embeds_are_read_and_link_previews_are_not() -> None:
    """Title, description and fields of rich embeds join the text; link previews do not."""
    embeds = [
        {"type": "rich", "title": "BTC/USDT LONG", "description": "Entry 60000",
         "fields": [{"name": "Targets", "value": "61000\n62000"},
                    {"name": "Stop:", "value": "58000", "inline": True}]},
        {"type": "link", "title": "Some article", "description": "ad text"},
    ]
    assert embed_text(embeds) == "BTC/USDT LONG\nEntry 60000\nTargets:\n61000\n62000\nStop: 58000"
    [raw] = MessageTranslator([CHANNEL]).translate("MESSAGE_CREATE", create("", embeds=embeds))
    assert raw.text.startswith("BTC/USDT LONG") and "ad text" not in raw.text


def test_crossposted_copies_are_not_replies() -> None:
    """A followed announcement's copy references its origin; that is not a reply."""
    reference = {"message_id": "777", "channel_id": "5", "guild_id": "6"}
    assert reply_target(create(message_reference=reference, flags=1 << 1)) is None
    assert reply_target(create(message_reference={**reference, "type": 1})) is None
    assert reply_target(create(message_reference=reference)) == "777"


def test_edits_count_up_and_carry_the_new_text() -> None:
    """Each MESSAGE_UPDATE that changes the text is edit n+1 of the same message id."""
    translator = MessageTranslator([CHANNEL])
    translator.translate("MESSAGE_CREATE", create("SL 58000"))
    [first] = translator.translate("MESSAGE_UPDATE", create("SL 58500"))
    [second] = translator.translate("MESSAGE_UPDATE", create("SL 59000"))
    assert (first.edit, first.text, second.edit, second.text) == (1, "SL 58500", 2, "SL 59000")
    assert first.sent_at_ms == snowflake_ms(MSG)


def test_updates_without_new_text_are_not_edits() -> None:
    """Pins, flags and link previews arrive as updates but change nothing the author wrote."""
    translator = MessageTranslator([CHANNEL])
    translator.translate("MESSAGE_CREATE", create("see https://x.example"))
    assert translator.translate("MESSAGE_UPDATE", {"id": MSG, "channel_id": CHANNEL,
                                                   "pinned": True}) == []
    preview = create("see https://x.example", embeds=[{"type": "link", "title": "x"}])
    assert translator.translate("MESSAGE_UPDATE", preview) == []


def test_an_edit_of_a_message_sent_before_start_is_edit_one() -> None:
    """An update for an unknown message is still posted, as its first edit."""
    [raw] = MessageTranslator([CHANNEL]).translate("MESSAGE_UPDATE", create("new text"))
    assert (raw.edit, raw.text, raw.author) == (1, "new text", AUTHOR)


def test_deletes_are_flagged_with_the_last_known_text() -> None:
    """MESSAGE_DELETE (and each id of a bulk delete) becomes deleted=True."""
    translator = MessageTranslator([CHANNEL])
    translator.translate("MESSAGE_CREATE", create("BTC LONG"))
    translator.translate("MESSAGE_UPDATE", create("BTC LONG SL 1"))
    [raw] = translator.translate("MESSAGE_DELETE", {"id": MSG, "channel_id": CHANNEL})
    assert (raw.deleted, raw.edit, raw.text, raw.author) == (True, 1, "BTC LONG SL 1", AUTHOR)
    bulk = translator.translate("MESSAGE_DELETE_BULK", {"ids": ["11", "12"], "channel_id": CHANNEL})
    assert [(m.message_id, m.deleted) for m in bulk] == [("11", True), ("12", True)]


def test_repeated_creates_are_posted_once_and_memory_is_bounded() -> None:
    """A replayed MESSAGE_CREATE is not posted twice; only the newest ids are remembered."""
    translator = MessageTranslator([CHANNEL], remember=2)
    assert len(translator.translate("MESSAGE_CREATE", create())) == 1
    assert translator.translate("MESSAGE_CREATE", create()) == []
    for message_id in ("21", "22"):
        translator.translate("MESSAGE_CREATE", create(message_id=message_id))
    assert len(translator.translate("MESSAGE_CREATE", create())) == 1  # forgotten, seen anew
