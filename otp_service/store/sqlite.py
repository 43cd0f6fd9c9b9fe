"""The embedded store: one SQLite file in WAL mode, written in batches; all of its SQL.

Implements the outbox port (:mod:`.outbox`) and the counters port (:mod:`.counters`).

Every operation is queued and a single thread runs whatever has queued up in one transaction
(group commit, :mod:`.sqlite_engine`), so a burst of accepted requests costs one fsync, not one
each. A transaction that accepts messages commits with ``synchronous=FULL``: once ``accept``
returns, the message survives a crash of the process or of the machine. The bookkeeping after it
(attempts, sent, leases) commits without its own fsync (``NORMAL``, still safe against a process
crash; the next FULL commit makes it durable too): losing it to a power cut costs at worst a
resend of a message with the same Message-ID, and it halves the fsyncs of a sequential sender.

One process owns the file (an ``flock`` on ``<path>.lock``, and SQLite's exclusive locking
mode, so no shared-memory file is mapped: a store made read-only under the service gives an
I/O error, not a SIGBUS). So on open every lease left in the file is a dead run's: they are
ended, and the worker's first :meth:`SqliteStore.recover` finishes the SMS cut off mid-attempt.

Limit counters: counted in memory (:class:`~otp_service.store.counters.Counters`, the file's one
owner is this process) and logged in ``limit_counters``: each change is appended with the
engine's next batch (the accept of the same request: no commit of its own), read back on open
(the last row of a key wins), and the log is rewritten from the live counters on open and
whenever it holds more than twice as many rows as there are live counters (plus a slack of
:data:`COUNTER_LOG_SLACK`, at most ``max_limit_keys``): expired counters are forgotten and the
table stays bounded like the counters in memory.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Hashable, Sequence
from pathlib import Path

from ..errors import StoreUnavailable
from ..message.compose import Message
from .codec import message_from_json, message_to_json, request_id_of
from .counters import Counters
from .outbox import (
    EXPIRED_PREFIX,
    FINAL,
    NEVER_ATTEMPTED,
    UNKNOWN_OUTCOME,
    Accepted,
    Attempt,
    Due,
    ExpiredMessage,
    KeyHold,
    Recovered,
    StoredStatus,
)
from .sqlite_engine import Operation
from .sqlite_receipts import ATTEMPT_COLUMNS, MESSAGE_COLUMNS, SqliteReceipts
from .sqlite_receipts import INDEXES as RECEIPT_INDEXES

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
  finished_at REAL,
  attempt_started_at REAL,
  attempt_provider TEXT
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS messages_dedupe ON messages (dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_finished ON messages (finished_at);
CREATE TABLE IF NOT EXISTS attempts (
  message_id TEXT NOT NULL,
  at REAL NOT NULL,
  provider TEXT NOT NULL,
  outcome TEXT NOT NULL,
  error TEXT,
  provider_id TEXT
);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts (message_id);
CREATE TABLE IF NOT EXISTS idempotency (
  key TEXT PRIMARY KEY,
  message_id TEXT NOT NULL,
  created_at REAL NOT NULL
);
-- GCRA, as a log: each change of a theoretical arrival time (tat) appended for its key (a keyed
-- hash, never an address in the clear) and window length; the last row of a key wins, tat 0
-- forgets the key. Appending keeps the writes of a batch on the last pages (keyed rows would
-- land on random pages); the log is rewritten from the live counters as it grows.
CREATE TABLE IF NOT EXISTS limit_counters (
  key BLOB NOT NULL,
  period REAL NOT NULL,
  tat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value BLOB NOT NULL
);
"""
# After the columns exist (a file from an older version gains them first).
INDEXES = """
CREATE INDEX IF NOT EXISTS messages_dedupe_live ON messages (expires_at)
  WHERE dedupe_key IS NOT NULL;
"""

COUNTER_LOG_SLACK = 10_000  # rows the counter log may hold beyond twice the live counters


