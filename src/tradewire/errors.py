"""One exception tree for the whole service.

::

    TradewireError
    ├── ConfigError                 bad or missing configuration
    │   └── DiscordGatewayFatal     Discord refused the bot for good (bad token, 4014 intents)
    ├── InvalidInput                a request or signal that cannot be accepted (API: 422)
    ├── NotFound                    (API: 404)
    ├── Conflict                    (API: 409)
    ├── Unauthorized                missing/wrong operator token (API: 401)
    ├── SecretDecryptionError       a stored secret cannot be opened (wrong master key, altered)
    ├── ExchangeError               anything the exchange said or failed to say (API: 502)
    │   ├── ExchangeUnavailable     network error, 5xx "Service Unavailable"      transient
    │   ├── UnknownOutcome          timeout / 503 "Unknown error": order may exist transient
    │   ├── RateLimited             429 / 418, -1003, -1015                       transient
    │   ├── AuthenticationError     -1022, -2014, -2015
    │   ├── TimestampOutOfWindow    -1021
    │   ├── OrderRejected           -2010, -2019, -2021, -2022, -4xxx filters ...
    │   ├── UnknownOrder            -2011, -2013
    │   └── ListenKeyInvalid        -1125
    ├── CdpError                    DevTools connection to the browser failed (CdpClosed: gone)
    ├── BusError
    │   ├── PermanentError          a message that can never be processed (malformed)
    │   └── TransientError          worth retrying (a dependency was unavailable)
    │       └── DependencyDown      the database is unreachable: pause consumption, no attempt
    └── NotificationError           webhook delivery failed

``is_transient(exc)`` says whether retrying may help.
"""

from __future__ import annotations


class TradewireError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(TradewireError):
    pass


class InvalidInput(TradewireError):
    """Input rejected; ``field`` names the offending field when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(TradewireError):
    pass


class Conflict(TradewireError):
    pass


class Unauthorized(TradewireError):
    pass


class SecretDecryptionError(TradewireError):
    """A stored secret cannot be decrypted: wrong master key, tampering or a malformed token."""


class ExchangeError(TradewireError):
    """An error answered by (or on the way to) the exchange, with its code when known."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} (code {self.code})" if self.code is not None else base


class ExchangeUnavailable(ExchangeError):
    pass


class UnknownOutcome(ExchangeError):
    """The request may or may not have taken effect; query before retrying."""


class RateLimited(ExchangeError):
    def __init__(
        self, message: str, *, code: int | None = None, status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after_s = retry_after_s


class AuthenticationError(ExchangeError):
    pass


class TimestampOutOfWindow(ExchangeError):
    pass


class OrderRejected(ExchangeError):
    pass


class UnknownOrder(ExchangeError):
    pass


class ListenKeyInvalid(ExchangeError):
    pass


class BusError(TradewireError):
    pass


class PermanentError(BusError):
    """The message itself is bad; retrying cannot help."""


class TransientError(BusError):
    """A dependency failed; the same message may succeed later."""


class DependencyDown(TransientError):
    """A dependency every message needs (the database) is unreachable. The consumer pauses and
    probes instead of spending attempts, so an outage does not fill the DLQ."""


class NotificationError(TradewireError):
    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


_TRANSIENT = (ExchangeUnavailable, UnknownOutcome, RateLimited, TransientError, NotificationError)


def is_transient(exc: BaseException) -> bool:
    """True when the same operation may succeed if tried again later."""
    return isinstance(exc, (*_TRANSIENT, ConnectionError, TimeoutError, OSError))


# What ``json.loads`` raises for text it cannot read: ``ValueError`` (``JSONDecodeError``,
# ``UnicodeDecodeError``) and ``RecursionError`` (nesting deeper than the interpreter's recursion
# limit: ``"[" * 5000`` fits in a 10 kB body). Every parse of outside input catches both.
UNREADABLE_JSON: tuple[type[Exception], ...] = (ValueError, RecursionError)
