"""The shared store: PostgreSQL, for several replicas and ``serve --workers``; its outbox and
counters SQL (the schema is :mod:`.migrations`', the captured messages :mod:`.pg_inbox`').

Implements the outbox port (:mod:`.outbox`) and the counters port (:mod:`.counters`).

Every replica works on the same tables (in their own schema, ``otp_service`` by default):
accepting a message is one round trip to a server-side function that commits it with its
idempotency key; any replica claims due messages with ``FOR UPDATE SKIP LOCKED`` and leases
them under its own name; a replica renews the leases of what it is delivering, so a lease that
runs out belongs to a replica that died, and whichever replica polls next reclaims it. Limit
counters are rows updated in place. Bookkeeping after an attempt (outcomes, retries, leases)
is queued and written in batches, one transaction each.

The driver is asyncpg (measured against psycopg 3 on this workload: see docs/replicas.md). Any
connection failure surfaces as :class:`~otp_service.errors.StoreUnavailable`; the pool
opens new connections by itself once the server is back. The SMS at-most-once rule holds across
replicas: an SMS whose attempt started (durably noted before the provider is called) under a
lease that ran out is finished as ``provider_outcome_unknown`` by whichever replica's worker
runs :meth:`PostgresStore.recover` next. Limit counters whose time has passed are deleted by
the replica counting, now and then, in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from typing import Any

from ..message.compose import Message
from .batch import WriteBatch
from .codec import message_from_json, message_to_json, request_id_of
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
from .pg_receipts import PgReceipts

log = logging.getLogger("otp_service.store")
COUNTER_TRIM_SECONDS = 60.0  # how often a replica deletes the counters whose time has passed

_CLAIM = """
WITH erased AS (
  UPDATE messages SET dedupe_key = NULL
  WHERE id IN (SELECT id FROM messages WHERE dedupe_key IS NOT NULL AND expires_at <= $1
               AND status <> 'queued' LIMIT 500 FOR UPDATE SKIP LOCKED)
), due AS (
  SELECT id FROM messages WHERE status = 'queued' AND next_attempt_at <= $1 AND expires_at > $1
  AND (lease_until IS NULL OR lease_until < $1)
  AND NOT (channel = 'sms' AND attempt_started_at IS NOT NULL)
  ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED
)
UPDATE messages m SET lease_until = $2, lease_owner = $4 FROM due WHERE m.id = due.id
RETURNING m.id, m.body, m.expires_at, m.attempts, m.last_error
"""
# An SMS whose attempt started under a lease that ran out: finished as an unknown outcome.
_RECOVER = """
WITH lost AS (
  SELECT id, body, attempt_started_at, attempt_provider FROM messages
  WHERE status = 'queued' AND channel = 'sms' AND attempt_started_at IS NOT NULL
  AND (lease_until IS NULL OR lease_until < $1) FOR UPDATE SKIP LOCKED
), noted AS (
  INSERT INTO attempts (message_id, at, provider, outcome, error)
  SELECT id, attempt_started_at, attempt_provider, 'unknown', $2 FROM lost
)
UPDATE messages m SET status = 'failed', provider = lost.attempt_provider, last_error = $2,
       body = NULL, lease_until = NULL, lease_owner = NULL, finished_at = $1,
       attempts = m.attempts + 1, attempt_started_at = NULL, attempt_provider = NULL
FROM lost WHERE m.id = lost.id
RETURNING m.id, m.recipient, m.provider, m.attempts, lost.body
"""
_ATTEMPT = (
    "WITH a AS (INSERT INTO attempts (message_id, at, provider, outcome, error, provider_id) "
    "VALUES ($1, $2, $3, $4, $5, $6)) UPDATE messages SET attempts = attempts + 1, "
    "attempt_started_at = NULL, attempt_provider = NULL, last_error = COALESCE($5, last_error) "
    "WHERE id = $1"
)
_FINISH = """
WITH a AS (INSERT INTO attempts (message_id, at, provider, outcome, error, provider_id)
           SELECT $1, $6, $7, $8, $9, $10 WHERE $7::text IS NOT NULL)
UPDATE messages SET status = $2, provider = $3, last_error = $4,
       body = CASE WHEN $11::boolean THEN body END, lease_until = NULL,
       lease_owner = NULL, finished_at = $5, attempt_started_at = NULL, attempt_provider = NULL,
       attempts = attempts + CASE WHEN $7::text IS NULL THEN 0 ELSE 1 END
