"""The PostgreSQL schema, as numbered migrations applied under an advisory lock.

Every replica runs :func:`migrate` when it starts (``otp-service migrate`` runs it alone, for
operators who migrate before a rolling deploy). A session-level advisory lock serialises
replicas that start together; each migration commits in its own transaction together with its
row in ``schema_migrations``. A database already migrated past what this code knows is refused:
an older replica must not write into tables whose meaning has changed under it.

Migrations are append-only: never edit one that has shipped, add the next number.
"""

from __future__ import annotations

from typing import Any

from ..errors import SchemaTooNewError

# pg_advisory_lock(classid, objid): the first half says "otp-service migrations"; the second is
# the schema's hash, so two services in two schemas of one database do not wait for each other.
LOCK_CLASS = 0x07_0F_05_E1

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "outbox, attempts, idempotency, limit counters, captured messages",
        """
CREATE TABLE messages (
  id text PRIMARY KEY,
  channel text NOT NULL,
  recipient text NOT NULL,
  type text NOT NULL,
  status text NOT NULL,
  provider text,
  body text,
  dedupe_key text,
  created_at double precision NOT NULL,
  expires_at double precision NOT NULL,
  next_attempt_at double precision NOT NULL,
  lease_until double precision,
  lease_owner text,
  attempt_started_at double precision,  -- an SMS attempt under way: never resent after a crash
  attempt_provider text,
  attempts integer NOT NULL DEFAULT 0,
  last_error text,
  finished_at double precision
);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_dedupe ON messages (dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE attempts (
  seq bigserial PRIMARY KEY,
  message_id text NOT NULL,
  at double precision NOT NULL,
  provider text NOT NULL,
  outcome text NOT NULL,
  error text
);
CREATE INDEX attempts_message ON attempts (message_id);

CREATE TABLE idempotency (
  key text PRIMARY KEY,
  message_id text NOT NULL,
  created_at double precision NOT NULL
);
CREATE INDEX idempotency_message ON idempotency (message_id);

-- GCRA: one theoretical arrival time per key (a keyed hash, never an address in the clear).
CREATE TABLE limit_counters (
  key text PRIMARY KEY,
  tat double precision NOT NULL
);

CREATE TABLE settings (
  name text PRIMARY KEY,
  value bytea NOT NULL
);

CREATE TABLE captured (
  seq bigserial PRIMARY KEY,
  id text NOT NULL UNIQUE,
  channel text NOT NULL,
  recipient text NOT NULL,
  type text NOT NULL,
  body text NOT NULL,
  created_at double precision NOT NULL
);
CREATE INDEX captured_recipient ON captured (lower(recipient), seq);

-- accept: one round trip, one transaction. A repeat (the same idempotency key, or without one
-- an unexpired message with the same dedupe key) answers with the message that holds it.
CREATE FUNCTION accept_message(
  p_id text, p_channel text, p_to text, p_type text, p_body text, p_dedupe text,
  p_now double precision, p_expires double precision, p_lease double precision,
  p_owner text, p_key text
) RETURNS TABLE (r_id text, r_created boolean, r_status text, r_provider text)
LANGUAGE plpgsql AS $$
BEGIN
  IF p_key IS NOT NULL THEN
    -- Waits for a concurrent insert of the same key (another replica) to commit or roll back.
    INSERT INTO idempotency (key, message_id, created_at) VALUES (p_key, p_id, p_now)
      ON CONFLICT (key) DO NOTHING;
    IF NOT FOUND THEN
      RETURN QUERY SELECT m.id, false, m.status, m.provider
        FROM idempotency i JOIN messages m ON m.id = i.message_id WHERE i.key = p_key;
      RETURN;
    END IF;
  ELSIF p_dedupe IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(hashtext(p_dedupe));
    RETURN QUERY SELECT m.id, false, m.status, m.provider FROM messages m
      WHERE m.dedupe_key = p_dedupe AND m.expires_at > p_now ORDER BY m.created_at LIMIT 1;
    IF FOUND THEN
      RETURN;
    END IF;
  END IF;
  INSERT INTO messages (id, channel, recipient, type, status, body, dedupe_key, created_at,
                        expires_at, next_attempt_at, lease_until, lease_owner)
    VALUES (p_id, p_channel, p_to, p_type, 'queued', p_body, p_dedupe, p_now, p_expires, p_now,
            p_lease, p_owner);
  RETURN QUERY SELECT p_id, true, 'queued'::text, NULL::text;
END
$$;
""",
    ),
    (
        2,
        "accept a batch of messages in one round trip; bodies compressed with lz4",
        """
-- A message body (about 4 KB of JSON for an HTML email) is compressed when stored; lz4 costs a
-- fraction of the CPU of the default pglz. A server built without lz4 keeps pglz.
DO $$
BEGIN
  ALTER TABLE messages ALTER COLUMN body SET COMPRESSION lz4;
  ALTER TABLE captured ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
  NULL;
END
$$;

-- accept_message for each element of the arrays, in order, in the caller's one transaction (a
-- repeat of a message earlier in the same batch is seen as one). r_ord: the element's index.
CREATE FUNCTION accept_messages(
  p_id text[], p_channel text[], p_to text[], p_type text[], p_body text[], p_dedupe text[],
  p_now double precision[], p_expires double precision[], p_lease double precision[],
  p_owner text, p_key text[]
) RETURNS TABLE (r_ord integer, r_id text, r_created boolean, r_status text, r_provider text)
LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. coalesce(array_length(p_id, 1), 0) LOOP
    RETURN QUERY SELECT i, a.r_id, a.r_created, a.r_status, a.r_provider
      FROM accept_message(p_id[i], p_channel[i], p_to[i], p_type[i], p_body[i], p_dedupe[i],
                          p_now[i], p_expires[i], p_lease[i], p_owner, p_key[i]) a;
  END LOOP;
END
$$;
""",
    ),
    (
        3,
        "the provider's message id of each attempt; limit counters found by time",
        """
ALTER TABLE attempts ADD COLUMN provider_id text;
-- Counters whose time has passed are deleted by the counting replica, found by this index.
CREATE INDEX limit_counters_tat ON limit_counters (tat);
""",
    ),
    (
        4,
        "delivery receipts per attempt, found by the provider's message id; one resend",
        """
ALTER TABLE attempts ADD COLUMN receipt text;
ALTER TABLE attempts ADD COLUMN receipt_at double precision;
ALTER TABLE attempts ADD COLUMN receipt_error text;
ALTER TABLE messages ADD COLUMN failover_at double precision;
CREATE INDEX attempts_provider_id ON attempts (provider_id, provider)
  WHERE provider_id IS NOT NULL;
CREATE INDEX attempts_awaiting ON attempts (at)
  WHERE provider_id IS NOT NULL AND outcome IN ('sent', 'captured')
  AND (receipt IS NULL OR receipt = 'pending');
""",
    ),
    (
        5,
        "an Idempotency-Key is held before limits are counted: accept keeps the holder's key",
        """
-- A request holds its Idempotency-Key (a row in idempotency, committed at once) before its
-- abuse limits are counted; accept then stores the holder's message under it. A key held by
-- another message answers with that message (stored or about to be): never a second message.
CREATE OR REPLACE FUNCTION accept_message(
  p_id text, p_channel text, p_to text, p_type text, p_body text, p_dedupe text,
  p_now double precision, p_expires double precision, p_lease double precision,
  p_owner text, p_key text
) RETURNS TABLE (r_id text, r_created boolean, r_status text, r_provider text)
LANGUAGE plpgsql AS $$
DECLARE
  v_holder text;
  v_status text;
  v_provider text;
BEGIN
  IF p_key IS NOT NULL THEN
    LOOP
      -- Waits for a concurrent insert of the same key (another replica) to commit or roll back.
      INSERT INTO idempotency (key, message_id, created_at) VALUES (p_key, p_id, p_now)
        ON CONFLICT (key) DO NOTHING;
      EXIT WHEN FOUND;
      SELECT i.message_id, m.status, m.provider INTO v_holder, v_status, v_provider
        FROM idempotency i LEFT JOIN messages m ON m.id = i.message_id WHERE i.key = p_key;
      IF FOUND THEN
        EXIT WHEN v_holder = p_id;  -- held by this message: store it
        RETURN QUERY SELECT v_holder, false, coalesce(v_status, 'queued'), v_provider;
        RETURN;
      END IF;  -- released in between: try again
    END LOOP;
  ELSIF p_dedupe IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(hashtext(p_dedupe));
    RETURN QUERY SELECT m.id, false, m.status, m.provider FROM messages m
      WHERE m.dedupe_key = p_dedupe AND m.expires_at > p_now ORDER BY m.created_at LIMIT 1;
    IF FOUND THEN
      RETURN;
    END IF;
  END IF;
  INSERT INTO messages (id, channel, recipient, type, status, body, dedupe_key, created_at,
                        expires_at, next_attempt_at, lease_until, lease_owner)
    VALUES (p_id, p_channel, p_to, p_type, 'queued', p_body, p_dedupe, p_now, p_expires, p_now,
            p_lease, p_owner);
  RETURN QUERY SELECT p_id, true, 'queued'::text, NULL::text;
END
$$;
""",
    ),
    (
        6,
        "captured messages unlogged; a batch of accepts without keys inserted in one statement",
        """
-- The capture inbox holds what tests and laptops read back, never what must be delivered:
-- losing it in a PostgreSQL crash (an unlogged table is emptied then) is harmless, and its
-- bodies no longer go through the WAL. The outbox (messages, attempts, idempotency) and the
-- limit counters stay logged.
ALTER TABLE captured SET UNLOGGED;

-- accept_messages, unchanged in meaning: a batch in which no message has an idempotency key
-- or a dedupe key (nothing to look up) is one INSERT of every row instead of one function
-- call per message; any other batch goes message by message as before.
CREATE OR REPLACE FUNCTION accept_messages(
  p_id text[], p_channel text[], p_to text[], p_type text[], p_body text[], p_dedupe text[],
  p_now double precision[], p_expires double precision[], p_lease double precision[],
  p_owner text, p_key text[]
) RETURNS TABLE (r_ord integer, r_id text, r_created boolean, r_status text, r_provider text)
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(p_key, p_dedupe) AS k(key, dedupe)
             WHERE k.key IS NOT NULL OR k.dedupe IS NOT NULL) THEN
    FOR i IN 1 .. coalesce(array_length(p_id, 1), 0) LOOP
      RETURN QUERY SELECT i, a.r_id, a.r_created, a.r_status, a.r_provider
        FROM accept_message(p_id[i], p_channel[i], p_to[i], p_type[i], p_body[i], p_dedupe[i],
                            p_now[i], p_expires[i], p_lease[i], p_owner, p_key[i]) a;
    END LOOP;
    RETURN;
  END IF;
  INSERT INTO messages (id, channel, recipient, type, status, body, created_at, expires_at,
                        next_attempt_at, lease_until, lease_owner)
    SELECT m.id, m.channel, m.recipient, m.type, 'queued', m.body, m.now, m.expires, m.now,
           m.lease, p_owner
    FROM unnest(p_id, p_channel, p_to, p_type, p_body, p_now, p_expires, p_lease)
      AS m(id, channel, recipient, type, body, now, expires, lease);
  RETURN QUERY SELECT m.ord::integer, m.id, true, 'queued'::text, NULL::text
    FROM unnest(p_id) WITH ORDINALITY AS m(id, ord);
END
$$;
""",
    ),
    (
        7,
        "a batch of finishes in one call, each message found by its key",
        """
-- The finishes of a bookkeeping batch in one call, one element of the arrays a message, with
-- the same effect as finishing each alone: its attempt (when tried is not null) noted, its
-- row updated. Each message is updated by its key (an index look-up whatever the table's
-- size): a single UPDATE joining the arrays to messages was planned as a hash join over a scan
-- of the whole table while the table was small, and a prepared statement kept that plan.
CREATE FUNCTION finish_messages(
  p_id text[], p_status text[], p_provider text[], p_error text[],
  p_finished double precision[], p_at double precision[], p_tried text[], p_outcome text[],
  p_failure text[], p_provider_id text[], p_keep boolean[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO attempts (message_id, at, provider, outcome, error, provider_id)
    SELECT f.id, f.at, f.tried, f.outcome, f.failure, f.provider_id
    FROM unnest(p_id, p_at, p_tried, p_outcome, p_failure, p_provider_id)
      AS f(id, at, tried, outcome, failure, provider_id)
    WHERE f.tried IS NOT NULL;
  FOR i IN 1 .. coalesce(array_length(p_id, 1), 0) LOOP
    UPDATE messages SET status = p_status[i], provider = p_provider[i], last_error = p_error[i],
           body = CASE WHEN p_keep[i] THEN body END, lease_until = NULL, lease_owner = NULL,
           finished_at = p_finished[i], attempt_started_at = NULL, attempt_provider = NULL,
           attempts = attempts + CASE WHEN p_tried[i] IS NULL THEN 0 ELSE 1 END
    WHERE id = p_id[i];
  END LOOP;
END
$$;
""",
    ),
]

LATEST = MIGRATIONS[-1][0]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def schema_version(conn: Any, schema: str) -> int:
    """The highest migration applied in ``schema`` (0 for none)."""
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.schema_migrations"
    )
    if not exists:
        return 0
    version: int | None = await conn.fetchval(
        f"SELECT max(version) FROM {quote_ident(schema)}.schema_migrations"  # noqa: S608
    )
    return version or 0


async def migrate(conn: Any, schema: str) -> list[int]:
    """Bring ``schema`` up to :data:`LATEST` on the asyncpg connection ``conn``; returns the
    versions applied. Raises :class:`SchemaTooNewError` for a schema ahead of this code."""
    q = quote_ident(schema)
    await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", LOCK_CLASS, schema)
    try:
        current = await schema_version(conn, schema)
        if current > LATEST:
            raise SchemaTooNewError(
                f"the database schema {schema!r} is at version {current}, newer than this "
                f"otp-service knows ({LATEST}); run the newer release, or restore a backup"
            )
        applied: list[int] = []
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            async with conn.transaction():
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
                await conn.execute(f"SET LOCAL search_path TO {q}")
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                    "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
                    version,
                    description,
                )
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS, schema)
