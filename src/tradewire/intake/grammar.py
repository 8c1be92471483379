"""Keyword tables of the signal grammar (reference signal-intake.md §2), all in one place.

Every pattern runs on lower-cased, normalised text (see ``text.normalise``). Languages:
English, plus the common Russian, Spanish and Turkish keywords (вход/стоп/тейк/цель,
entrada/objetivo, giriş/hedef).
"""

# ruff: noqa: RUF001  (Russian and Turkish keywords are meant: look-alike letters are on purpose)

from __future__ import annotations

import re


def _words(text: str) -> list[str]:
    return text.split()


# --- section labels -------------------------------------------------------------------------
# A label starts a section; the text after it, up to the next label, is that section's content.
# Alternatives run longest first; the group name is the section kind.
_BUY_AS_ENTRY = (
    r"(?=\s*(?:[:@=]|\d|-\s*\d|at\b|around\b|between\b|from\b|zone\b|range\b|area\b"
    r"|price\b|market\b|cmp\b|now\b|above\b|below\b|limit\b))"
)
_SELL_AS_TARGET = r"(?=\s*(?:[:@=]|\d|-\s*\d|at\b|targets?\b|zone\b|orders?\b))"
_TARGET_INDEX = r"(?:#?\d{1,2}(?![\d.,])|\s+#?\d{1,2}(?![\d.,])(?=\s*[:)=-]|\s+\d))?"

LABELS = re.compile(
    r"(?<![\w/])(?:"
    r"(?P<size>(?:wallet|position|trade|order)\s*size|amount|size|allocation|вложение|объ[её]м)"
    r"|(?P<stop>stop[\s-]*loss(?:es)?(?:\s*targets?)?|stop[\s-]*targets?|stop|sl|s/l"
    r"|invalidation|стоп[\s-]*лосс|стоп|zarar\s*durdur)"
    r"|(?P<target>(?:take[\s-]*profits?|tps?|targets?|tgts?|objetivos?|тейк[\s-]*профит"
    r"|тейки?|цел[ьи]|hedefler|hedef|profit\s*targets?)" + _TARGET_INDEX
    + r"|sell(?:ing)?(?:\s*(?:targets?|zone|orders?))?" + _SELL_AS_TARGET + r")"
    r"|(?P<entry>entry\s*(?:zone|range|area|price|points?|targets?|orders?)?|entries"
    r"|enter(?:ing)?|buy(?:ing)?(?:\s*(?:zone|range|area|price))?" + _BUY_AS_ENTRY
    + r"|@(?=\s*\d)|вход|точка\s*входа|зона\s*входа|entrada|giri[şs])"
    r"|(?P<leverage>leverage|lev|плечо|apalancamiento|kald[ıi]ra[çc])"
    r"|(?P<margin>margin\s*(?:mode|type)?)"
    r"|(?P<side>signal\s*type|trade\s*type|position|side|direction|направление|dirección)"
    r"|(?P<symbol>pair|coin|symbol|ticker|asset|token|монета|пара|moneda)"
    r"|(?P<other>trailing(?:\s*stop)?|notes?|risk(?:\s*management)?|r\s*:\s*r|rr|timeframe"
    r"|tf|strategy|analysis|chart|volume|exchange|market\s*type|duration|period|comment"
    r"|description|reason|signal|join|contact|disclaimer)"
    r")(?![\w])",
)
# Trade management inside a signal ("Trailing: ...", "move SL to BE after TP1"): the scanner
# reads a line only up to these words, so their numbers never become prices.
MANAGEMENT = re.compile(
    r"\b(?:trailing|trigger|break[\s-]?even|move|moving|after\s+(?:tp|target|the\s+first)"
    r"|переносим|двигаем|безубыток)\b"
)
LIST_KINDS = frozenset({"entry", "target", "stop"})

# --- words inside sections ------------------------------------------------------------------
MARKET_WORDS = re.compile(
    r"\b(?:market(?:\s*price)?|cmp|now|current(?:\s*price)?|instant|по\s*рынку|mercado)\b"
)
ZONE_WORDS = re.compile(r"\b(?:zone|range|area|between|зона|zona|b[öo]lge)\b")
BREAKOUT_WORDS = re.compile(r"\b(?:above|below|breakout|break\s*out)\b")
RANGE_SEPARATOR = re.compile(r"^\s*(?:-|to|~|and|until|a|до)\s*$")
CROSS_WORDS = re.compile(r"\bcross(?:ed)?\b")
ISOLATED_WORDS = re.compile(r"\b(?:isolated|isolate|iso)\b")
LEVERAGE_HINT = re.compile(r"\b(?:leverage|lev|margin|плечо)\b|\d\s*x\b")
BARE_LEVERAGE = re.compile(r"(?<![\w.])(?:(\d{1,3})(?:\.0)?\s?x|x\s?(\d{1,3}))(?![\w.])")

# --- side -----------------------------------------------------------------------------------
LONG_WORDS = re.compile(r"\b(?:long|лонг|largo)\b(?![\s-]*(?:term|squeeze|liquidat))")
SHORT_WORDS = re.compile(r"\b(?:short|шорт|corto)\b(?![\s-]*(?:term|squeeze|liquidat))")
BUY_SIDE = re.compile(r"\b(?:buy|покупка|compra)\b" + r"(?!" + _BUY_AS_ENTRY[3:])
SELL_SIDE = re.compile(r"\b(?:sell|продажа|venta)\b" + r"(?!" + _SELL_AS_TARGET[3:])

