"""The embedded store: one SQLite file in WAL mode, written in batches.

Every operation is queued and a single thread runs whatever has queued up in one transaction
(group commit), so a burst of accepted requests costs one fsync, not one each. A transaction
that accepts messages commits with ``synchronous=FULL``: once ``accept`` returns, the message
survives a crash of the process or of the machine. The bookkeeping after it (attempts, sent,
leases) commits without its own fsync (``NORMAL``, still safe against a process crash; the next
FULL commit makes it durable too): losing it to a power cut costs at worst a resend of a message
with the same Message-ID, and it halves the fsyncs of a sequential sender.

One process owns the file: on open, leases left by a previous run are released.
Limit counters live in memory here (a shared backend keeps them next to the messages).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from ..message.compose import Message
from .base import (
    FINAL,
    Accepted,
    Attempt,
    Due,
    ExpiredMessage,
    StoredStatus,
    message_from_json,
    message_to_json,
)
from .counters import WindowCounters
from .sqlite_reports import backlog, create_private, expire_due

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  channel TEXT NOT NULL,
  recipient TEXT NOT NULL,
  type TEXT NOT NULL,
  status TEXT NOT NULL,
  provider TEXT,
  body TEXT,
  dedupe_key TEXT,
  created_at REAL NOT NULL,
  expires_at REAL NOT NULL,
  next_attempt_at REAL NOT NULL,
  lease_until REAL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  finished_at REAL
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS messages_dedupe ON messages (dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_finished ON messages (finished_at);
CREATE TABLE IF NOT EXISTS attempts (
  message_id TEXT NOT NULL,
  at REAL NOT NULL,
  provider TEXT NOT NULL,
  outcome TEXT NOT NULL,
  error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts (message_id);
CREATE TABLE IF NOT EXISTS idempotency (
  key TEXT PRIMARY KEY,
  message_id TEXT NOT NULL,
  created_at REAL NOT NULL
);
"""


def _insert_attempt(conn: sqlite3.Connection, message_id: str, attempt: Attempt) -> None:
    conn.execute(
        "INSERT INTO attempts (message_id, at, provider, outcome, error) VALUES (?, ?, ?, ?, ?)",
        (message_id, attempt.at, attempt.provider, attempt.outcome, attempt.error),
    )
    conn.execute("UPDATE messages SET attempts = attempts + 1 WHERE id = ?", (message_id,))


def _existing(
    conn: sqlite3.Connection, idempotency_key: str | None, dedupe_key: str | None, now: float
) -> Accepted | None:
    """The message already holding this idempotency key, or this content, if any."""
    row = None
    if idempotency_key is not None:
        row = conn.execute(
            "SELECT m.id, m.status, m.provider FROM idempotency i "
            "JOIN messages m ON m.id = i.message_id WHERE i.key = ?",
            (idempotency_key,),
        ).fetchone()
    if row is None and dedupe_key is not None:
        row = conn.execute(
            "SELECT id, status, provider FROM messages "
            "WHERE dedupe_key = ? AND expires_at > ? ORDER BY created_at LIMIT 1",
            (dedupe_key, now),
        ).fetchone()
    return None if row is None else Accepted(row[0], False, row[1], row[2])


def _checkpoint(conn: sqlite3.Connection) -> None:
    """A marker operation: :meth:`SqliteStore.compact`'s checkpoint, run after its batch."""


