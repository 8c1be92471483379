"""WebSocket connection attempts per client IP in a sliding window (reference §1.4, §3.3).

The futures docs state no number; Spot and PM-Pro document 300 attempts per 5 minutes per IP,
which the simulator applies to fstream (UNCONFIRMED; configurable through ``StreamConfig``).
Every handshake counts, refused ones included, so a reconnect storm stays refused until it
slows down. Time is the engine clock (a ``ManualClock`` in tests).
"""

from __future__ import annotations

from collections import defaultdict, deque

CONNECTION_ATTEMPTS = 300
CONNECTION_WINDOW_MS = 5 * 60_000


class ConnectionBudget:
    """``limit`` handshakes per IP within any ``window_ms``."""

    def __init__(self, limit: int = CONNECTION_ATTEMPTS,
                 window_ms: int = CONNECTION_WINDOW_MS) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self._attempts: dict[str, deque[int]] = defaultdict(deque)

    def _recent(self, ip: str, now: int) -> deque[int]:
        attempts = self._attempts[ip]
        while attempts and attempts[0] <= now - self.window_ms:
            attempts.popleft()
        return attempts

    def admit(self, ip: str, now: int) -> bool:
        """Count one attempt; False when the IP already used its budget in the window."""
        attempts = self._recent(ip, now)
        attempts.append(now)
        return len(attempts) <= self.limit

    def retry_after_ms(self, ip: str, now: int) -> int:
        """How long until one more attempt fits in the window (0: it fits now)."""
        attempts = self._recent(ip, now)
        if len(attempts) < self.limit:
            return 0
        return attempts[len(attempts) - self.limit] + self.window_ms - now

    def reset(self) -> None:
        self._attempts.clear()
