"""The embedded store: one SQLite file in WAL mode, written in batches.

Every operation is queued and a single thread runs whatever has queued up in one transaction
(group commit), so a burst of accepted requests costs one fsync, not one each. A transaction
that accepts messages commits with ``synchronous=FULL``: once ``accept`` returns, the message
survives a crash of the process or of the machine. The bookkeeping after it (attempts, sent,
leases) commits without its own fsync (``NORMAL``, still safe against a process crash; the next
FULL commit makes it durable too): losing it to a power cut costs at worst a resend of a message
with the same Message-ID, and it halves the fsyncs of a sequential sender.

One process owns the file (an ``flock`` on ``<path>.lock``, and SQLite's exclusive locking
mode, so no shared-memory file is mapped: a store made read-only under the service gives an
I/O error, not a SIGBUS). On open, leases left by a previous run are released and SMS cut off
mid-attempt are finished as unknown outcomes (:mod:`.sqlite_schema`).

Each operation of a batch runs in its own savepoint: one that fails (whatever the exception)
fails alone. A failure of the commit itself, an I/O error, a full disk, or the file deleted or
replaced under the process makes the store unhealthy: :meth:`SqliteStore.accept` raises
:class:`~otp_service.errors.StoreUnavailable` until :meth:`SqliteStore.probe` sees a durable write
work again
(a deleted file is first written anew from the still-open handle, nothing lost).
Limit counters live in memory here (:mod:`.counters`; the PostgreSQL store keeps them next to
the messages).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from ..errors import StoreUnavailable
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
from .sqlite_engine import SqliteEngine
from .sqlite_reports import backlog, expire_due
from .sqlite_schema import erase_expired_dedupe


def _insert_attempt(conn: sqlite3.Connection, message_id: str, attempt: Attempt) -> None:
    conn.execute(
        "INSERT INTO attempts (message_id, at, provider, outcome, error) VALUES (?, ?, ?, ?, ?)",
        (message_id, attempt.at, attempt.provider, attempt.outcome, attempt.error),
    )
    conn.execute(
        "UPDATE messages SET attempts = attempts + 1, attempt_started_at = NULL WHERE id = ?",
        (message_id,),
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


class SqliteStore(SqliteEngine):
    """The :class:`~otp_service.store.base.Store` on one SQLite file."""

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
        if not self._healthy:
            raise StoreUnavailable(f"{self.path} is unavailable")
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
            erase_expired_dedupe(conn, now)
            conn.execute(
                "UPDATE messages SET status = 'expired', body = NULL, finished_at = ?, "
                "last_error = 'expired before delivery: ' "
                "|| COALESCE(last_error, 'never attempted') "
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

    async def start_attempt(self, message_id: str, provider: str, at: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE messages SET attempt_started_at = ?, attempt_provider = ? WHERE id = ?",
                (at, provider, message_id),
            )

        await self._do(run, durable=True)

    async def expire_due(self, now: float) -> list[ExpiredMessage]:
        return await self._do(lambda conn: expire_due(conn, now))

    async def backlog(self) -> tuple[int, float | None]:
        return await self._do(backlog)

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
    ) -> None:
        assert status in FINAL
        now = time.time()

        def run(conn: sqlite3.Connection) -> None:
            if attempt is not None:
                _insert_attempt(conn, message_id, attempt)
            conn.execute(
                "UPDATE messages SET status = ?, provider = ?, last_error = ?, body = NULL, "
                "lease_until = NULL, finished_at = ?, attempt_started_at = NULL WHERE id = ?",
                (status, provider, error, now, message_id),
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

    async def hit(self, key: str, limit: int, window: float, now: float) -> float | None:
        return self.counters.hit(key, limit, window, now)

    async def reset_counters(self, keys: Sequence[str] | None) -> None:
        await self.counters.reset_counters(keys)

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