# --- symbols --------------------------------------------------------------------------------
PAIR = re.compile(
    r"(?<![\w.])[#$]?([a-z0-9]{1,15}?)\s*(?:/\s*|-|\.|:)?(usdt|usdc|busd|usd)"
    r"(?:\.p|\s*perp(?:etual)?)?(?![a-z0-9])"
)
HASHTAG = re.compile(r"(?<![\w])#([a-z0-9]{2,15})(?![\w/])")
CAPS_WORD = re.compile(r"(?<![\w#$])([A-Z][A-Z0-9]{1,9})(?![\w])")
NOT_COINS = frozenset(
    _words(
        """long short buy sell tp tps sl entry entries target targets stop loss leverage lev cross
        isolated iso market cmp now vip free signal signals spot futures usdt usd usdc busd perp
        setup trade trades new alert update scalp swing high low risk medium mid binance bybit okx
        bitget mexc tf all close cancel exit and or the be bep breakeven dca zone pump dump note rr
        roi pnl ath atl regular premium crypto coin pair profit take limit order orders position
        side direction type amount size wallet margin mode hit done reached achieved ta news
        analysis chart price info results result gm gn bullish bearish half everything remaining
        rest it this at profits positions trades here today bitcoin ethereum altcoin altcoins
        trading cryptocurrency forex giveaway binancefutures technical updates above below inf
    nan infinity"""
    )
)
_NOT_COIN_SHAPE = re.compile(r"^(?:tp|sl|t|x|target|entry)?\d+(?:st|nd|rd|th|[a-z])?$")


def is_coin_word(word: str) -> bool:
    """Whether ``word`` (lower-case) may be a coin: not a grammar word or label, not ``tp1``."""
    return not (word in NOT_COINS or _NOT_COIN_SHAPE.match(word) or LABELS.fullmatch(word))


QUOTE_ALIASES = {"usd": "usdt", "busd": "usdt"}

# --- kind: status posts (never open a trade) ------------------------------------------------
STATUS_STRONG = re.compile(
    r"(?:\b(?:tp|take\s*profit|target|цель|тейк)\s*#?\d*\b[^\n]{0,30}?"
    r"(?<!when\s)(?<!once\s)(?<!if\s)(?<!after\s)(?<!until\s)(?<!before\s)"
    r"\b(?:hit|reached|achieved|done|completed|smashed|booked|secured|touched|taken"
    r"|достигнута|взят|взята)\b"
    r"|\b(?:hit|reached|achieved|touched)\s+(?:the\s+)?(?:tp|target|take\s*profit)"
    r"|\ball\s+(?:the\s+)?(?:targets?|tps?|take\s*profits?)\s+(?:(?:are|were|have\s+been|got)\s+)?"
    r"(?:hit|reached|achieved|done|completed|smashed|booked|filled)\b"
    r"|\b(?:tps?|targets?|take\s*profits?)\s*\d*\b[^\n]{0,80}✅"
    r"|\bstopped\s*out\b|\b(?:stop(?:[\s-]*loss)?|sl)\s+(?:was\s+|got\s+)?"
    r"(?:hit|triggered|reached|taken)\b|\bhit\s+(?:the\s+)?(?:sl|stop)\b"
    r"|\bclosed\b|\b(?:cancelled|canceled)\b|\bliquidated\b"
    r"|\bстоп\s*(?:сработал|выбит|выбило)|\bзакрыт[ао]?\b)"
)
STATUS_PROFIT = re.compile(
    r"\+\s*\d+(?:\.\d+)?\s*%|(?<![\d.])\d+(?:\.\d+)?\s*%\s*(?:profit|gain|roi)"
    r"|\b(?:profit|roi|gain|pnl)\s*:?\s*\+?\d+(?:\.\d+)?\s*%"
)

# --- kind: follow-ups to an earlier signal ----------------------------------------------------
_STOP = r"(?:sl|stop(?:[\s-]*loss)?|стоп)"
BREAKEVEN = re.compile(
    _STOP + r"\b[^\n]{0,25}?(?:\b(?:to|at|on|in|into|в|на)\s+|[:=]\s*)(?:the\s+)?"
    r"(?:break[\s-]?even|be|bep|entry(?:\s*price)?|cost|безубыток|бу)\b"
    r"|\b(?:move|moving|set|put)\s+(?:it\s+)?(?:to\s+)?break[\s-]?even\b|\bбезубыток\b"
)
_PRICE = r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w%]|\.\d)"  # a price, not "50%" nor the 1 of "tp1"
_STOP_VERB = r"(?:move|moving|moved|set|change|adjust|update|trail|raise|lower|new|put|переносим)"
MOVE_STOP = re.compile(
    r"\b" + _STOP_VERB + r"\s+(?:the\s+|our\s+)?" + _STOP + r"\b[^\n\d]{0,15}?" + _PRICE
    + r"|\b" + _STOP + r"\s+(?:moved\s+|now\s+|updated\s+)?(?:to|at|на)\s+" + _PRICE
    + r"|\b" + _STOP_VERB + r"\s+(?:the\s+)?" + _STOP + r"\b"
)
CLOSE = re.compile(
    r"\b(?:close|exit|закрыть|закрываем|закрываю|cerrar|kapat)\b"
    r"|\b(?:book|secure|take|fix|фиксируем)\s+(?:\d+(?:\.\d+)?\s*%|half|partial)"
)
CANCEL = re.compile(r"\b(?:cancel|отмена|отменить|отменяем|cancelar|iptal)\b")
HALF = re.compile(r"\b(?:half|половин\w*|mitad)\b")
PARTIAL = re.compile(r"\bpartial(?:ly)?\b|\bsome\b|\bчаст\w*")
PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?%")
UPDATE_COIN = re.compile(
    r"\b(?:close|exit|cancel|закрыть|закрываем|отмена|cerrar|cancelar)\s+(?:the\s+)?[#$]?"
    r"([a-z][a-z0-9]{1,14})\b"
)