WHERE id = $1
"""
# _FINISH for many messages in one call (migration 7): each parameter an array, one element a
# message. Not one UPDATE joining the arrays to messages (as before): planned while the table
# was small, that join scanned the whole table, and the prepared statement kept the plan, so
# each batch read every message stored (pg_stat_statements: 0.11-0.16 ms of statement time per
# captured message at 20,000 rows, 0.03 by key; see
# test_postgres_finish_batches_read_messages_by_key_after_the_table_grew).
_FINISH_MANY = (
    "SELECT finish_messages($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], "
    "$6::float8[], $7::text[], $8::text[], $9::text[], $10::text[], $11::boolean[])"
)
_RETRY = (
    "UPDATE messages SET next_attempt_at = $2, last_error = $3, lease_until = NULL, "
    "lease_owner = NULL, attempt_started_at = NULL, attempt_provider = NULL "
    "WHERE id = $1 AND status = 'queued'"
)
# Touches many messages at once: a barrier in the write batches (see _grouped).
_RENEW = (
    "UPDATE messages SET lease_until = $1 WHERE id = ANY($2::text[]) "
    "AND lease_owner = $3 AND status = 'queued'"
)
_ACCEPT_MANY = (
    "SELECT * FROM accept_messages($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::text[], $7::float8[], $8::float8[], $9::float8[], $10, $11::text[])"
)
# id, channel, to, type, body, dedupe key, created, expires, lease until, idempotency key
_AcceptArgs = tuple[str, str, str, str, str, str | None, float, float, float, str | None]
# GCRA in one statement and one round trip (the rule of otp_service.store.counters.gcra):
# allowed when max(tat, now) + interval - now <= window; a refused event is not counted. The
# first column is the new TAT when allowed (else NULL), the second the TAT before (to compute
# when a refused event would be allowed).
_HIT = """
WITH before AS (SELECT tat FROM limit_counters WHERE key = $1), counted AS (
  INSERT INTO limit_counters AS c (key, tat) VALUES ($1, $2::float8 + $3::float8)
  ON CONFLICT (key) DO UPDATE SET tat = GREATEST(c.tat, $2) + $3
  WHERE GREATEST(c.tat, $2) + $3 - $2 <= $4::float8 + 1e-9
  RETURNING tat
)
SELECT (SELECT tat FROM counted), (SELECT tat FROM before)
"""
_TRIM_COUNTERS = "DELETE FROM limit_counters WHERE tat < $1"
# Idempotency-Keys held before their request counts its limits (see OutboxStore.hold_key).
_HOLD = (
    "INSERT INTO idempotency (key, message_id, created_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (key) DO NOTHING RETURNING message_id"
)
_HOLDER = (
    "SELECT i.message_id, i.created_at, m.id, m.status, m.provider FROM idempotency i "
    "LEFT JOIN messages m ON m.id = i.message_id WHERE i.key = $1"
)
_TAKE_OVER = (
    "UPDATE idempotency SET message_id = $2, created_at = $3 WHERE key = $1 AND message_id = $4 "
    "AND NOT EXISTS (SELECT 1 FROM messages WHERE id = $4) RETURNING key"
)
_RELEASE = (
    "DELETE FROM idempotency WHERE key = $1 AND message_id = $2 "
    "AND NOT EXISTS (SELECT 1 FROM messages WHERE id = $2)"
)


class PostgresStore(PgReceipts):
    """The :class:`~otp_service.store.outbox.OutboxStore` and the
    :class:`~otp_service.store.counters.CounterStore` on a PostgreSQL database shared by
    replicas."""

    BARRIERS = frozenset({_RENEW})

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._accepts: WriteBatch[_AcceptArgs] = WriteBatch(self._accept_batch)
        self.bulk[_FINISH] = _FINISH_MANY
        self._trimmed_at = 0.0
        self._trimming: asyncio.Task[None] | None = None

    def _counter_key(self, key: str) -> str:
        return hmac.new(self.dedupe_secret, key.encode(), hashlib.sha256).hexdigest()[:32]

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
        """Queued with the other accepts of the moment: one round trip and one commit for a
        burst (group commit, as the SQLite store does), each answered on its own."""
        row: _AcceptArgs = (
            message.id, message.channel, message.to, message.type, message_to_json(message),
            dedupe_key, message.created_at.timestamp(), expires_at, lease_until, idempotency_key,
        )  # fmt: skip
        accepted: Accepted = await self._accepts.put(row)
        return accepted

    async def _accept_batch(self, batch: list[_AcceptArgs]) -> list[Accepted]:
        columns = [list(column) for column in zip(*batch, strict=True)]
        found = await self.query("fetch", _ACCEPT_MANY, *columns[:9], self.owner, columns[9])
        answers: list[Accepted | None] = [None] * len(batch)
        for record in found:
            answers[record[0] - 1] = Accepted(*record[1:5])
        assert all(answers), "accept_messages answers every message"
        return [a for a in answers if a is not None]

    async def close(self) -> None:
        await self._accepts.drain()
        if self._trimming is not None:
            with contextlib.suppress(Exception):
                await self._trimming
        await super().close()

    async def existing(
        self, idempotency_key: str | None, dedupe_key: str | None, now: float
    ) -> Accepted | None:
        async with self.connection() as conn:
            row = None
            if idempotency_key is not None:
                row = await conn.fetchrow(
                    "SELECT m.id, m.status, m.provider FROM idempotency i "
                    "JOIN messages m ON m.id = i.message_id WHERE i.key = $1",
                    idempotency_key,
                )
            if row is None and dedupe_key is not None:
                row = await conn.fetchrow(
                    "SELECT id, status, provider FROM messages WHERE dedupe_key = $1 "
                    "AND expires_at > $2 ORDER BY created_at LIMIT 1",
                    dedupe_key,
                    now,
                )
        return None if row is None else Accepted(row[0], False, row[1], row[2])

    async def hold_key(
        self, key: str, message_id: str, now: float, stale_before: float
    ) -> KeyHold | None:
        """Each statement commits on its own: a hold is seen by every replica at once, and the
        look-up after a conflict sees the holder's committed row."""
        async with self.connection() as conn:
            if await conn.fetchval(_HOLD, key, message_id, now) is not None:
                return KeyHold(message_id)
            row = await conn.fetchrow(_HOLDER, key)
            if row is None:
                return None  # released since the insert: ask again
            holder, held_at, stored, status, provider = row
            if stored is not None:
                return KeyHold(holder, Accepted(holder, False, status, provider))
            if holder != message_id and held_at < stale_before:
                if await conn.fetchval(_TAKE_OVER, key, message_id, now, holder) is not None:
                    return KeyHold(message_id)
                return None
            return KeyHold(holder)

    async def release_key(self, key: str, message_id: str) -> None:
        await self.query("execute", _RELEASE, key, message_id)

    async def recover(self, now: float) -> list[Recovered]:
        rows = await self.query("fetch", _RECOVER, now, UNKNOWN_OUTCOME)
        return [
            Recovered(row["id"], row["recipient"], row["provider"], row["attempts"],
                      request_id_of(row["body"]))
            for row in rows
        ]  # fmt: skip

    async def claim_due(self, now: float, lease_until: float, limit: int) -> list[Due]:
        rows = await self.query("fetch", _CLAIM, now, lease_until, limit, self.owner)
        return [
            Due(message_from_json(row["body"]), row["expires_at"], row["attempts"],
                row["last_error"])
            for row in rows
        ]  # fmt: skip

    async def start_attempt(self, message_id: str, provider: str, at: float) -> None:
        """Note durably that an attempt starts (before an SMS provider is called)."""
        await self.write(
            "UPDATE messages SET attempt_started_at = $2, attempt_provider = $3 WHERE id = $1",
            message_id,
            at,
            provider,
        )

    async def renew(self, message_ids: list[str], lease_until: float) -> None:
        """Extend this replica's leases on messages it is still delivering."""
        if message_ids:
            await self.write(_RENEW, lease_until, message_ids, self.owner)

    async def expire_due(self, now: float) -> list[ExpiredMessage]:
        """Expire what no replica holds and no attempt can still deliver in time."""
        async with self.connection() as conn:
            rows = await conn.fetch(_EXPIRE, now, EXPIRED_PREFIX, NEVER_ATTEMPTED)
        return [
            ExpiredMessage(row["id"], row["channel"], row["recipient"], row["attempts"],
                           row["last_error"], request_id_of(row["body"]))
            for row in rows
        ]  # fmt: skip

    async def backlog(self) -> tuple[int, float | None]:
        async with self.connection() as conn:
            row = await conn.fetchrow(
                "SELECT count(*), min(created_at) FROM messages WHERE status = 'queued'"
            )
        assert row is not None
        return int(row[0]), row[1]

    async def record_attempt(self, message_id: str, attempt: Attempt) -> None:
        await self.write(
            _ATTEMPT, message_id, attempt.at, attempt.provider, attempt.outcome, attempt.error,
            attempt.provider_id,
        )  # fmt: skip

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
        await self.write(
            _FINISH, message_id, status, provider, error, time.time(),
            attempt.at if attempt else None, attempt.provider if attempt else None,
            attempt.outcome if attempt else None, attempt.error if attempt else None,
            attempt.provider_id if attempt else None, keep_body,
        )  # fmt: skip

    async def retry_later(self, message_id: str, next_attempt_at: float, error: str) -> None:
        await self.write(_RETRY, message_id, next_attempt_at, error)

    async def status(self, message_id: str) -> StoredStatus | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id, channel, recipient, type, status, provider, created_at, expires_at, "
                "finished_at, last_error FROM messages WHERE id = $1",
                message_id,
            )
            if row is None:
                return None
            attempts = await conn.fetch(
                "SELECT at, provider, outcome, error, provider_id, receipt, receipt_at, "
                "receipt_error FROM attempts WHERE message_id = $1 "
                "ORDER BY at, seq",
                message_id,
            )
        (id_, channel, to, usage, status, provider, created, expires, finished, error) = row
        return StoredStatus(
            id_, channel, to, usage, status, provider, created, expires, finished, error,
            attempts=tuple(Attempt(*a) for a in attempts),
        )  # fmt: skip

    # -- the counters port

    async def hit(self, key: str, limit: int, window: float, now: float) -> float | None:
        clock = time.time()  # not ``now``: a caller's own time must not expire others' counts
        if clock - self._trimmed_at > COUNTER_TRIM_SECONDS:
            self._trimmed_at = clock
            if self._trimming is None or self._trimming.done():
                self._trimming = asyncio.get_running_loop().create_task(self._trim_counters(clock))
        interval = window / limit
        stored = self._counter_key(key)
        counted, before = await self.query("fetchrow", _HIT, stored, now, interval, window)
        if counted is not None:
            return None
        return max(max(float(before or now), now) + interval - window - now, 0.0)

    async def reset_counters(self, keys: Sequence[str] | None) -> None:
        """Forget the counts of ``keys`` (of every key when None)."""
        async with self.connection() as conn:
            if keys is None:
                await conn.execute("DELETE FROM limit_counters")
            else:
                hashed = [self._counter_key(key) for key in keys]
                await conn.execute("DELETE FROM limit_counters WHERE key = ANY($1::text[])", hashed)

    async def _trim_counters(self, now: float) -> None:
        """Forget the counters whose time has passed (they hold nothing)."""
        try:
            await self.query("execute", _TRIM_COUNTERS, now)
        except Exception as exc:  # the next one will do; counting goes on meanwhile
            log.warning("store: could not delete expired limit counters: %s", exc)

    # -- the outbox port, continued

    async def forget_duplicates(self, recipient: str | None) -> None:
        """Stop answering new messages to ``recipient`` (to anyone when None) as duplicates of
        earlier ones by content; idempotency keys are kept."""
        async with self.connection() as conn:
            await conn.execute(
                "UPDATE messages SET dedupe_key = NULL WHERE dedupe_key IS NOT NULL "
                "AND ($1::text IS NULL OR lower(recipient) = lower($1::text))",
                recipient,
            )

    async def compact(self) -> None:
        """Nothing lingers here: PostgreSQL's autovacuum reclaims deleted rows."""

    async def purge(self, finished_before: float) -> int:
        async with self.connection() as conn, conn.transaction():
            ids = "SELECT id FROM messages WHERE finished_at < $1"
            await conn.execute(f"DELETE FROM attempts WHERE message_id IN ({ids})", finished_before)  # noqa: S608
            await conn.execute(
                f"DELETE FROM idempotency WHERE message_id IN ({ids})",  # noqa: S608
                finished_before,
            )
            # Holds whose request died before storing its message (taken over when asked).
            await conn.execute(
                "DELETE FROM idempotency i WHERE i.created_at < $1 "
                "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = i.message_id)",
                finished_before,
            )
            done = await conn.execute(
                "DELETE FROM messages WHERE finished_at < $1", finished_before
            )
        return int(done.split()[-1])


# Expire the queued messages past their life that no live replica holds; the body (the code)
# and the dedupe key go with it. Returns the old body and error for the log line.
_EXPIRE = """
WITH due AS (
  SELECT id, body, last_error FROM messages
  WHERE status = 'queued' AND expires_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
  FOR UPDATE SKIP LOCKED
)
UPDATE messages m SET status = 'expired', body = NULL, dedupe_key = NULL, finished_at = $1,
  lease_until = NULL,
  last_error = $2::text || COALESCE(due.last_error, $3::text)
FROM due WHERE m.id = due.id
RETURNING m.id, m.channel, m.recipient, m.attempts, due.last_error, due.body
"""
