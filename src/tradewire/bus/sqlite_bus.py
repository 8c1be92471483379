"""Durable embedded bus: the ``EmbeddedBus`` semantics on one SQLite file (WAL).

The one-machine default (``TRADEWIRE_BUS_URL=embedded`` -> ``<data_dir>/bus.db``). A ``kill -9``
of the process loses nothing that ``publish`` returned for: the row is committed first.

* Table ``messages``: one row per stored message. ``consumer IS NULL`` = never handed out;
  otherwise the row is pending with ``consumer``, ``delivered_at`` (wall-clock ms, so it means
  the same after a restart) and ``deliveries``. ``ack`` deletes the row: nothing to trim.
* ``publish_many`` inserts the batch in one transaction (one commit): all rows or none.
* ``fetch`` selects the oldest undelivered rows (publish order, which keeps per-partition
  order) and marks them delivered in one ``BEGIN IMMEDIATE`` transaction, so two processes on
  the same file never receive the same row.
* ``reclaim`` takes rows pending longer than ``min_idle_ms`` (XAUTOCLAIM semantics: owner and
  time reset, ``deliveries`` + 1). After a crash, the rows the dead process had fetched are
  simply pending with an old ``delivered_at``: the next consumer reclaims them once idle.
* ``dead_letter`` inserts the DLQ row and deletes the original in ONE transaction: atomic, a
  crash leaves either both changes or neither.
* ``set_paused`` / ``is_paused``: the ``control`` table (key ``paused``), shared by every
  process using the file.
* ``synchronous=NORMAL`` (default) in WAL mode survives a process crash (``kill -9``) but may
  lose the last commits on power loss / OS crash; pass ``synchronous="FULL"`` to fsync each
  commit (slower: one fsync per publish).

Every statement runs on one dedicated thread (sqlite3 is blocking); ``fetch`` waits on an
in-process event and polls every ``poll_ms`` for rows published by other processes. Nothing is
opened before the first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tradewire.bus.base import DeadLetter, Envelope, Message, PartitionDepth, partition_for
from tradewire.names import DEFAULT_PARTITIONS

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    partition INTEGER NOT NULL,
    body BLOB NOT NULL,
    consumer TEXT,
    delivered_at INTEGER,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_undelivered ON messages(id) WHERE consumer IS NULL;
CREATE INDEX IF NOT EXISTS messages_pending ON messages(delivered_at)
    WHERE consumer IS NOT NULL;
CREATE TABLE IF NOT EXISTS dlq (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    original_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    error_type TEXT NOT NULL,
    first_failed_ms INTEGER NOT NULL,
    last_failed_ms INTEGER NOT NULL,
    extra TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS control (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_ACK_CHUNK = 500  # ids per DELETE of ack_many (below SQLite's bound-parameter limit)
_DLQ_COLUMNS = (
    "id, original_id, partition, body, attempts, error, error_type, first_failed_ms,"
    " last_failed_ms, extra"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _letter(row: tuple[Any, ...]) -> DeadLetter:
    extra = json.loads(row[9] or "{}")
    return DeadLetter(
        id=str(row[0]), original_id=row[1], partition=row[2], body=bytes(row[3]),
        attempts=row[4], error=row[5], error_type=row[6], first_failed_ms=row[7],
        last_failed_ms=row[8], extra={str(k): str(v) for k, v in extra.items()},
    )


def _only(partitions: Collection[int] | None) -> tuple[str, list[int]]:
    """SQL condition (and its parameters) restricting rows to ``partitions`` (None: all)."""
    if partitions is None:
        return "", []
    chosen = sorted({int(p) for p in partitions})
    return f" AND partition IN ({', '.join('?' * len(chosen)) or 'NULL'})", chosen


def _int_id(message_id: str) -> int | None:
    try:
        return int(message_id)
    except ValueError:
        return None


class SqliteBus:
    """``Bus`` on a SQLite file; safe for several processes sharing the file."""

    def __init__(
        self,
        path: Path | str,
        partitions: int = DEFAULT_PARTITIONS,
        *,
        synchronous: str = "NORMAL",
        poll_ms: int = 50,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown synchronous mode {synchronous!r}")
        self.partitions = partitions
        self.path = Path(path)
        self._synchronous = synchronous.upper()
        self._poll_s = poll_ms / 1000
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-bus")
        self._conn: sqlite3.Connection | None = None
        self._published = asyncio.Event()
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """Open (once) on the bus thread; autocommit mode, transactions are explicit."""
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], T], tx: bool = False) -> T:
        """Run ``work`` on the bus thread; ``tx``: inside BEGIN IMMEDIATE ... COMMIT."""
        if self._closed:
            raise RuntimeError("bus is closed")

        def call() -> T:
            conn = self._connection()
            if not tx:
                return work(conn)
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    # -- Bus -----------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Open the file and create the tables (optional: every method does it lazily)."""
        await self._run(lambda conn: None)

    async def publish(self, envelope: Envelope) -> str:
        partition = partition_for(envelope.key, self.partitions)
        return await self.publish_raw(partition, envelope.encode())

    async def publish_raw(self, partition: int, body: bytes) -> str:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range 0..{self.partitions - 1}")
        sql, args = "INSERT INTO messages (partition, body) VALUES (?, ?)", (partition, body)
        message_id = await self._run(lambda conn: str(conn.execute(sql, args).lastrowid))
        self._published.set()
        return message_id

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[str]:
        """One transaction (one commit) for the whole batch: all stored or none."""
        if not envelopes:
            return []
        partitions = self.partitions
        rows = [(partition_for(env.key, partitions), env.encode()) for env in envelopes]
        sql = "INSERT INTO messages (partition, body) VALUES (?, ?)"

        def insert(conn: sqlite3.Connection) -> list[str]:
            return [str(conn.execute(sql, row).lastrowid) for row in rows]

        ids = await self._run(insert, tx=True)
        self._published.set()
        return ids

    async def fetch(
        self, consumer: str, count: int, block_ms: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(block_ms, 0) / 1000
        only = _only(partitions)
        while not self._closed:
            self._published.clear()
            taken = await self._run(lambda conn: self._take(conn, consumer, count, only), tx=True)
            remaining = deadline - loop.time()
            if taken or remaining <= 0 or self._closed:
                return taken
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, self._poll_s)):
                    await self._published.wait()
        return []

    @staticmethod
    def _take(
        conn: sqlite3.Connection, consumer: str, count: int, only: tuple[str, list[int]]
    ) -> list[Message]:
        rows = conn.execute(
            f"SELECT id, partition, body FROM messages WHERE consumer IS NULL{only[0]}"
            " ORDER BY id LIMIT ?",
            (*only[1], count),
        ).fetchall()
        conn.executemany(
            "UPDATE messages SET consumer = ?, delivered_at = ?, deliveries = 1 WHERE id = ?",
            [(consumer, _now_ms(), row[0]) for row in rows],
        )
        return [Message(str(r[0]), r[1], bytes(r[2]), deliveries=1) for r in rows]

    async def ack(self, message: Message) -> None:
        row_id = _int_id(message.id)
        if row_id is not None:
            sql = "DELETE FROM messages WHERE id = ?"
            await self._run(lambda conn: conn.execute(sql, (row_id,)))

    async def ack_many(self, messages: Sequence[Message]) -> None:
        """Delete every acked row in one statement (one trip to the bus thread)."""
        ids = [i for m in messages if (i := _int_id(m.id)) is not None]

        def delete(conn: sqlite3.Connection) -> None:
            for start in range(0, len(ids), _ACK_CHUNK):
                chunk = ids[start:start + _ACK_CHUNK]
                conn.execute(
                    f"DELETE FROM messages WHERE id IN ({', '.join('?' * len(chunk))})", chunk
                )

        if ids:
            await self._run(delete, tx=len(ids) > _ACK_CHUNK)

    async def dead_letter(self, message: Message, letter: DeadLetter) -> None:
        """Insert the DLQ row and delete the original in one transaction."""
        row_id = _int_id(message.id)
        values = (
            letter.original_id, letter.partition, letter.body, letter.attempts, letter.error,
            letter.error_type, letter.first_failed_ms, letter.last_failed_ms,
            json.dumps(letter.extra),
        )

        def both(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO dlq ({_DLQ_COLUMNS.removeprefix('id, ')})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            conn.execute("DELETE FROM messages WHERE id = ?", (row_id,))

        await self._run(both, tx=True)

    async def reclaim(
        self, consumer: str, min_idle_ms: int, count: int,
        partitions: Collection[int] | None = None,
    ) -> list[Message]:
        only = _only(partitions)

        def claim(conn: sqlite3.Connection) -> list[Message]:
            now = _now_ms()
            rows = conn.execute(
                "SELECT id, partition, body, deliveries FROM messages"
                f" WHERE consumer IS NOT NULL AND delivered_at <= ?{only[0]}"
                " ORDER BY partition, id LIMIT ?",
                (now - min_idle_ms, *only[1], count),
            ).fetchall()
            conn.executemany(
                "UPDATE messages SET consumer = ?, delivered_at = ?, deliveries = deliveries + 1"
                " WHERE id = ?",
                [(consumer, now, row[0]) for row in rows],
            )
            return [Message(str(r[0]), r[1], bytes(r[2]), deliveries=r[3] + 1) for r in rows]

        return await self._run(claim, tx=True)

    async def touch(
        self, consumer: str, messages: Iterable[Message],
        partitions: Collection[int] | None = None,
    ) -> None:
        """Reset the idle time of in-flight messages (delivery count unchanged)."""
        ids = [i for m in messages if (i := _int_id(m.id)) is not None]
        sql = "UPDATE messages SET consumer = ?, delivered_at = ? WHERE id = ? AND consumer NOTNULL"
        if ids:
            await self._run(
                lambda conn: conn.executemany(sql, [(consumer, _now_ms(), i) for i in ids]), tx=True
            )

    async def _count(self, sql: str, *args: Any) -> int:
        return int(await self._run(lambda conn: conn.execute(sql, args).fetchone()[0]))

    async def pending(self) -> int:
        return await self._count("SELECT COUNT(*) FROM messages WHERE consumer IS NOT NULL")

    async def undelivered(self) -> int:
        """Messages stored but never handed out (consumer lag)."""
        return await self._count("SELECT COUNT(*) FROM messages WHERE consumer IS NULL")

    async def partition_depths(self) -> dict[int, PartitionDepth]:
        """Exact counts of undelivered (lag) and delivered-unacked (pending) rows, shared by
        every process on the file."""
        rows = await self._run(lambda conn: conn.execute(
            "SELECT partition, SUM(consumer IS NULL), SUM(consumer IS NOT NULL)"
            " FROM messages GROUP BY partition"
        ).fetchall())
        depths = {p: PartitionDepth(lag=0, pending=0) for p in range(self.partitions)}
        for partition, lag, pending in rows:
            if partition in depths:
                depths[partition] = PartitionDepth(lag=int(lag or 0), pending=int(pending or 0))
        return depths

    async def dlq_size(self) -> int:
        return await self._count("SELECT COUNT(*) FROM dlq")

    async def dlq_list(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._run(lambda conn: conn.execute(
            f"SELECT {_DLQ_COLUMNS} FROM dlq ORDER BY id LIMIT ?", (limit,)
        ).fetchall())
        return [_letter(row) for row in rows]

    async def dlq_get(self, dlq_id: str) -> DeadLetter | None:
        row_id = _int_id(dlq_id)
        if row_id is None:
            return None
        row = await self._run(lambda conn: conn.execute(
            f"SELECT {_DLQ_COLUMNS} FROM dlq WHERE id = ?", (row_id,)
        ).fetchone())
        return _letter(row) if row else None

    async def dlq_delete(self, dlq_ids: Sequence[str]) -> int:
        ids = [(i,) for raw in dlq_ids if (i := _int_id(raw)) is not None]

        def delete(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany("DELETE FROM dlq WHERE id = ?", ids)
            return conn.total_changes - before

        return await self._run(delete, tx=True) if ids else 0

    async def set_paused(self, paused: bool) -> None:
        await self._run(lambda conn: conn.execute(
            "INSERT INTO control (key, value) VALUES ('paused', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            ("1" if paused else "0",),
        ))

    async def is_paused(self) -> bool:
        row = await self._run(
            lambda conn: conn.execute("SELECT value FROM control WHERE key = 'paused'").fetchone()
        )
        return bool(row) and row[0] == "1"

    async def close(self) -> None:
        """Close the file (idempotent). Pending rows stay pending for a later reclaim."""
        if self._closed:
            return
        self._closed = True
        self._published.set()  # blocked fetchers return at once

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)
