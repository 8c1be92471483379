"""Discord webhook sender: one POST, with the 429 ``retry_after`` rule honoured by the caller."""

from __future__ import annotations

from typing import Any

import httpx

from tradewire.errors import NotificationError
from tradewire.notify.messages import public_body


class PermanentNotificationError(NotificationError):
    """The webhook refused the message for good (404 unknown webhook, 400 bad body)."""


async def send_webhook(http: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> None:
    """Deliver one message. Raises ``NotificationError`` (with ``retry_after_s`` on 429) when it
    should be retried later, ``PermanentNotificationError`` when retrying cannot help."""
    try:
        response = await http.post(url, json=public_body(payload), timeout=10.0)
    except httpx.HTTPError as exc:
        raise NotificationError(f"webhook unreachable: {type(exc).__name__}") from exc
    if response.status_code < 300:
        return
    if response.status_code == 429:
        raise NotificationError("webhook rate limited", retry_after_s=_retry_after(response))
    if response.status_code >= 500:
        raise NotificationError(f"webhook answered {response.status_code}")
    raise PermanentNotificationError(f"webhook refused the message: {response.status_code}")


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait: Discord's JSON ``retry_after`` (seconds, may be fractional), else the
    ``Retry-After`` header, else 1 s."""
    try:
        body = response.json()
        if isinstance(body, dict) and "retry_after" in body:
            return max(0.0, float(body["retry_after"]))
    except ValueError:
        pass
    header = response.headers.get("retry-after")
    try:
        return max(0.0, float(header)) if header else 1.0
    except ValueError:
        return 1.0
