"""Queries of the SQLite store that report on the outbox: expiry and backlog."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

from .base import ExpiredMessage


def create_private(path: str) -> None:
    """Create ``path`` (and its folder) readable by this user only, before SQLite opens it:
    SQLite gives its -wal and -shm files the main file's permissions."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def expire_due(conn: sqlite3.Connection, now: float) -> list[ExpiredMessage]:
    """Mark unleased queued messages past their expiry ``expired``; return what they were."""
    rows = conn.execute(
        "SELECT id, channel, recipient, attempts, last_error, body FROM messages "
        "WHERE status = 'queued' AND expires_at <= ? AND (lease_until IS NULL OR lease_until < ?)",
        (now, now),
    ).fetchall()
    conn.executemany(
        "UPDATE messages SET status = 'expired', body = NULL, finished_at = ?, "
        "last_error = 'expired before delivery: ' || COALESCE(last_error, 'never attempted') "
        "WHERE id = ?",
        [(now, row[0]) for row in rows],
    )
    found = []
    for message_id, channel, to, attempts, last_error, body in rows:
        request_id = None
        if body:
            with contextlib.suppress(ValueError):  # a body we cannot read still expires
                request_id = json.loads(body).get("request_id")
        found.append(ExpiredMessage(message_id, channel, to, attempts, last_error, request_id))
    return found


def backlog(conn: sqlite3.Connection) -> tuple[int, float | None]:
    """The number of messages not yet final and the creation time of the oldest."""
    count, oldest = conn.execute(
        "SELECT COUNT(*), MIN(created_at) FROM messages WHERE status = 'queued'"
    ).fetchone()
    return int(count), oldest