class SqliteStore(WindowCounters):
    """The :class:`~otp_service.store.base.Store` on one SQLite file."""

    def __init__(self, path: str | Path, lock_wait: float = 30.0) -> None:
        super().__init__()
        self.path = str(path)
        self.lock_wait = lock_wait
        self._lock_file: IO[str] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Operation, asyncio.Future[Any], bool]] = []
        self._full_sync = True
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None

    # -- plumbing

    def _lock(self) -> None:
        """Own the file alone: a second process (a rolling deploy, a misconfigured replica)
        waits for the first to exit rather than free its leases and resend its messages."""
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._lock_file = open(fd, "a")  # noqa: SIM115 (held while open)
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._lock_file.close()
                    raise OSError(
                        f"another otp-service process owns {self.path} (waited "
                        f"{self.lock_wait:g} s); give each instance its own store.path"
                    ) from None
                time.sleep(0.2)

    def _connect(self) -> None:
        if self.path != ":memory:":
            create_private(self.path)
            self._lock()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA secure_delete=ON")  # a deleted body (the code) is overwritten
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(SCHEMA)
        # One owner per file: whatever a previous run had leased is free again.
        conn.execute("UPDATE messages SET lease_until = NULL WHERE lease_until IS NOT NULL")
        self._conn = conn

    def _run_batch(self, batch: list[Operation], durable: bool) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
        if durable != self._full_sync:
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._full_sync = durable
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for operation in batch:
                if operation is _checkpoint:  # runs after the commit, outside a transaction
                    results.append((True, None))
                    continue
                try:
                    conn.execute("SAVEPOINT op")
                    results.append((True, operation(conn)))
                    conn.execute("RELEASE op")
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((False, exc))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if any(operation is _checkpoint for operation in batch):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return results

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                durable = any(d for _, _, d in batch)
                operations = [op for op, _, _ in batch]
                try:
                    if durable:  # an fsync: off the event loop
                        results = await loop.run_in_executor(
                            self._executor, self._run_batch, operations, True
                        )
                    else:  # no fsync: tens of microseconds, less than a thread hop costs
                        results = self._run_batch(operations, False)
                except Exception as exc:  # the commit itself failed: nobody's write is kept
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future, _), (ok, value) in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flushing = False

    async def _do(self, operation: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        """Run ``operation`` in the next transaction; ``durable`` makes that commit fsync."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future, durable))
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None
        self._executor.shutdown(wait=True)

    async def compact(self) -> None:
        """Fold the WAL into the main file and truncate it: the pages of finished messages
        (their codes) do not linger in the -wal file (secure_delete zeroes the main file's)."""
        await self._do(_checkpoint, durable=True)

    # -- the Store protocol

    async def accept(
        self,
        message: Message,
        *,
        expires_at: float,
        lease_until: float,
        idempotency_key: str | None,
        dedupe_key: str | None,
    ) -> Accepted:
        now = message.created_at.timestamp()
        body = message_to_json(message)

        def run(conn: sqlite3.Connection) -> Accepted:
            if (found := _existing(conn, idempotency_key, dedupe_key, now)) is not None:
                return found
            conn.execute(
                "INSERT INTO messages (id, channel, recipient, type, status, body, dedupe_key, "
                "created_at, expires_at, next_attempt_at, lease_until) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (message.id, message.channel, message.to, message.type, body, dedupe_key,
                 now, expires_at, now, lease_until),
            )  # fmt: skip
            if idempotency_key is not None:
                conn.execute(
                    "INSERT INTO idempotency (key, message_id, created_at) VALUES (?, ?, ?)",
                    (idempotency_key, message.id, now),
                )
            return Accepted(message.id, True)

        return await self._do(run, durable=True)

    async def existing(
        self, idempotency_key: str | None, dedupe_key: str | None, now: float
    ) -> Accepted | None:
        return await self._do(lambda conn: _existing(conn, idempotency_key, dedupe_key, now))

    async def claim_due(self, now: float, lease_until: float, limit: int) -> list[Due]:
        def run(conn: sqlite3.Connection) -> list[Due]:
            conn.execute(
                "UPDATE messages SET status = 'expired', body = NULL, finished_at = ?, "
                "last_error = COALESCE(last_error, 'expired before delivery') "
                "WHERE status = 'queued' AND expires_at <= ? "
                "AND (lease_until IS NULL OR lease_until < ?)",
                (now, now, now),
            )
            rows = conn.execute(
                "SELECT id, body, expires_at, attempts FROM messages WHERE status = 'queued' "
                "AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?) "
                "ORDER BY next_attempt_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE messages SET lease_until = ? WHERE id = ?",
                [(lease_until, row[0]) for row in rows],
            )
            return [Due(message_from_json(row[1]), row[2], row[3]) for row in rows]

        return await self._do(run)

    async def expire_due(self, now: float) -> list[ExpiredMessage]:
        return await self._do(lambda conn: expire_due(conn, now))

    async def backlog(self) -> tuple[int, float | None]:
        return await self._do(backlog)

    async def record_attempt(self, message_id: str, attempt: Attempt) -> None:
        await self._do(lambda conn: _insert_attempt(conn, message_id, attempt))

    async def finish(
        self,
        message_id: str,
        status: str,
        provider: str | None,
        error: str | None,
        attempt: Attempt | None = None,
    ) -> None:
        assert status in FINAL
        now = time.time()

        def run(conn: sqlite3.Connection) -> None:
            if attempt is not None:
                _insert_attempt(conn, message_id, attempt)
            conn.execute(
                "UPDATE messages SET status = ?, provider = ?, last_error = ?, body = NULL, "
                "lease_until = NULL, finished_at = ? WHERE id = ?",
                (status, provider, error, now, message_id),
            )

        await self._do(run)

    async def retry_later(self, message_id: str, next_attempt_at: float, error: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE messages SET next_attempt_at = ?, last_error = ?, lease_until = NULL "
                "WHERE id = ? AND status = 'queued'",
                (next_attempt_at, error, message_id),
            )

        await self._do(run)

    async def status(self, message_id: str) -> StoredStatus | None:
        def run(conn: sqlite3.Connection) -> StoredStatus | None:
            row = conn.execute(
                "SELECT id, channel, recipient, type, status, provider, created_at, expires_at, "
                "finished_at, last_error FROM messages WHERE id = ?",
                (message_id,),
            ).fetchone()
            if row is None:
                return None
            attempts = conn.execute(
                "SELECT at, provider, outcome, error FROM attempts WHERE message_id = ? "
                "ORDER BY at, rowid",
                (message_id,),
            ).fetchall()
            (id_, channel, to, usage, status, provider, created, expires, finished, error) = row
            return StoredStatus(
                id_, channel, to, usage, status, provider, created, expires, finished, error,
                attempts=tuple(Attempt(*a) for a in attempts),
            )  # fmt: skip

        return await self._do(run)

    async def forget_duplicates(self, recipient: str | None) -> None:
        def run(conn: sqlite3.Connection) -> None:
            rows = conn.execute("SELECT id, recipient FROM messages WHERE dedupe_key IS NOT NULL")
            wanted = None if recipient is None else recipient.lower()  # SQLite's lower(): ASCII
            ids = [(i,) for i, to in rows.fetchall() if wanted is None or to.lower() == wanted]
            conn.executemany("UPDATE messages SET dedupe_key = NULL WHERE id = ?", ids)

        await self._do(run)

    async def purge(self, finished_before: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            ids = "SELECT id FROM messages WHERE finished_at IS NOT NULL AND finished_at < ?"
            conn.execute(f"DELETE FROM attempts WHERE message_id IN ({ids})", (finished_before,))  # noqa: S608
            conn.execute(
                f"DELETE FROM idempotency WHERE message_id IN ({ids})",  # noqa: S608
                (finished_before,),
            )
            cursor = conn.execute(
                "DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < ?",
                (finished_before,),
            )
            return cursor.rowcount

        return await self._do(run, durable=True)  # may delete many rows: off the loop
