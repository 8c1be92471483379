"""KeepaliveScheduler: every listenKey is extended within the interval, the extensions are spread
evenly over the window (no bursts, also after a takeover wave) and never exceed the rate cap.

Pure: simulated time in epoch ms, ``due`` called once per simulated second, each key handed out
is extended at once (the PUT succeeds) unless a test says otherwise.
"""

from __future__ import annotations

import time
from collections import deque

import pytest

from tradewire.streams.keepalive import MAX_SLOTS, KeepaliveScheduler

T0 = 1_767_000_000_000
INTERVAL_MS = 30 * 60 * 1000
WINDOW_MS = 10_000


class Run:
    """Drives a scheduler second by second; records every PUT and every key's longest gap."""

    def __init__(self, scheduler: KeepaliveScheduler) -> None:
        self.scheduler = scheduler
        self.now = T0
        self.last: dict[int, int] = {}
        self.longest_gap = 0
        self.puts: list[int] = []  # time of every PUT

    def add(self, ids: range) -> None:
        for account_id in ids:
            self.scheduler.add(account_id, self.now)
            self.last[account_id] = self.now

    def remove(self, account_id: int) -> None:
        self.scheduler.remove(account_id)
        del self.last[account_id]

    def step(self, seconds: int = 1, *, succeed: bool = True) -> list[int]:
        handed: list[int] = []
        for _ in range(seconds):
            self.now += 1000
            for account_id in self.scheduler.due(self.now):
                assert account_id in self.last, "a removed key was handed out"
                handed.append(account_id)
                self.puts.append(self.now)
                if succeed:
                    self.longest_gap = max(self.longest_gap, self.now - self.last[account_id])
                    self.last[account_id] = self.now
                    self.scheduler.extended(account_id, self.now)
        return handed

    def overdue_now(self) -> int:
        """Keys whose last extension is older than the interval (none must ever be)."""
        return sum(1 for last in self.last.values() if self.now - last > INTERVAL_MS)

    def busiest_window(self, since_ms: int = T0) -> int:
        """Most PUTs in any 10 s window (sliding, 1 s steps) after ``since_ms``."""
        window: deque[int] = deque()
        busiest = 0
        for at in (t for t in self.puts if t > since_ms):
            window.append(at)
            while window[0] <= at - WINDOW_MS:
                window.popleft()
            busiest = max(busiest, len(window))
        return busiest


def even_rate(keys: int) -> float:
    return keys / (INTERVAL_MS / 1000) * (WINDOW_MS / 1000)


def test_keys_created_at_once_are_extended_in_time_and_evenly() -> None:
    """5,000 keys created at the same instant, two hours: no key ever waits longer than the
    interval between extensions, and no 10 s window carries more than twice the even rate."""
    run = Run(KeepaliveScheduler(INTERVAL_MS, max_per_s=10))
    run.add(range(5_000))
    for _ in range(2 * 3600):
        run.step()
        assert run.overdue_now() == 0
    assert run.longest_gap <= INTERVAL_MS
    assert run.busiest_window() <= 2 * even_rate(5_000)
    assert len(run.puts) >= 5_000 * 4  # two hours = four extensions per key at least
    assert run.scheduler.late == 0


def test_a_takeover_wave_joins_evenly() -> None:
    """1,000 keys, then (a shard takeover) 1,000 more twenty minutes later: every key stays in
    time, and once the second wave has been placed the PUTs are spread as for 2,000 keys."""
    run = Run(KeepaliveScheduler(INTERVAL_MS, max_per_s=10))
    run.add(range(1_000))
    run.step(20 * 60)
    assert run.busiest_window() <= 2 * even_rate(1_000)
    wave = run.now
    run.add(range(1_000, 2_000))
    for _ in range(90 * 60):
        run.step()
        assert run.overdue_now() == 0
    assert run.longest_gap <= INTERVAL_MS
    assert run.busiest_window(since_ms=wave) <= 2 * even_rate(2_000)
    loads = run.scheduler.slot_loads()
    assert max(loads) - min(loads) <= 1


