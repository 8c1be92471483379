"""``kill -9`` of the process using the durable embedded bus loses no accepted event.

Proved at the bus level (not through ``tradewire run``): a child process publishes envelopes to
the SQLite bus, printing each event id once ``publish`` has returned (= accepted from the
exchange), while a ``Consumer`` in the same process handles them slowly. The parent SIGKILLs it
mid-way, checks that messages were left pending (fetched, unacked), then a second process on the
same file drains the bus. Every accepted event id must have been processed; the handler's effect
is idempotent by event id (``INSERT OR IGNORE``), so a redelivery after the crash is harmless
("exactly once in effect"). Run ``python tests/e2e/test_kill9_embedded.py child|drain DIR`` by hand
to see the two halves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tradewire.bus.base import Envelope
from tradewire.bus.consumer import Consumer
from tradewire.bus.sqlite_bus import SqliteBus

TOTAL = 400
KILL_AFTER_PUBLISHED = 150
PARTITIONS = 4


def _envelope(seq: int) -> Envelope:
    return Envelope(
        event_id=f"ev-{seq}", account_id=1 + seq % 5, user_id=10, symbol="BTCUSDT",
        received_ms=1_767_000_000_000 + seq, event={"e": "ORDER_TRADE_UPDATE", "seq": seq},
    )


def _effects(folder: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(folder / "effects.db", isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS processed (event_id TEXT PRIMARY KEY)")
    conn.execute("CREATE TABLE IF NOT EXISTS calls (event_id TEXT NOT NULL)")
    return conn


def _consumer(bus: SqliteBus, folder: Path, name: str, delay_s: float) -> Consumer:
    effects = _effects(folder)

    async def handler(env: Envelope) -> None:
        await asyncio.sleep(delay_s)
        effects.execute("INSERT INTO calls VALUES (?)", (env.event_id,))
        effects.execute("INSERT OR IGNORE INTO processed VALUES (?)", (env.event_id,))

    return Consumer(bus, handler, name=name, redelivery_idle_s=0.3, block_ms=20, concurrency=8)


async def _child(folder: Path) -> None:
    """Publish TOTAL envelopes while consuming slowly; never returns normally before the kill."""
    bus = SqliteBus(folder / "bus.db", PARTITIONS)
    stop = asyncio.Event()
    running = asyncio.create_task(_consumer(bus, folder, "first", 0.01).run(stop))
    for seq in range(TOTAL):
        env = _envelope(seq)
        await bus.publish(env)
        sys.stdout.write(f"P {env.event_id}\n")
        sys.stdout.flush()
        await asyncio.sleep(0.002)
    await asyncio.sleep(60)  # the parent kills us long before
    stop.set()
    await running


async def _drain(folder: Path) -> None:
    bus = SqliteBus(folder / "bus.db", PARTITIONS)
    consumer = _consumer(bus, folder, "second", 0.0)
    try:
        await consumer.drain(30)
    finally:
        await bus.close()
    sys.stdout.write(json.dumps({"reclaimed": consumer.stats.reclaimed}) + "\n")


def _spawn(mode: str, folder: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, __file__, mode, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.slow
def test_sigkill_mid_stream_loses_no_accepted_event(tmp_path: Path) -> None:
    child = _spawn("child", tmp_path)
    accepted: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            accepted.append(line.split()[1])
            if len(accepted) >= KILL_AFTER_PUBLISHED:
                break
        assert len(accepted) == KILL_AFTER_PUBLISHED, "child died before the kill"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
        time.sleep(0.05)
        accepted += [line.split()[1] for line in child.stdout if line.startswith("P ")]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    effects = _effects(tmp_path)
    try:
        _check_recovery(tmp_path, effects, accepted)
    finally:
        effects.close()


def _check_recovery(folder: Path, effects: sqlite3.Connection, accepted: list[str]) -> None:
    """After the kill: work was left half done; a new process finishes all of it."""
    done_before = {row[0] for row in effects.execute("SELECT event_id FROM processed")}
    left_pending = asyncio.run(_pending(folder))
    assert len(accepted) < TOTAL, "the child finished publishing before the kill"
    assert 0 < len(done_before) < len(accepted), "kill was not mid-way"
    assert left_pending > 0, "nothing was in flight at the kill: the test proves too little"

    drain = _spawn("drain", folder)
    out, _ = drain.communicate(timeout=60)
    assert drain.returncode == 0
    assert json.loads(out.splitlines()[-1])["reclaimed"] >= left_pending

    processed = {row[0] for row in effects.execute("SELECT event_id FROM processed")}
    calls = [row[0] for row in effects.execute("SELECT event_id FROM calls")]
    assert set(accepted) <= processed  # nothing accepted was lost
    assert processed <= {_envelope(seq).event_id for seq in range(TOTAL)}
    assert len(calls) - len(set(calls)) <= left_pending  # only the in-flight ones ran twice


async def _pending(folder: Path) -> int:
    bus = SqliteBus(folder / "bus.db", PARTITIONS)
    try:
        return await bus.pending()
    finally:
        await bus.close()


if __name__ == "__main__":
    MODES = {"child": _child, "drain": _drain}
    asyncio.run(MODES[sys.argv[1]](Path(sys.argv[2])))
