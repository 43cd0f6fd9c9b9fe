"""The SQLite store's delivery receipts (the rule is :mod:`.receipts`'): attempts matched by
the provider's message id, moved up in one conditional write, the horizon's ``unknown``, and
the one resend of an undelivered SMS (:meth:`SqliteReceipts.claim_failover`)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..message.compose import Message
from .codec import message_from_json
from .receipts import RANK, RANK_SQL, UNKNOWN, Applied, Receipt, ReceiptTarget, same_number
from .sqlite_engine import SqliteEngine

# Added to an older file by the store's upgrade (sqlite.py), then indexed.
ATTEMPT_COLUMNS = ("receipt TEXT", "receipt_at REAL", "receipt_error TEXT")
MESSAGE_COLUMNS = ("failover_at REAL",)
INDEXES = """
CREATE INDEX IF NOT EXISTS attempts_provider_id ON attempts (provider_id, provider)
  WHERE provider_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS attempts_awaiting ON attempts (at)
  WHERE provider_id IS NOT NULL AND outcome IN ('sent', 'captured')
  AND (receipt IS NULL OR receipt = 'pending');
"""
_TARGET = (
    "SELECT a.rowid, a.message_id, a.provider, a.provider_id, m.recipient, a.at, a.receipt, "
    "m.status, m.expires_at FROM attempts a JOIN messages m ON m.id = a.message_id "
)
_AWAITING = (
    "a.provider_id IS NOT NULL AND a.outcome IN ('sent', 'captured') "
    "AND (a.receipt IS NULL OR a.receipt = 'pending') AND m.channel = 'sms' "
)


def _target(row: tuple[Any, ...]) -> ReceiptTarget:
    return ReceiptTarget(*row[1:])


def _find(conn: sqlite3.Connection, provider: str, provider_id: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(
        _TARGET + "WHERE a.provider_id = ? AND a.provider = ? "
        "AND a.outcome IN ('sent', 'captured') ORDER BY a.at DESC LIMIT 1",
        (provider_id, provider),
    ).fetchone()
    return row


def _apply(conn: sqlite3.Connection, receipt: Receipt, now: float) -> Applied:
    row = _find(conn, receipt.provider, receipt.provider_id)
    if row is None:
        return Applied(None, False)
    target = _target(row)
    if not same_number(target.to, receipt.to):
        return Applied(target, False, mismatch=True)
    changed = conn.execute(
        f"UPDATE attempts SET receipt = ?, receipt_at = ?, receipt_error = ? "  # noqa: S608
        f"WHERE rowid = ? AND {RANK_SQL} < ?",
        (receipt.state, receipt.at or now, receipt.error, row[0], RANK[receipt.state]),
    ).rowcount
    return Applied(target, changed > 0)


def _overdue(
    conn: sqlite3.Connection, sent_after: float, sent_before: float, limit: int
) -> list[ReceiptTarget]:
    rows = conn.execute(
        _TARGET + "WHERE " + _AWAITING + "AND a.at > ? AND a.at < ? ORDER BY a.at LIMIT ?",
        (sent_after, sent_before, limit),
    ).fetchall()
    conn.executemany(
        "UPDATE attempts SET receipt = ? WHERE rowid = ?", [(UNKNOWN, row[0]) for row in rows]
    )
    return [_target(row) for row in rows]


def _claim(
    conn: sqlite3.Connection, message_id: str, provider: str, provider_id: str, now: float
) -> Message | None:
    row = conn.execute(
        "SELECT body FROM messages WHERE id = ? AND status = 'sent' AND failover_at IS NULL "
        "AND body IS NOT NULL AND expires_at > ? AND EXISTS (SELECT 1 FROM attempts "
        "WHERE message_id = ? AND provider = ? AND provider_id = ? AND receipt = 'undelivered')",
        (message_id, now, message_id, provider, provider_id),
    ).fetchone()
    if row is None:
        return None
    conn.execute("UPDATE messages SET failover_at = ? WHERE id = ?", (now, message_id))
    return message_from_json(row[0])


class SqliteReceipts(SqliteEngine):
    """The receipts part of :class:`~otp_service.store.sqlite.SqliteStore`."""

    async def apply_receipt(self, receipt: Receipt, now: float) -> Applied:
        return await self._do(lambda conn: _apply(conn, receipt, now))

    async def receipt_target(self, provider: str, provider_id: str) -> ReceiptTarget | None:
        row = await self._do(lambda conn: _find(conn, provider, provider_id))
        return None if row is None else _target(row)

    async def awaiting_receipts(
        self, provider: str, after: float, before: float, limit: int
    ) -> list[ReceiptTarget]:
        rows = await self._do(
            lambda conn: conn.execute(
                _TARGET + "WHERE " + _AWAITING + "AND a.provider = ? AND a.at > ? AND a.at < ? "
                "ORDER BY a.at LIMIT ?",
                (provider, after, before, limit),
            ).fetchall()
        )
        return [_target(row) for row in rows]

    async def overdue_receipts(
        self, sent_after: float, sent_before: float, limit: int
    ) -> list[ReceiptTarget]:
        return await self._do(lambda conn: _overdue(conn, sent_after, sent_before, limit))

    async def claim_failover(
        self, message_id: str, provider: str, provider_id: str, now: float
    ) -> Message | None:
        return await self._do(
            lambda conn: _claim(conn, message_id, provider, provider_id, now), durable=True
        )

    async def erase_kept_bodies(self, now: float) -> None:
        await self._do(
            lambda conn: conn.execute(
                "UPDATE messages SET body = NULL WHERE body IS NOT NULL "
                "AND status IN ('sent', 'captured', 'failed') AND expires_at <= ?",
                (now,),
            )
        )
