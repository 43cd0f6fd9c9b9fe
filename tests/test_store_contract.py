"""The Store protocol, held to one contract on every backend: SQLite and PostgreSQL.

Each test runs once per backend (``store`` is parametrised); a gap between the two shows as a
test that passes on one and fails on the other. The PostgreSQL store works in a fresh schema
per test on the real server (``OTP_TEST_DATABASE_URL``), dropped afterwards.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from otp_service.store import Attempt, SqliteStore, Store
from otp_service.store.postgres import PostgresStore

from .support.store import accept, make_message

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schema: tuple[str, str]
) -> AsyncIterator[Store]:
    """An opened store of each backend."""
    if request.param == "sqlite":
        opened: Any = SqliteStore(tmp_path / "outbox.sqlite3")
    else:
        url, schema = pg_schema
        opened = PostgresStore(url, schema=schema, pool_size=4)
    await opened.open()
    yield opened
    await opened.close()


async def test_store_accepted_message_has_a_queued_status(store: Store) -> None:
    """An accepted message is stored, leased to the caller and reported as queued."""
    message = make_message()
    answer = await accept(store, message)
    assert (answer.id, answer.created, answer.status) == (message.id, True, "queued")
    status = await store.status(message.id)
    assert status is not None
    assert (status.channel, status.to, status.type, status.status) == (
        "email",
        message.to,
        "SignIn",
        "queued",
    )
    assert status.attempts == ()
    assert await store.status("no-such-id") is None


async def test_store_same_idempotency_key_returns_first_message(store: Store) -> None:
    """A second accept with the same idempotency key stores nothing and names the first."""
    first, second = make_message(), make_message()
    await accept(store, first, key="email:k1")
    answer = await accept(store, second, key="email:k1")
    assert (answer.id, answer.created) == (first.id, False)
    assert await store.status(second.id) is None
    found = await store.existing("email:k1", None, time.time())
    assert found is not None and found.id == first.id


async def test_store_same_dedupe_key_returns_first_while_unexpired(store: Store) -> None:
    """The same dedupe key is the same message while the first lives, a new one after."""
    now = time.time()
    first = make_message(at=now - 100)
    await accept(store, first, ttl=50, dedupe="d1")  # expired 50 s ago
    second = make_message(at=now)
    assert (await accept(store, second, dedupe="d1")).created  # the first one expired
    third = make_message(at=now + 1)
    answer = await accept(store, third, dedupe="d1")
    assert (answer.id, answer.created) == (second.id, False)
    assert await store.existing(None, "nothing-like-it", now) is None


async def test_store_leased_message_is_claimed_only_after_its_lease(store: Store) -> None:
    """claim_due leaves a leased message alone and takes it once the lease has run out."""
    message = make_message()
    now = message.created_at.timestamp()
    await accept(store, message, lease=30)
    assert await store.claim_due(now + 1, now + 60, 10) == []
    [due] = await store.claim_due(now + 31, now + 90, 10)
    assert due.message == message  # the whole message comes back, code included
    assert due.attempts == 0
    assert await store.claim_due(now + 32, now + 90, 10) == []  # leased again, by the claim


async def test_store_renewed_lease_is_not_claimed(store: Store) -> None:
    """A renewed lease keeps a message from being claimed past its first lease."""
    message = make_message()
    now = message.created_at.timestamp()
    await accept(store, message, lease=30)
    await store.renew([message.id], now + 300)
    assert await store.claim_due(now + 31, now + 90, 10) == []


async def test_store_claim_expires_messages_past_their_lifetime(store: Store) -> None:
    """A queued message past its expiry is marked expired, never handed out."""
    message = make_message()
    now = message.created_at.timestamp()
    await accept(store, message, ttl=10, lease=5)
    assert await store.claim_due(now + 11, now + 60, 10) == []
    status = await store.status(message.id)
    assert status is not None and status.status == "expired" and status.finished_at is not None


async def test_store_finish_records_attempts_in_order(store: Store) -> None:
    """Failed attempts and the final one show in the status, in order, with the outcome."""
    message = make_message(channel="sms", to="+8613800138000")
    now = message.created_at.timestamp()
    await accept(store, message)
    await store.record_attempt(message.id, Attempt(now + 1, "aliyun", "transient", "throttled"))
    await store.finish(message.id, "sent", "vonage", None, Attempt(now + 2, "vonage", "sent"))
    status = await store.status(message.id)
    assert status is not None
    assert (status.status, status.provider, status.last_error) == ("sent", "vonage", None)
    assert [(a.provider, a.outcome, a.error) for a in status.attempts] == [
        ("aliyun", "transient", "throttled"), ("vonage", "sent", None)]  # fmt: skip
    assert await store.claim_due(now + 1000, now + 1100, 10) == []  # finished: never again


async def test_store_retry_later_hands_the_message_out_when_due(store: Store) -> None:
    """retry_later frees the lease; the message is claimed once its next attempt is due."""
    message = make_message()
    now = message.created_at.timestamp()
    await accept(store, message, lease=60)
    await store.retry_later(message.id, now + 20, "connection refused")
    assert await store.claim_due(now + 10, now + 70, 10) == []
    [due] = await store.claim_due(now + 21, now + 80, 10)
    assert due.message.id == message.id
    status = await store.status(message.id)
    assert status is not None and status.last_error == "connection refused"


async def test_store_claim_takes_at_most_the_limit(store: Store) -> None:
    """claim_due hands out no more messages than asked, the rest on the next call."""
    now = time.time()
    for _ in range(5):
        await accept(store, make_message(at=now), lease=0)
    first = await store.claim_due(now + 1, now + 60, 3)
    second = await store.claim_due(now + 1, now + 60, 3)
    assert len(first) == 3 and len(second) == 2
    assert not {d.message.id for d in first} & {d.message.id for d in second}


async def test_store_hit_refuses_past_the_limit_with_retry_after(store: Store) -> None:
    """``limit`` events pass at once, the next is refused with a wait within the window."""
    now = time.time()
    for _ in range(3):
        assert await store.hit("to:email:ana@example.com", 3, 60, now) is None
    retry_after = await store.hit("to:email:ana@example.com", 3, 60, now)
    assert retry_after is not None and 0 < retry_after <= 60
    assert await store.hit("to:email:bob@example.com", 3, 60, now) is None  # per key
    assert await store.hit("to:email:ana@example.com", 3, 60, now + 61) is None  # refilled


async def test_store_purge_forgets_finished_messages_and_keeps_queued(store: Store) -> None:
    """purge deletes what finished before the cut-off, with its attempts; queued stays."""
    done, queued = make_message(), make_message()
    await accept(store, done, key="email:done")
    await accept(store, queued)
    await store.finish(done.id, "sent", "smtp", None, Attempt(time.time(), "smtp", "sent"))
    assert await store.purge(time.time() + 1) == 1
    assert await store.status(done.id) is None
    assert await store.existing("email:done", None, time.time()) is None
    assert await store.status(queued.id) is not None


async def test_store_concurrent_accepts_each_get_their_own_answer(store: Store) -> None:
    """A burst accepted together (one batch, one commit) answers each message for itself; a
    repeat of a message in the same burst, by key or by content, names the first."""
    import asyncio

    fresh = [make_message(to=f"u{i}@example.com") for i in range(40)]
    by_key, by_content = make_message(), make_message()
    answers = await asyncio.gather(
        *(accept(store, m) for m in fresh[:20]),
        accept(store, fresh[20], key="email:burst"),
        accept(store, fresh[21], dedupe="burst-content"),
        *(accept(store, m) for m in fresh[22:30]),
        accept(store, by_key, key="email:burst"),
        accept(store, by_content, dedupe="burst-content"),
        *(accept(store, m) for m in fresh[30:]),
    )
    new = [a for a in answers if a.created]
    assert sorted(a.id for a in new) == sorted(m.id for m in fresh)
    repeats = [a for a in answers if not a.created]
    assert sorted(a.id for a in repeats) == sorted([fresh[20].id, fresh[21].id])
    assert await store.status(by_key.id) is None and await store.status(by_content.id) is None
    for message in fresh:
        status = await store.status(message.id)
        assert status is not None and status.to == message.to


async def test_store_one_unstorable_message_fails_alone_in_a_burst(store: Store) -> None:
    """A message the database cannot hold (a NUL character, which PostgreSQL text refuses)
    fails alone; the others accepted with it in the same batch are stored."""
    import asyncio

    good = [make_message(to=f"g{i}@example.com") for i in range(10)]
    bad = make_message(to="nul\x00@example.com")
    results = await asyncio.gather(
        *(accept(store, m) for m in good[:5]), accept(store, bad),
        *(accept(store, m) for m in good[5:]), return_exceptions=True,
    )  # fmt: skip
    for message, result in zip([*good[:5], bad, *good[5:]], results, strict=True):
        if message is bad:  # SQLite stores it; PostgreSQL refuses it: either way, alone
            assert isinstance(result, Exception) == isinstance(store, PostgresStore)
            continue
        assert not isinstance(result, BaseException), result
        assert result.created and await store.status(message.id) is not None