def _upgrade(conn: sqlite3.Connection) -> None:
    """Columns added since the first version of the file."""
    for table, columns in (
        ("messages", ("attempt_started_at REAL", "attempt_provider TEXT", *MESSAGE_COLUMNS)),
        ("attempts", ("provider_id TEXT", *ATTEMPT_COLUMNS)),
    ):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.split()[0] not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _dedupe_secret(conn: sqlite3.Connection) -> bytes:
    """The store's HMAC key for dedupe keys, made on first open. Dedupe keys written before
    it existed were bare hashes of the code: they are erased."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'dedupe_secret'").fetchone()
    if row is not None:
        return bytes(row[0])
    secret = secrets.token_bytes(32)
    conn.execute("INSERT INTO meta (key, value) VALUES ('dedupe_secret', ?)", (secret,))
    conn.execute("UPDATE messages SET dedupe_key = NULL WHERE dedupe_key IS NOT NULL")
    return secret


def _erase_expired_dedupe(conn: sqlite3.Connection, now: float) -> None:
    """Nothing derived from a code outlives its message's lifetime."""
    conn.execute(
        "UPDATE messages SET dedupe_key = NULL WHERE dedupe_key IS NOT NULL AND expires_at <= ?",
        (now,),
    )


def _insert_attempt(conn: sqlite3.Connection, message_id: str, attempt: Attempt) -> None:
    conn.execute(
        "INSERT INTO attempts (message_id, at, provider, outcome, error, provider_id) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (message_id, attempt.at, attempt.provider, attempt.outcome, attempt.error,
         attempt.provider_id),
    )  # fmt: skip
    conn.execute(
        "UPDATE messages SET attempts = attempts + 1, attempt_started_at = NULL, "
        "last_error = COALESCE(?, last_error) WHERE id = ?",
        (attempt.error, message_id),
    )


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


_HOLDER = (
    "SELECT i.message_id, i.created_at, m.id, m.status, m.provider FROM idempotency i "
    "LEFT JOIN messages m ON m.id = i.message_id WHERE i.key = ?"
)


