"""Text normalisation: the first step of the signal parser.

``normalise`` turns a message as a human wrote it (Discord markdown, emojis used as labels,
typographic dashes, thousands separators, ``$`` signs, ``30K`` shorthand, links) into plain
lines the keyword scanner can read. Case is kept (a lone ``XRP`` is only a coin when written in
capitals); every later step lower-cases what it matches against.

Emoji labels become words or markers:

* 🟢 📈 → ``<longmark>`` and 🔴 📉 → ``<shortmark>``: *weak* side votes, used only when no side word
  is written (🔴 often just decorates a stop line).
* 🎯 → ``target``; 🛑 ⛔ ✖ → ``stop``; ✅ ✔ → ``✅`` (status detection reads it).
* keycap digits ``1️⃣`` → ``1)`` (a numbered list item).

Every other pictograph becomes a space.
"""

# ruff: noqa: RUF001, RUF003  (the dashes and Cyrillic x are what gets replaced: look-alike letters are on purpose)

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

LONG_MARK = "<longmark>"
SHORT_MARK = "<shortmark>"
CHECK_MARK = "✅"

_EMOJI_WORDS = {
    "🟢": f" {LONG_MARK} ",
    "📈": f" {LONG_MARK} ",
    "🔴": f" {SHORT_MARK} ",
    "📉": f" {SHORT_MARK} ",
    "🎯": " target ",
    "🛑": " stop ",
    "⛔": " stop ",
    "✖": " stop ",
    "✅": f" {CHECK_MARK} ",
    "✔": f" {CHECK_MARK} ",
    "☑": f" {CHECK_MARK} ",
    "🔟": " 10) ",
}
_DASHES = dict.fromkeys(map(ord, "–—−‐‑‒―"), "-")
_INVISIBLE = dict.fromkeys(map(ord, "\ufe0f\ufe0e\u200d\u200b\u200c\u2060\ufeff"), None)

_URL = re.compile(r"(?:https?://|www\.|t\.me/|discord\.gg/)\S+", re.IGNORECASE)
_CODE_FENCE = re.compile(r"```[a-zA-Z]*")
_MARKDOWN = re.compile(r"\*+|__|~~|\|\||`")
_LINE_PREFIX = re.compile(r"^\s*(?:>{1,3}\s?)?(?:#{1,3}\s+)?(?:[-•·▪▫◦►▶*]\s+)?")
_KEYCAP = re.compile(r"(\d)\u20e3")
_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(?![\d,])")
_DECIMAL_COMMA = re.compile(r"(?<![\d.,])0,(?=\d)")
_DOLLAR_NUMBER = re.compile(r"\$\s*(?=\d)")
_QUOTE_UNIT = re.compile(r"(?<=\d)\s?(?:usdt|usd)\b", re.IGNORECASE)  # "62000 USDT"
_DOLLAR_COIN = re.compile(r"\$(?=[A-Za-z])")
_K_SHORTHAND = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[kK](?![\w])")
_DIGIT_UNDERSCORE = re.compile(r"(?<=\d)\s*_\s*(?=\d)")
_ARROWS = re.compile(r"\s*(?:->|=>|→|➡|⇒|⟶)\s*")
_CYRILLIC_X = re.compile(r"(?<=\d)\s?[хХ](?![\w])")  # "10х" typed on a Russian keyboard
_SPACES = re.compile(r"[ \t\u00a0]+")


def normalise(text: str) -> list[str]:
    """The message as clean, non-empty lines (case kept, markup and decoration gone)."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).translate(_DASHES)
    text = text.replace("İ", "I")  # Turkish dotted capital: keeps lower() one char per char
    text = _URL.sub(" ", text)
    text = _CODE_FENCE.sub("\n", text)
    text = _MARKDOWN.sub("", text)
    text = _KEYCAP.sub(r" \1) ", text)
    text = _replace_emojis(text)
    text = _numbers(text)
    text = _DIGIT_UNDERSCORE.sub(" - ", text).replace("_", " ")
    text = _ARROWS.sub(" to ", text)
    lines = (_SPACES.sub(" ", _LINE_PREFIX.sub("", line)).strip() for line in text.splitlines())
    return [line for line in lines if line]


def _replace_emojis(text: str) -> str:
    """Emoji labels become words; other pictographs become spaces."""
    out: list[str] = []
    for char in text:
        word = _EMOJI_WORDS.get(char)
        if word is not None:
            out.append(word)
        elif _is_pictograph(char):
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def _is_pictograph(char: str) -> bool:
    """Emojis and decorative symbols (category So/Sk/Co, skin tones), not letters or digits."""
    return unicodedata.category(char) in {"So", "Sk", "Co", "Cs"} or 0x1F3FB <= ord(char) <= 0x1F3FF


def _numbers(text: str) -> str:
    """Drop thousands separators and ``$``, read ``0,5`` as ``0.5`` and ``30K`` as ``30000``."""
    text = _DECIMAL_COMMA.sub("0.", text)
    text = _THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), text)
    text = _DOLLAR_NUMBER.sub("", text)
    text = _QUOTE_UNIT.sub("", text)
    text = _DOLLAR_COIN.sub("#", text)
    text = _CYRILLIC_X.sub("x", text)
    return _K_SHORTHAND.sub(lambda m: _times_thousand(m.group(1)), text)


def _times_thousand(number: str) -> str:
    """``30`` → ``30000`` (USDT-margined prices: ``K`` means thousands, not satoshis)."""
    return format((Decimal(number) * 1000).normalize(), "f")


def to_decimal(number: str) -> Decimal | None:
    """A price written in a message, or ``None`` when it is not a finite number."""
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None
