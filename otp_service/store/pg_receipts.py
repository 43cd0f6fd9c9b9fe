"""The PostgreSQL store's delivery receipts (the rule is :mod:`.receipts`'; the columns come
with migration 4): the same statements as SQLite's, each one round trip, the state moved up in
one conditional ``UPDATE`` so replicas taking receipts of one message at once agree."""

from __future__ import annotations

from typing import Any

from ..message.compose import Message
from .codec import message_from_json
from .pg_connection import PgConnection
from .receipts import RANK, RANK_SQL, UNKNOWN, Applied, Receipt, ReceiptTarget, same_number

_COLUMNS = (
    "a.seq, a.message_id, a.provider, a.provider_id, m.recipient, a.at, a.receipt, m.status, "
    "m.expires_at"
)
_FIND = (
    f"SELECT {_COLUMNS} FROM attempts a JOIN messages m ON m.id = a.message_id "  # noqa: S608
    "WHERE a.provider_id = $1 AND a.provider = $2 AND a.outcome IN ('sent', 'captured') "
    "ORDER BY a.at DESC LIMIT 1"
)
_AWAITING = (
    "a.provider_id IS NOT NULL AND a.outcome IN ('sent', 'captured') "
    "AND (a.receipt IS NULL OR a.receipt = 'pending') AND m.channel = 'sms' "
)
_SET = (
    "UPDATE attempts SET receipt = $2, receipt_at = $3, receipt_error = $4 "  # noqa: S608
    f"WHERE seq = $1 AND {RANK_SQL} < $5"
)
_OVERDUE = f"""
WITH due AS (
  SELECT a.seq FROM attempts a JOIN messages m ON m.id = a.message_id
  WHERE {_AWAITING} AND a.at > $3 AND a.at < $1 ORDER BY a.at LIMIT $2
  FOR UPDATE OF a SKIP LOCKED
), old AS (
  SELECT {_COLUMNS} FROM attempts a JOIN messages m ON m.id = a.message_id
  WHERE a.seq IN (SELECT seq FROM due)
), marked AS (
  UPDATE attempts SET receipt = '{UNKNOWN}' WHERE seq IN (SELECT seq FROM due)
)
SELECT * FROM old
"""  # noqa: S608
_CLAIM = """
UPDATE messages SET failover_at = $4
WHERE id = $1 AND status = 'sent' AND failover_at IS NULL AND body IS NOT NULL
  AND expires_at > $4 AND EXISTS (SELECT 1 FROM attempts WHERE message_id = $1
  AND provider = $2 AND provider_id = $3 AND receipt = 'undelivered')
RETURNING body
"""


def _target(row: Any) -> ReceiptTarget:
    return ReceiptTarget(*tuple(row)[1:])


class PgReceipts(PgConnection):
    """The receipts part of :class:`~otp_service.store.postgres.PostgresStore`."""

    async def apply_receipt(self, receipt: Receipt, now: float) -> Applied:
        row = await self.query("fetchrow", _FIND, receipt.provider_id, receipt.provider)
        if row is None:
            return Applied(None, False)
        target = _target(row)
        if not same_number(target.to, receipt.to):
            return Applied(target, False, mismatch=True)
        done = await self.query(
            "execute", _SET, row[0], receipt.state, receipt.at or now, receipt.error,
            RANK[receipt.state],
        )  # fmt: skip
        return Applied(target, done.split()[-1] != "0")

    async def receipt_target(self, provider: str, provider_id: str) -> ReceiptTarget | None:
        row = await self.query("fetchrow", _FIND, provider_id, provider)
        return None if row is None else _target(row)

    async def awaiting_receipts(
        self, provider: str, after: float, before: float, limit: int
    ) -> list[ReceiptTarget]:
        rows = await self.query(
            "fetch",
            f"SELECT {_COLUMNS} FROM attempts a JOIN messages m ON m.id = a.message_id "  # noqa: S608
            f"WHERE {_AWAITING} AND a.provider = $1 AND a.at > $2 AND a.at < $3 "
            "ORDER BY a.at LIMIT $4",
            provider, after, before, limit,
        )  # fmt: skip
        return [_target(row) for row in rows]

    async def overdue_receipts(
        self, sent_after: float, sent_before: float, limit: int
    ) -> list[ReceiptTarget]:
        rows = await self.query("fetch", _OVERDUE, sent_before, limit, sent_after)
        return [_target(row) for row in rows]

    async def claim_failover(
        self, message_id: str, provider: str, provider_id: str, now: float
    ) -> Message | None:
        body = await self.query("fetchval", _CLAIM, message_id, provider, provider_id, now)
        return None if body is None else message_from_json(body)

    async def erase_kept_bodies(self, now: float) -> None:
        await self.query(
            "execute",
            "UPDATE messages SET body = NULL WHERE body IS NOT NULL "
            "AND status IN ('sent', 'captured', 'failed') AND expires_at <= $1",
            now,
        )
