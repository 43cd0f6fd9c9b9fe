"""Expiry (:mod:`otp_service.delivery.expiry`): the worker's upkeep expires what nobody can
deliver in time any more, through the store's ``expire_due``. The ``last_error`` the store
writes and the reason the ``expired`` log line gives are one text, on SQLite and PostgreSQL,
whatever the message met before: its last failure, or ``never attempted``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otp_service.delivery.upkeep import Upkeep
from otp_service.logs import JsonFormatter
from otp_service.metrics import Metrics
from otp_service.store import EXPIRED_PREFIX, NEVER_ATTEMPTED, Attempt, OutboxStore, SqliteStore
from otp_service.store.postgres import PostgresStore

from .support.markers import POSTGRES
from .support.store import accept, make_message


@pytest.fixture(params=["sqlite", POSTGRES])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """Each backend's maker of an unopened store (PostgreSQL's runs alone take a schema)."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "outbox.sqlite3")
    url, schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(url, schema=schema, pool_size=3)


async def never_attempted(store: OutboxStore, id: str, now: float) -> None:
    """Accepted, then nothing: the process died before its first attempt."""


async def retried(store: OutboxStore, id: str, now: float) -> None:
    """An attempt failed and the next one was scheduled (the outbox's retry_later)."""
    await store.record_attempt(id, Attempt(now + 1, "smtp", "transient", "connection refused"))
    await store.retry_later(id, now + 2, "connection refused")


async def cut_off_after_an_attempt(store: OutboxStore, id: str, now: float) -> None:
    """An attempt failed and was recorded, then the process died before scheduling the next."""
    await store.record_attempt(id, Attempt(now + 1, "smtp", "transient", "connection reset"))


@pytest.mark.parametrize(
    ("history", "reason"),
    [
        (never_attempted, NEVER_ATTEMPTED),
        (retried, "connection refused"),
        (cut_off_after_an_attempt, "connection reset"),
    ],
)
async def test_expired_last_error_is_the_logged_reason(
    new_store: Callable[[], Any],
    caplog: pytest.LogCaptureFixture,
    history: Callable[[OutboxStore, str, float], Any],
    reason: str,
) -> None:
    """The worker expires a message past its life: the stored last_error is the expiry prefix
    and the same reason the ``expired`` line logs, its last failure or ``never attempted``."""
    store = new_store()
    await store.open()
    try:
        message = make_message()
        now = message.created_at.timestamp()
        await accept(store, message, ttl=10, lease=5)
        await history(store, message.id, now)
        caplog.set_level(logging.WARNING, "otp_service.outbox")
        await Upkeep(store, Metrics(), 30, 86400).expire(now + 11)
        status = await store.status(message.id)
    finally:
        await store.close()
    assert status is not None and status.status == "expired"
    logged = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    [line] = [each for each in logged if each["event"] == "expired"]
    assert (line["id"], line["last_error"]) == (message.id, reason)
    assert status.last_error == EXPIRED_PREFIX + line["last_error"]