def _hold_key(
    conn: sqlite3.Connection, key: str, message_id: str, now: float, stale_before: float
) -> KeyHold:
    """Reserve ``key`` for ``message_id`` unless another holds it (one transaction: atomic)."""
    row = conn.execute(_HOLDER, (key,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO idempotency (key, message_id, created_at) VALUES (?, ?, ?)",
            (key, message_id, now),
        )
        return KeyHold(message_id)
    holder, held_at, stored, status, provider = row
    if stored is not None:
        return KeyHold(holder, Accepted(holder, False, status, provider))
    if holder != message_id and held_at < stale_before:  # its request died before storing it
        conn.execute(
            "UPDATE idempotency SET message_id = ?, created_at = ? WHERE key = ?",
            (message_id, now, key),
        )
        return KeyHold(message_id)
    return KeyHold(holder)


def _release_key(conn: sqlite3.Connection, key: str, message_id: str) -> None:
    conn.execute(
        "DELETE FROM idempotency WHERE key = ? AND message_id = ? "
        "AND NOT EXISTS (SELECT 1 FROM messages WHERE id = ?)",
        (key, message_id, message_id),
    )


def _expire_due(conn: sqlite3.Connection, now: float) -> list[ExpiredMessage]:
    """Mark unleased queued messages past their expiry ``expired``; return what they were."""
    rows = conn.execute(
        "SELECT id, channel, recipient, attempts, last_error, body FROM messages "
        "WHERE status = 'queued' AND expires_at <= ? AND (lease_until IS NULL OR lease_until < ?)",
        (now, now),
    ).fetchall()
    conn.executemany(
        "UPDATE messages SET status = 'expired', body = NULL, finished_at = ?, "
        "last_error = ? || COALESCE(last_error, ?) WHERE id = ?",
        [(now, EXPIRED_PREFIX, NEVER_ATTEMPTED, row[0]) for row in rows],
    )
    return [
        ExpiredMessage(message_id, channel, to, attempts, last_error, request_id_of(body))
        for message_id, channel, to, attempts, last_error, body in rows
    ]


def _recover(conn: sqlite3.Connection, now: float) -> list[Recovered]:
    """Finish every queued SMS whose attempt started under a lease that ran out as an unknown
    outcome (never resent)."""
    rows = conn.execute(
        "SELECT id, recipient, attempt_started_at, attempt_provider, attempts, body "
        "FROM messages WHERE channel = 'sms' AND status = 'queued' "
        "AND attempt_started_at IS NOT NULL AND (lease_until IS NULL OR lease_until < ?)",
        (now,),
    ).fetchall()
    found = []
    for message_id, to, started, provider, attempts, body in rows:
        conn.execute(
            "INSERT INTO attempts (message_id, at, provider, outcome, error) "
            "VALUES (?, ?, ?, 'unknown', ?)",
            (message_id, started, provider, UNKNOWN_OUTCOME),
        )
        conn.execute(
            "UPDATE messages SET status = 'failed', provider = ?, last_error = ?, body = NULL, "
            "finished_at = ?, attempts = attempts + 1, attempt_started_at = NULL, "
            "lease_until = NULL WHERE id = ?",
            (provider, UNKNOWN_OUTCOME, now, message_id),
        )
        found.append(Recovered(message_id, to, provider, attempts + 1, request_id_of(body)))
    return found


def _backlog(conn: sqlite3.Connection) -> tuple[int, float | None]:
    """The number of messages not yet final and the creation time of the oldest."""
    count, oldest = conn.execute(
        "SELECT COUNT(*), MIN(created_at) FROM messages WHERE status = 'queued'"
    ).fetchone()
    return int(count), oldest


class SqliteStore(SqliteReceipts):
    """The :class:`~otp_service.store.outbox.OutboxStore` and the
    :class:`~otp_service.store.counters.CounterStore` on one SQLite file."""

    def __init__(
        self, path: str | Path, lock_wait: float = 30.0, max_limit_keys: int = 500_000
    ) -> None:
        super().__init__(path, lock_wait)
        self.max_limit_keys = max_limit_keys
        self._counters = Counters(max_limit_keys, self._counter_slot)
        self._counter_lock = threading.Lock()  # the changed counters, between loop and thread
        self._changed: dict[tuple[Hashable, float], float] = {}  # (slot, window) -> TAT
        self._writing_counters = False  # a write of the changed counters is queued
        self._counter_rows = 0  # rows in the counter log (a few more while a write is queued)
        self._rewriting = False  # a rewrite of the counter log is queued
        self._slot_hash = hashlib.blake2b(digest_size=16)  # keyed with the secret on open

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Schema and upgrades; the previous run's leases ended (it is dead: the file is ours);
        expired dedupe keys erased; the limit counters read back. One transaction."""
        conn.executescript(SCHEMA)
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            _upgrade(conn)
            conn.execute(INDEXES)
            for index in RECEIPT_INDEXES.split(";"):
                if index.strip():
                    conn.execute(index)
            self.dedupe_secret = _dedupe_secret(conn)
            self._slot_hash = hashlib.blake2b(key=self.dedupe_secret, digest_size=16)
            conn.execute("UPDATE messages SET lease_until = NULL WHERE lease_until IS NOT NULL")
            # Idempotency-Keys held by requests of the previous run that never stored a message.
            conn.execute(
                "DELETE FROM idempotency WHERE NOT EXISTS "
                "(SELECT 1 FROM messages m WHERE m.id = idempotency.message_id)"
            )
            _erase_expired_dedupe(conn, now)
            self._read_counters(conn, now)
            self._rewrite_counters(conn, self._counters.entries(now))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- the outbox port

    async def accept(
        self,
        message: Message,
        *,
        expires_at: float,
        lease_until: float,
        idempotency_key: str | None,
        dedupe_key: str | None,
    ) -> Accepted:
        if not self._healthy:
            raise StoreUnavailable(f"{self.path} is unavailable")
        now = message.created_at.timestamp()
        body = message_to_json(message)

        def run(conn: sqlite3.Connection) -> Accepted:
            holder = None
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT message_id FROM idempotency WHERE key = ?", (idempotency_key,)
                ).fetchone()
                holder = None if row is None else row[0]
            if holder != message.id:  # a key this message holds (hold_key) is its own
                if (found := _existing(conn, idempotency_key, dedupe_key, now)) is not None:
                    return found
                if holder is not None:  # held by a request still deciding (or taken over)
                    return Accepted(holder, False)
            conn.execute(
                "INSERT INTO messages (id, channel, recipient, type, status, body, dedupe_key, "
                "created_at, expires_at, next_attempt_at, lease_until) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (message.id, message.channel, message.to, message.type, body, dedupe_key,
                 now, expires_at, now, lease_until),
            )  # fmt: skip
            if idempotency_key is not None and holder is None:
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

    async def hold_key(
        self, key: str, message_id: str, now: float, stale_before: float
    ) -> KeyHold | None:
        if not self._healthy:
            raise StoreUnavailable(f"{self.path} is unavailable")
        # Not durable: a hold matters only while its process lives (open() drops the others).
        return await self._do(lambda conn: _hold_key(conn, key, message_id, now, stale_before))

    async def release_key(self, key: str, message_id: str) -> None:
        await self._do(lambda conn: _release_key(conn, key, message_id))

    async def recover(self, now: float) -> list[Recovered]:
        return await self._do(lambda conn: _recover(conn, now))

    async def claim_due(self, now: float, lease_until: float, limit: int) -> list[Due]:
        def run(conn: sqlite3.Connection) -> list[Due]:
            _erase_expired_dedupe(conn, now)
            rows = conn.execute(
                "SELECT id, body, expires_at, attempts, last_error FROM messages "
                "WHERE status = 'queued' "
                "AND next_attempt_at <= ? AND expires_at > ? "
                "AND (lease_until IS NULL OR lease_until < ?) "
                "AND NOT (channel = 'sms' AND attempt_started_at IS NOT NULL) "
                "ORDER BY next_attempt_at LIMIT ?",
                (now, now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE messages SET lease_until = ? WHERE id = ?",
                [(lease_until, row[0]) for row in rows],
            )
            return [Due(message_from_json(row[1]), row[2], row[3], row[4]) for row in rows]

        return await self._do(run)

    async def start_attempt(self, message_id: str, provider: str, at: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE messages SET attempt_started_at = ?, attempt_provider = ? WHERE id = ?",
                (at, provider, message_id),
            )

        await self._do(run, durable=True)

    async def expire_due(self, now: float) -> list[ExpiredMessage]:
        return await self._do(lambda conn: _expire_due(conn, now))

    async def backlog(self) -> tuple[int, float | None]:
        return await self._do(_backlog)

    async def renew(self, message_ids: list[str], lease_until: float) -> None:
        sql = "UPDATE messages SET lease_until = ? WHERE id = ? AND status = 'queued'"
        await self._do(lambda c: c.executemany(sql, [(lease_until, i) for i in message_ids]))

    async def record_attempt(self, message_id: str, attempt: Attempt) -> None:
        await self._do(lambda conn: _insert_attempt(conn, message_id, attempt))

    async def finish(
        self,
        message_id: str,
        status: str,
        provider: str | None,
        error: str | None,
        attempt: Attempt | None = None,
        keep_body: bool = False,
    ) -> None:
        assert status in FINAL
        now = time.time()

        def run(conn: sqlite3.Connection) -> None:
            if attempt is not None:
                _insert_attempt(conn, message_id, attempt)
            conn.execute(
                "UPDATE messages SET status = ?, provider = ?, last_error = ?, "
                "body = CASE WHEN ? THEN body END, "
                "lease_until = NULL, finished_at = ?, attempt_started_at = NULL WHERE id = ?",
                (status, provider, error, keep_body, now, message_id),
            )

        await self._do(run)

    async def retry_later(self, message_id: str, next_attempt_at: float, error: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE messages SET next_attempt_at = ?, last_error = ?, lease_until = NULL, "
                "attempt_started_at = NULL WHERE id = ? AND status = 'queued'",
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
                "SELECT at, provider, outcome, error, provider_id, receipt, receipt_at, "
                "receipt_error FROM attempts WHERE message_id = ? "
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

    # -- the counters port

    def _counter_slot(self, key: str) -> bytes:
        """A key as stored: keyed with the store's secret (no address in the clear)."""
        keyed = self._slot_hash.copy()  # cheaper than a new keyed hash each time
        keyed.update(key.encode())
        return keyed.digest()

    async def hit(self, key: str, limit: int, window: float, now: float) -> float | None:
        retry_after, slot, tat = self._counters.count(key, limit, window, now)
        if retry_after is None:
            with self._counter_lock:
                self._changed[(slot, window)] = tat
                queue, self._writing_counters = not self._writing_counters, True
            if queue:  # written with whatever the engine commits next (this request's accept)
                self._do_later(self._write_counters)
            self._counter_rows += 1
            if self._counter_rows % 64 == 0 and self._log_outgrown():
                self._rewriting = True
                self._do_later(self._rewrite_later(self._counters.entries(time.time())))
        return retry_after

    def _log_outgrown(self) -> bool:
        """Whether the counter log holds more than twice the live counters and the slack."""
        slack = min(COUNTER_LOG_SLACK, self.max_limit_keys)
        return self._counter_rows > 2 * len(self._counters) + slack and not self._rewriting

    async def reset_counters(self, keys: Sequence[str] | None) -> None:
        slots = None if keys is None else {self._counter_slot(key) for key in keys}
        self._counters.forget(slots)
        with self._counter_lock:
            if slots is None:
                self._changed.clear()
            else:
                for changed in [k for k in self._changed if k[0] in slots]:
                    del self._changed[changed]

        def run(conn: sqlite3.Connection) -> None:
            if slots is None:
                conn.execute("DELETE FROM limit_counters")
                self._counter_rows = 0
            else:  # tat 0: the key is forgotten, whatever was logged for it before
                conn.executemany(
                    "INSERT INTO limit_counters (key, period, tat) VALUES (?, 0, 0)",
                    [(slot,) for slot in slots],
                )

        await self._do(run)

    def _write_counters(self, conn: sqlite3.Connection) -> None:
        """Append the counters changed since the last batch (in the store's thread)."""
        with self._counter_lock:
            changed, self._changed = self._changed, {}
            self._writing_counters = False
        try:
            conn.executemany(
                "INSERT INTO limit_counters (key, period, tat) VALUES (?, ?, ?)",
                [(slot, period, tat) for (slot, period), tat in changed.items()],
            )
        except BaseException:  # not written: kept for the next batch (newer values win)
            with self._counter_lock:
                self._changed = changed | self._changed
            raise

    def _rewrite_later(self, entries: list[tuple[Hashable, float, float]]) -> Operation:
        """The rewrite of the counter log from ``entries`` (taken on the event loop: the
        counters change there), as an operation of the next batch."""

        def run(conn: sqlite3.Connection) -> None:
            self._rewriting = False
            self._rewrite_counters(conn, entries)

        return run

    def _rewrite_counters(
        self, conn: sqlite3.Connection, entries: list[tuple[Hashable, float, float]]
    ) -> None:
        """Replace the counter log with the live counters: expired ones are forgotten."""
        conn.execute("DELETE FROM limit_counters")
        conn.executemany("INSERT INTO limit_counters (key, period, tat) VALUES (?, ?, ?)", entries)
        self._counter_rows = len(entries)

    def _read_counters(self, conn: sqlite3.Connection, now: float) -> None:
        """Read the counter log back into memory: the last row of each key wins."""
        logged: dict[bytes, dict[float, float]] = {}
        for key, period, tat in conn.execute(
            "SELECT key, period, tat FROM limit_counters ORDER BY rowid"
        ):
            if tat == 0:
                logged.pop(bytes(key), None)
            else:
                logged.setdefault(bytes(key), {})[period] = tat
        for key, periods in logged.items():
            for period, tat in periods.items():
                self._counters.keep(key, period, tat, now)
