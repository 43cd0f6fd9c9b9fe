"""The SQLite store's schema, its upgrades, and what it does on open after a crash."""

from __future__ import annotations

import secrets
import sqlite3
import time

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
  error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_message ON attempts (message_id);
CREATE TABLE IF NOT EXISTS idempotency (
  key TEXT PRIMARY KEY,
  message_id TEXT NOT NULL,
  created_at REAL NOT NULL
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

UNKNOWN = (
    "provider_outcome_unknown: the service stopped during this attempt; the SMS may have been "
    "sent, so it is not resent"
)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Columns added since the first version of the file."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
    for column in ("attempt_started_at REAL", "attempt_provider TEXT"):
        if column.split()[0] not in have:
            conn.execute(f"ALTER TABLE messages ADD COLUMN {column}")


def dedupe_secret(conn: sqlite3.Connection) -> bytes:
    """The store's HMAC key for dedupe keys, made on first open. Dedupe keys written before
    it existed were bare hashes of the code: they are erased."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'dedupe_secret'").fetchone()
    if row is not None:
        return bytes(row[0])
    secret = secrets.token_bytes(32)
    conn.execute("INSERT INTO meta (key, value) VALUES ('dedupe_secret', ?)", (secret,))
    conn.execute("UPDATE messages SET dedupe_key = NULL WHERE dedupe_key IS NOT NULL")
    return secret


def recover(conn: sqlite3.Connection, now: float | None = None) -> int:
    """After a crash: free leases, erase expired dedupe keys, and finish every SMS whose
    attempt started without an outcome as an unknown outcome (never resent). Returns how many
    SMS were finished so."""
    now = time.time() if now is None else now
    conn.execute("UPDATE messages SET lease_until = NULL WHERE lease_until IS NOT NULL")
    erase_expired_dedupe(conn, now)
    rows = conn.execute(
        "SELECT id, attempt_started_at, attempt_provider FROM messages "
        "WHERE channel = 'sms' AND status = 'queued' AND attempt_started_at IS NOT NULL"
    ).fetchall()
    for message_id, started, provider in rows:
        conn.execute(
            "INSERT INTO attempts (message_id, at, provider, outcome, error) "
            "VALUES (?, ?, ?, 'unknown', ?)",
            (message_id, started, provider, UNKNOWN),
        )
        conn.execute(
            "UPDATE messages SET status = 'failed', provider = ?, last_error = ?, body = NULL, "
            "finished_at = ?, attempts = attempts + 1, attempt_started_at = NULL "
            "WHERE id = ?",
            (provider, UNKNOWN, now, message_id),
        )
    return len(rows)


def erase_expired_dedupe(conn: sqlite3.Connection, now: float) -> None:
    """Nothing derived from a code outlives its message's lifetime."""
    conn.execute(
        "UPDATE messages SET dedupe_key = NULL WHERE dedupe_key IS NOT NULL AND expires_at <= ?",
        (now,),
    )


def prepare(conn: sqlite3.Connection) -> tuple[bytes, int]:
    """Schema, upgrades and crash recovery in one transaction: (dedupe secret, SMS finished
    as unknown)."""
    conn.executescript(SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    try:
        _upgrade(conn)
        conn.execute(INDEXES)
        secret = dedupe_secret(conn)
        unknown = recover(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return secret, unknown
