"""The provider's own message id of each attempt (Vonage message-id, Aliyun BizId, the SMTP
server's queue id): kept by the store per attempt and shown by ``GET /v1/messages/{id}``."""

from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from unittest.mock import patch

import asyncpg
import pytest

from otp_service.http.app import SERVICES
from otp_service.http.openapi_schemas import SCHEMAS
from otp_service.message.compose import Message
from otp_service.store import Attempt, OutboxStore, SqliteStore, migrations
from otp_service.store.postgres import PostgresStore

from .support.service import ClientFactory


async def test_message_status_shows_each_attempts_provider_id(service: ClientFactory) -> None:
    """A message whose failed attempt had no provider id and whose successful one had one:
    the status answer lists both attempts with their ``provider_id`` (null, then the id)."""
    client = await service()
    store = client.app[SERVICES].store
    now = time.time()
    message = Message(id=uuid.uuid4().hex, channel="sms", to="+8613800138000", type="SignIn",
                      locale="en", text="Your code is 604217", code="604217",
                      created_at=datetime.fromtimestamp(now, UTC))  # fmt: skip
    await store.accept(message, expires_at=now + 600, lease_until=now + 60,
                       idempotency_key=None, dedupe_key=None)  # fmt: skip
    await store.record_attempt(message.id, Attempt(now + 1, "aliyun", "transient", "throttled"))
    await store.finish(
        message.id, "sent", "vonage", None,
        Attempt(now + 2, "vonage", "sent", provider_id="0A0000000123ABCD1"),
    )  # fmt: skip
    response = await client.get(f"/v1/messages/{message.id}")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "sent"
    assert [(a["provider"], a["outcome"], a["provider_id"]) for a in body["attempts"]] == [
        ("aliyun", "transient", None), ("vonage", "sent", "0A0000000123ABCD1")]  # fmt: skip
    documented = SCHEMAS["Attempt"]["properties"]
    assert all(set(attempt) <= set(documented) for attempt in body["attempts"])


# The attempts table and the outbox as the previous release created them in SQLite.
PREVIOUS_SQLITE = """
CREATE TABLE messages (id TEXT PRIMARY KEY, channel TEXT NOT NULL, recipient TEXT NOT NULL,
  type TEXT NOT NULL, status TEXT NOT NULL, provider TEXT, body TEXT, dedupe_key TEXT,
  created_at REAL NOT NULL, expires_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
  lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, finished_at REAL,
  attempt_started_at REAL, attempt_provider TEXT);
CREATE TABLE attempts (message_id TEXT NOT NULL, at REAL NOT NULL, provider TEXT NOT NULL,
  outcome TEXT NOT NULL, error TEXT);
CREATE TABLE idempotency (key TEXT PRIMARY KEY, message_id TEXT NOT NULL,
  created_at REAL NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
INSERT INTO messages (id, channel, recipient, type, status, provider, created_at, expires_at,
  next_attempt_at, attempts, finished_at)
  VALUES ('old', 'email', 'ana@example.com', 'SignIn', 'sent', 'smtp', 1, 2, 1, 1, 2);
INSERT INTO attempts VALUES ('old', 1.5, 'smtp', 'sent', NULL);
"""


async def test_sqlite_file_of_the_previous_release_gains_provider_ids(tmp_path: Path) -> None:
    """A store file written before provider ids (and stored counters) opens: its history
    reads back with no provider id, and new attempts keep theirs."""
    path = tmp_path / "outbox.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(PREVIOUS_SQLITE)
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        old = await store.status("old")
        assert old is not None and old.attempts == (Attempt(1.5, "smtp", "sent"),)
        await check_new_attempts_keep_their_ids(store)
        assert await store.hit("to:email:ana@example.com", 1, 60, time.time()) is None
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_schema_of_the_previous_release_migrates_to_provider_ids(
    pg_schema: tuple[str, str],
) -> None:
    """A schema at migration 2 with history migrates to the latest: old attempts read back
    with no provider id, new ones keep theirs."""
    url, schema = pg_schema
    conn = await asyncpg.connect(url)
    try:
        with patch.object(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2]):
            assert await migrations.migrate(conn, schema) == [1, 2]
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(
            "INSERT INTO messages (id, channel, recipient, type, status, provider, created_at, "
            "expires_at, next_attempt_at, attempts, finished_at) VALUES ('old', 'email', "
            "'ana@example.com', 'SignIn', 'sent', 'smtp', 1, 2, 1, 1, 2)"
        )
        await conn.execute(
            "INSERT INTO attempts (message_id, at, provider, outcome) VALUES "
            "('old', 1.5, 'smtp', 'sent')"
        )
    finally:
        await conn.close()
    store = PostgresStore(url, schema=schema, pool_size=2)
    await store.open()
    try:
        async with store.connection() as check:
            assert await migrations.schema_version(check, schema) == migrations.LATEST
        old = await store.status("old")
        assert old is not None and old.attempts == (Attempt(1.5, "smtp", "sent"),)
        await check_new_attempts_keep_their_ids(store)
    finally:
        await store.close()


async def check_new_attempts_keep_their_ids(store: OutboxStore) -> None:
    now = time.time()
    message = Message(id=uuid.uuid4().hex, channel="email", to="bob@example.com",
                      type="SignIn", locale="en", text="Your code is 604217", code="604217",
                      created_at=datetime.fromtimestamp(now, UTC))  # fmt: skip
    await store.accept(message, expires_at=now + 600, lease_until=now + 60,
                       idempotency_key=None, dedupe_key=None)  # fmt: skip
    await store.finish(message.id, "sent", "smtp", None,
                       Attempt(now, "smtp", "sent", provider_id="4Xyz1 queued"))  # fmt: skip
    status = await store.status(message.id)
    assert status is not None
    assert [a.provider_id for a in status.attempts] == ["4Xyz1 queued"]
