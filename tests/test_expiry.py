"""Expiry (:mod:`otp_service.delivery.expiry`): the worker's upkeep expires what nobody can
deliver in time any more, through the store's ``expire_due``; the outbox expires a message it
delivers whose deadline passes first. The ``last_error`` stored and the reason the ``expired``
log line gives are one text, on SQLite and PostgreSQL, whatever the message met before: its
last failure, or ``never attempted``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otp_service.config import DeliveryConfig
from otp_service.config.sms import SmsConfig
from otp_service.delivery.dispatcher import Dispatcher
from otp_service.delivery.outbox import Outbox
from otp_service.delivery.upkeep import Upkeep
from otp_service.logs import JsonFormatter
from otp_service.metrics import Metrics
from otp_service.providers.capture import CaptureProvider
from otp_service.store import (
    EXPIRED_PREFIX,
    NEVER_ATTEMPTED,
    Attempt,
    InboxQuery,
    MemoryInbox,
    OutboxStore,
    SqliteStore,
)
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
    [line] = expired_lines(caplog)
    assert (line["id"], line["last_error"]) == (message.id, reason)
    assert status.last_error == EXPIRED_PREFIX + line["last_error"]


def expired_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    logged = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    return [each for each in logged if each["event"] == "expired"]


class ExpiredHeard(logging.Handler):
    """Sets ``event`` when an ``expired`` line is logged (in the test's event loop)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "expired":
            self.event.set()


@pytest.mark.slow  # two seconds of a provider's turn waited out
async def test_a_claimed_message_expiring_before_its_attempt_names_its_last_failure(
    new_store: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A retry the worker claims, then holds waiting for its provider's turn (provider_rate)
    past its deadline, expires in the outbox without an attempt of this process: its stored
    last_error and the logged reason are the failure it met before, not a count of attempts."""
    message = make_message()
    now = time.time()
    seeding = new_store()
    await seeding.open()
    try:
        await seeding.accept(
            message, expires_at=now + 1.5, lease_until=0, idempotency_key=None, dedupe_key=None
        )
        await retried(seeding, message.id, now - 2)  # due now: the next attempt at now
    finally:
        await seeding.close()
    inbox = MemoryInbox()
    dispatcher = Dispatcher(CaptureProvider(inbox), {}, SmsConfig(), {"capture": 0.5})
    await dispatcher.pacers["capture"].wait()  # the provider's turn is taken for 2 s
    outbox = Outbox(new_store(), dispatcher, DeliveryConfig(poll_seconds=0.05))
    caplog.set_level(logging.WARNING, "otp_service.outbox")
    heard = ExpiredHeard()
    logging.getLogger("otp_service.outbox").addHandler(heard)
    await outbox.start()
    try:
        await asyncio.wait_for(heard.event.wait(), 30)
        status = await outbox.store.status(message.id)
    finally:
        logging.getLogger("otp_service.outbox").removeHandler(heard)
        await outbox.stop(0)
        await inbox.close()
    [line] = expired_lines(caplog)
    assert "age_s" in line  # the outbox's line: it held the message, the worker did not expire it
    assert (line["id"], line["attempts"], line["last_error"]) == (
        message.id,
        1,
        "connection refused",
    )
    assert status is not None and status.status == "expired"
    assert status.last_error == EXPIRED_PREFIX + "connection refused"
    assert await inbox.list(InboxQuery(), 10) == []  # never delivered
