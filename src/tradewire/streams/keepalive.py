"""When to extend (PUT) each listenKey: pure, clock-driven, no I/O (times are epoch ms).

Every listenKey must be extended at most ``interval_ms`` after its last extension (the POST that
created it counts as one). With thousands of keys created at the same instant (a pod start, a
shard takeover) extending them all ``interval_ms`` later would be one burst; instead each key
gets a *phase* and is extended once per cycle at that phase, with the phases spread evenly:

* The cycle is ``period = interval_ms - slack_ms`` (``slack_ms``: one slot, at most a tenth of
  the interval), so a PUT served up to ``slack_ms`` late (rate cap, slow answer) still lands
  within ``interval_ms`` of the previous one.
* The cycle is cut into slots of ``slot_ms`` (10 s), at most ``MAX_SLOTS`` of them: placing a
  key scans every slot, so a huge interval gets longer slots rather than a scan (and tables)
  that would freeze the loop; 512 slots of 10 s cover any interval up to 85 min (the exchange's
  keys live 60 min). A key added is placed in the least-loaded slot (ties: the one that comes
  first after ``now``), at an offset inside the slot taken from a low-discrepancy sequence, so
  keys of one slot are spread over the slot too. Its next
  extension is the first time with that phase after ``now``: within ``(now, now + period]``.
* ``extended(id, now)`` keeps the phase (next extension one period after the due one) unless
  that would come less than half a period after ``now`` (an early extension, e.g. a re-key
  POST); then the key is re-placed in the least-loaded slot of ``[now + period/2, now + period]``.
* ``due(now)`` hands out the keys whose time has come, earliest first (overdue keys first), at
  most what a token bucket of ``max_per_s`` (burst: one second's worth) allows; the rest stay
  due for the next call. A key handed out and never confirmed by ``extended`` (a failed PUT) is
  handed out again ``retry_ms`` later.
* ``begin(id)``: the key's PUT is now in flight. It is not handed out again while in flight,
  however long the PUT waits (a client budget, a slow answer): two PUTs of one key are never
  in flight. The PUT ends with ``extended`` (success: next extension at its phase) or
  ``failed(id, now)`` (handed out again ``retry_ms`` later) or ``remove``.

Evenness needs capacity: ``max_per_s * period`` must exceed the number of keys (10/s covers
18,000 keys per 30 min); beyond that, keys queue up and ``late`` counts the extensions handed
out after their deadline.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

DEFAULT_SLOT_MS = 10_000
MAX_SLOTS = 512  # bounds the work of placing a key (a scan of the slots) and the tables
DEFAULT_RETRY_MS = 30_000


@dataclass
class _Key:
    slot: int
    phase: int  # ms within the period
    last_ms: int  # last extension (or creation)
    due_ms: int  # when ``due`` hands it out next
    busy: bool = False  # its PUT is in flight (``begin``): not handed out until it ends


def _van_der_corput(n: int) -> float:
    """n-th element of the base-2 van der Corput sequence: 0, 1/2, 1/4, 3/4, 1/8, ..."""
    result, denom = 0.0, 1.0
    while n:
        denom *= 2
        n, bit = divmod(n, 2)
        result += bit / denom
    return result


class KeepaliveScheduler:
    """Phases of listenKey extensions, spread evenly, under a global rate cap."""

    def __init__(
        self,
        interval_ms: int,
        max_per_s: float,
        *,
        slot_ms: int = DEFAULT_SLOT_MS,
        retry_ms: int = DEFAULT_RETRY_MS,
    ) -> None:
        if interval_ms < 10 or slot_ms < 1 or max_per_s <= 0 or retry_ms < 1:
            raise ValueError("interval_ms >= 10, slot_ms >= 1, retry_ms >= 1, max_per_s > 0")
        self.interval_ms = interval_ms
        self.max_per_s = max_per_s
        self.slack_ms = min(slot_ms, interval_ms // 10)
        self.period_ms = interval_ms - self.slack_ms
        self.slots = min(max(1, self.period_ms // slot_ms), MAX_SLOTS)
        self.retry_ms = retry_ms
        self._bounds = [self.period_ms * i // self.slots for i in range(self.slots + 1)]
        self._load = [0] * self.slots  # keys per slot
        self._placed = [0] * self.slots  # keys ever placed per slot (offset sequence)
        self._keys: dict[int, _Key] = {}
        self._heap: list[tuple[int, int]] = []  # (due_ms, account_id); stale entries skipped
        self._burst = max(1.0, max_per_s)
        self._tokens = self._burst
        self._refilled_ms: int | None = None
        self.late = 0  # extensions handed out after their deadline (last + interval)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._keys

    # -- placement -----------------------------------------------------------------------------

    def _next_at(self, phase: int, after_ms: int) -> int:
        """The first time with ``phase`` strictly after ``after_ms``: in (after, after + period]."""
        return after_ms + (phase - after_ms - 1) % self.period_ms + 1

    def _place(self, not_before_ms: int, now_ms: int) -> _Key:
        """A phase in the least-loaded slot (ties: the slot that starts first after ``now``);
        with ``not_before_ms > now_ms`` only slots wholly within [not_before, now + period]."""
        period, slots, bounds = self.period_ms, self.slots, self._bounds
        first = (now_ms % period) * slots // period  # the slot ``now`` falls in (starts last)
        best = -1
        for step in range(1, slots + 1):
            slot = (first + step) % slots
            if not_before_ms > now_ms:
                start = self._next_at(bounds[slot], now_ms)
                end = start + bounds[slot + 1] - bounds[slot]
                if start < not_before_ms or end > now_ms + period:
                    continue
            if best < 0 or self._load[slot] < self._load[best]:
                best = slot
        if best < 0:  # no slot fits (a tiny period): the latest allowed time, in its slot
            due = now_ms + period
            best = (due % period) * slots // period
            phase = due % period
        else:
            offset = int(_van_der_corput(self._placed[best]) * (bounds[best + 1] - bounds[best]))
            phase = bounds[best] + offset
            due = self._next_at(phase, now_ms)
        self._load[best] += 1
        self._placed[best] += 1
        return _Key(slot=best, phase=phase, last_ms=now_ms, due_ms=due)

    def _schedule(self, account_id: int, key: _Key) -> None:
        self._keys[account_id] = key
        heapq.heappush(self._heap, (key.due_ms, account_id))

    # -- API -----------------------------------------------------------------------------------

    def add(self, account_id: int, now_ms: int) -> None:
        """A key was just created (or taken over just after an extension): place it."""
        if account_id in self._keys:
            self.extended(account_id, now_ms)
            return
        self._schedule(account_id, self._place(now_ms, now_ms))

    def extended(self, account_id: int, now_ms: int) -> None:
        """The key was extended (PUT succeeded) or re-created (POST) at ``now_ms``."""
        key = self._keys.get(account_id)
        if key is None:
            self.add(account_id, now_ms)
            return
        key.busy = False
        due = self._next_at(key.phase, now_ms)
        if due - now_ms >= self.period_ms // 2:
            key.last_ms, key.due_ms = now_ms, due
            heapq.heappush(self._heap, (due, account_id))
            return
        self._load[key.slot] -= 1  # too soon after an early extension: re-phase
        self._schedule(account_id, self._place(now_ms + self.period_ms // 2, now_ms))

    def begin(self, account_id: int) -> None:
        """The key's PUT (handed out by ``due``) is in flight: not handed out again until
        ``extended``, ``failed`` or ``remove``."""
        key = self._keys.get(account_id)
        if key is not None:
            key.busy = True
            key.due_ms = -1  # no heap entry matches: stale until the PUT ends

    def failed(self, account_id: int, now_ms: int) -> None:
        """The key's PUT failed (or was not sent): handed out again ``retry_ms`` later."""
        key = self._keys.get(account_id)
        if key is not None:
            key.busy = False
            key.due_ms = now_ms + self.retry_ms
            heapq.heappush(self._heap, (key.due_ms, account_id))

    def in_flight(self, account_id: int) -> bool:
        key = self._keys.get(account_id)
        return key is not None and key.busy

    def remove(self, account_id: int) -> None:
        key = self._keys.pop(account_id, None)
        if key is not None:
            self._load[key.slot] -= 1

    def _refill(self, now_ms: int) -> None:
        if self._refilled_ms is not None and now_ms > self._refilled_ms:
            gained = (now_ms - self._refilled_ms) * self.max_per_s / 1000
            self._tokens = min(self._burst, self._tokens + gained)
        if self._refilled_ms is None or now_ms > self._refilled_ms:
            self._refilled_ms = now_ms

    def _top(self) -> tuple[int, int] | None:
        """The earliest live heap entry (stale ones dropped)."""
        heap = self._heap
        while heap:
            due, account_id = heap[0]
            key = self._keys.get(account_id)
            if key is not None and key.due_ms == due:
                return heap[0]
            heapq.heappop(heap)
        return None

    def due(self, now_ms: int) -> list[int]:
        """Accounts to extend now, earliest due first, within the rate cap. Each one is handed
        out again ``retry_ms`` later unless ``extended`` (or ``remove``) is called for it."""
        self._refill(now_ms)
        out: list[int] = []
        while self._tokens >= 1 and (top := self._top()) is not None and top[0] <= now_ms:
            heapq.heappop(self._heap)
            account_id = top[1]
            key = self._keys[account_id]
            if now_ms > key.last_ms + self.interval_ms:
                self.late += 1
            key.due_ms = now_ms + self.retry_ms
            heapq.heappush(self._heap, (key.due_ms, account_id))
            self._tokens -= 1
            out.append(account_id)
        return out

    def next_due_ms(self) -> int | None:
        """When ``due`` will next return something (None: no keys): the earliest due time, or
        later when the rate cap has no token left until then."""
        top = self._top()
        if top is None:
            return None
        if self._tokens >= 1 or self._refilled_ms is None:
            return top[0]
        wait_ms = -(-(1 - self._tokens) * 1000 // self.max_per_s)
        return max(top[0], self._refilled_ms + int(wait_ms))

    def deadline_ms(self, account_id: int) -> int | None:
        """The latest time the key may be extended (last extension + interval)."""
        key = self._keys.get(account_id)
        return None if key is None else key.last_ms + self.interval_ms

    def slot_loads(self) -> list[int]:
        """Keys per slot (for tests and metrics)."""
        return list(self._load)