def test_removed_keys_are_never_handed_out_and_free_their_slot() -> None:
    """``remove`` forgets the key: it is not handed out again and its slot is free for the next
    key added."""
    scheduler = KeepaliveScheduler(INTERVAL_MS, max_per_s=10)
    run = Run(scheduler)
    run.add(range(100))
    for account_id in range(0, 100, 2):
        run.remove(account_id)  # Run.step asserts that no removed key is handed out
    handed = run.step(2 * 3600)
    assert set(handed) == set(range(1, 100, 2))
    assert len(scheduler) == 50 and sum(scheduler.slot_loads()) == 50
    scheduler.remove(12345)  # unknown: no-op


def test_the_rate_cap_holds_when_everything_is_due() -> None:
    """More keys than the cap allows (a tiny cap): ``due`` never hands out more than the token
    bucket allows (one second's burst + the rate); the rest waits for the next calls."""
    scheduler = KeepaliveScheduler(INTERVAL_MS, max_per_s=2)
    run = Run(scheduler)
    run.add(range(50))
    run.now += INTERVAL_MS + 1_000  # everything is overdue (past its deadline) at once
    first = scheduler.due(run.now)
    assert len(first) == 2  # the burst: one second's worth
    assert scheduler.due(run.now) == []
    assert scheduler.next_due_ms() == run.now + 500  # the next token
    handed_in_10s = run.step(10)
    assert len(handed_in_10s) == 20  # 2/s
    assert scheduler.late == 22  # handed out after their deadline: counted
    assert len(set(first + handed_in_10s)) == 22  # the extended ones wait a whole period


def test_a_failed_put_is_handed_out_again_after_retry_ms() -> None:
    """A key handed out but never confirmed by ``extended`` comes back after ``retry_ms``."""
    scheduler = KeepaliveScheduler(INTERVAL_MS, max_per_s=10, retry_ms=30_000)
    scheduler.add(7, T0)
    first_due = scheduler.next_due_ms()
    assert first_due is not None and T0 < first_due <= T0 + INTERVAL_MS
    assert scheduler.due(first_due - 1) == []
    assert scheduler.due(first_due) == [7]  # the PUT fails: no extended()
    assert scheduler.due(first_due + 29_999) == []
    assert scheduler.due(first_due + 30_000) == [7]


def test_an_early_extension_rephases_but_a_late_one_keeps_the_phase() -> None:
    """Extended on time (or a little late): the next extension is one period after the due one.
    Re-created early (a POST after an expiry): the next extension is not right away but at
    least half an interval later, and never later than the interval."""
    scheduler = KeepaliveScheduler(INTERVAL_MS, max_per_s=10)
    scheduler.add(1, T0)
    due = scheduler.next_due_ms()
    assert due is not None
    scheduler.extended(1, due + 2_000)  # served 2 s late
    assert scheduler.next_due_ms() == due + scheduler.period_ms
    early = due + scheduler.period_ms - 60_000  # one minute before its time
    scheduler.extended(1, early)
    again = scheduler.next_due_ms()
    assert again is not None
    assert early + INTERVAL_MS // 2 - scheduler.slack_ms <= again <= early + INTERVAL_MS
    assert scheduler.deadline_ms(1) == early + INTERVAL_MS


def test_first_extension_of_one_key_is_within_the_interval() -> None:
    scheduler = KeepaliveScheduler(INTERVAL_MS, max_per_s=10)
    for account_id, at in enumerate(range(T0, T0 + 3_600_000, 97_000)):
        scheduler.add(account_id, at)
        assert scheduler.deadline_ms(account_id) == at + INTERVAL_MS
    assert scheduler.next_due_ms() is not None
    assert KeepaliveScheduler(INTERVAL_MS, 10).next_due_ms() is None


@pytest.mark.parametrize("args", [(5, 10.0), (INTERVAL_MS, 0.0)])
def test_invalid_settings_are_refused(args: tuple[int, float]) -> None:
    with pytest.raises(ValueError):
        KeepaliveScheduler(*args)


def test_a_huge_interval_caps_the_slots_instead_of_freezing_the_loop() -> None:
    """Placing a key scans the slots: a huge ``keepalive_interval_s`` gets at most
    ``MAX_SLOTS`` longer slots (quick to build and to place in, still spread evenly), and
    every key is still extended within the interval; usual intervals keep 10 s slots."""
    assert KeepaliveScheduler(INTERVAL_MS, 10).slots == (INTERVAL_MS - WINDOW_MS) // WINDOW_MS
    huge = 10**13  # ~317 years
    started = time.perf_counter()
    scheduler = KeepaliveScheduler(huge, 10)
    for account_id in range(2 * MAX_SLOTS):
        scheduler.add(account_id, T0)
    loads = scheduler.slot_loads()
    scheduler.extended(0, T0 + 1)  # early: re-placed in a slot of the second half
    assert time.perf_counter() - started < 1.0
    assert scheduler.slots == MAX_SLOTS
    assert len(loads) == MAX_SLOTS and max(loads) - min(loads) <= 1
    for account_id in range(2 * MAX_SLOTS):
        deadline = scheduler.deadline_ms(account_id)
        assert deadline is not None and deadline <= T0 + 1 + huge
    first = scheduler.next_due_ms()
    assert first is not None and T0 < first <= T0 + scheduler.period_ms


def test_a_key_whose_put_is_in_flight_is_never_handed_out_twice() -> None:
    """``begin``: however long the PUT waits (the client's weight budget), the key is not
    handed out again; ``failed`` brings it back ``retry_ms`` later, ``extended`` at its phase."""
    scheduler = KeepaliveScheduler(INTERVAL_MS, max_per_s=10, retry_ms=30_000)
    scheduler.add(7, T0)
    due = scheduler.next_due_ms()
    assert due is not None
    assert scheduler.due(due) == [7]
    scheduler.begin(7)
    assert scheduler.in_flight(7)
    assert scheduler.due(due + 10 * 60_000) == []  # 10 min in flight: never re-handed
    scheduler.failed(7, due + 10 * 60_000)
    assert not scheduler.in_flight(7)
    assert scheduler.due(due + 10 * 60_000 + 29_999) == []
    assert scheduler.due(due + 10 * 60_000 + 30_000) == [7]
    scheduler.begin(7)
    scheduler.extended(7, due + 11 * 60_000)
    assert not scheduler.in_flight(7)
    assert scheduler.due(due + 11 * 60_000 + 60_000) == []
    scheduler.remove(7)
    scheduler.failed(7, due)  # a PUT ending after its key was removed: nothing comes back
    assert scheduler.next_due_ms() is None


def test_delayed_puts_keep_every_key_in_time_and_spread() -> None:
    """Every PUT answers 8 s after it was handed out (in flight meanwhile): still one PUT per
    key per cycle, every key within the interval, no window above twice the even rate."""
    keys = 3000
    scheduler = KeepaliveScheduler(INTERVAL_MS, max_per_s=10)
    last = {account_id: T0 for account_id in range(keys)}
    for account_id in range(keys):
        scheduler.add(account_id, T0)
    in_flight: deque[tuple[int, int]] = deque()  # (answer time, account)
    puts: list[int] = []
    now = T0
    longest = 0
    per_key: dict[int, int] = {}
    while now < T0 + 3 * INTERVAL_MS:
        now += 1000
        while in_flight and in_flight[0][0] <= now:
            _, account_id = in_flight.popleft()
            longest = max(longest, now - last[account_id])
            last[account_id] = now
            scheduler.extended(account_id, now)
        for account_id in scheduler.due(now):
            assert not scheduler.in_flight(account_id), "handed out while its PUT is in flight"
            scheduler.begin(account_id)
            in_flight.append((now + 8000, account_id))
            puts.append(now)
            per_key[account_id] = per_key.get(account_id, 0) + 1
    assert longest <= INTERVAL_MS
    assert max(per_key.values()) <= 4  # one per cycle (3 intervals + the first, early one)
    assert len(puts) <= keys * 3 * INTERVAL_MS // scheduler.period_ms + keys
    window: deque[int] = deque()
    busiest = 0
    for at in (t for t in puts if t > T0 + INTERVAL_MS):
        window.append(at)
        while window[0] <= at - WINDOW_MS:
            window.popleft()
        busiest = max(busiest, len(window))
    assert busiest <= 2 * even_rate(keys)
