"""The outbox port (:mod:`otp_service.store.outbox`), held to one contract on every backend
that implements it: SQLite and PostgreSQL.

Each test runs once per backend (``store`` is parametrised); a gap between the two shows as a
test that passes on one and fails on the other. The PostgreSQL store works in a fresh schema
per test on the real server (``OTP_TEST_DATABASE_URL``), dropped afterwards; only those runs
are marked ``postgres``, so the quick run keeps the SQLite ones.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from otp_service.errors import WriteRefused
from otp_service.store import Accepted, Attempt, KeyHold, OutboxStore, SqliteStore
from otp_service.store.outbox import EXPIRED_PREFIX, NEVER_ATTEMPTED, UNKNOWN_OUTCOME
from otp_service.store.postgres import PostgresStore

from .support.markers import POSTGRES
from .support.store import accept, make_message


@pytest.fixture(params=["sqlite", POSTGRES])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    """Each backend's maker of unopened stores, on the same file or schema each time (a
    fresh PostgreSQL schema taken for the marked PostgreSQL runs only)."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "outbox.sqlite3")
    url, schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(url, schema=schema, pool_size=4)


@pytest.fixture
async def store(new_store: Callable[[], Any]) -> AsyncIterator[OutboxStore]:
    """An opened store of each backend."""
    opened = new_store()
    await opened.open()
    yield opened
    await opened.close()


async def test_store_accepted_message_has_a_queued_status(store: OutboxStore) -> None:
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


async def test_store_same_idempotency_key_returns_first_message(store: OutboxStore) -> None:
    """A second accept with the same idempotency key stores nothing and names the first."""
    first, second = make_message(), make_message()
    await accept(store, first, key="email:k1")
    answer = await accept(store, second, key="email:k1")
    assert (answer.id, answer.created) == (first.id, False)
    assert await store.status(second.id) is None
    found = await store.existing("email:k1", None, time.time())
    assert found is not None and found.id == first.id


async def test_store_held_key_answers_others_with_its_holder_until_released(
    store: OutboxStore,
) -> None:
    """A held Idempotency-Key names its holder to every other request, with the stored message
    once accepted; a released one goes to the next request; accept keeps the holder's key."""
    first, second, third = make_message(), make_message(), make_message()
    now = time.time()
    assert await store.hold_key("k1", first.id, now, now - 60) == KeyHold(first.id)
    assert await store.hold_key("k1", second.id, now, now - 60) == KeyHold(first.id)
    await store.release_key("k1", first.id)
    assert await store.hold_key("k1", second.id, now, now - 60) == KeyHold(second.id)
    assert (await accept(store, second, key="k1")).created
    await store.release_key("k1", second.id)  # stored: a no-op
    held = await store.hold_key("k1", third.id, now, now - 60)
    assert held == KeyHold(second.id, Accepted(second.id, False, "queued", None))
    repeat = await accept(store, third, key="k1")
    assert (repeat.id, repeat.created) == (second.id, False)


async def test_store_key_held_by_a_dead_request_is_taken_over_once_stale(
    store: OutboxStore,
) -> None:
    """A hold whose message was never stored is taken over once older than stale_before."""
    dead, alive = make_message(), make_message()
    now = time.time()
    assert await store.hold_key("k2", dead.id, now - 300, now - 360) == KeyHold(dead.id)
    assert await store.hold_key("k2", alive.id, now, now - 400) == KeyHold(dead.id)
    assert await store.hold_key("k2", alive.id, now, now - 60) == KeyHold(alive.id)
    assert (await accept(store, alive, key="k2")).created


async def test_store_same_dedupe_key_returns_first_while_unexpired(store: OutboxStore) -> None:
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


async def test_store_leased_message_is_claimed_only_after_its_lease(store: OutboxStore) -> None:
    """claim_due leaves a leased message alone and takes it once the lease has run out."""
    message = make_message()
    now = message.created_at.timestamp()
    await accept(store, message, lease=30)
    assert await store.claim_due(now + 1, now + 60, 10) == []
    [due] = await store.claim_due(now + 31, now + 90, 10)
    assert due.message == message  # the whole message comes back, code included
    assert due.attempts == 0
    assert await store.claim_due(now + 32, now + 90, 10) == []  # leased again, by the claim


async def test_store_renewed_lease_is_not_claimed(store: OutboxStore) -> None:
    """A renewed lease keeps a message from being claimed past its first lease."""
    message = make_message()
    now = message.created_at.timestamp()
    await accept(store, message, lease=30)
    await store.renew([message.id], now + 300)
    assert await store.claim_due(now + 31, now + 90, 10) == []


async def test_store_expires_messages_past_their_lifetime_and_never_hands_them_out(
    store: OutboxStore,
) -> None:
    """A queued message past its expiry is never handed out; expire_due (the one place a store
    expires) marks it expired once, with the one expiry text."""
    message = make_message()
    now = message.created_at.timestamp()
    await accept(store, message, ttl=10, lease=5)
    assert await store.claim_due(now + 11, now + 60, 10) == []
    [gone] = await store.expire_due(now + 11)
    assert (gone.id, gone.last_error) == (message.id, None)
    assert await store.expire_due(now + 12) == []
    status = await store.status(message.id)
    assert status is not None and status.status == "expired" and status.finished_at is not None
    assert status.last_error == EXPIRED_PREFIX + NEVER_ATTEMPTED
    assert await store.claim_due(now + 13, now + 60, 10) == []


async def test_store_finish_records_attempts_in_order(store: OutboxStore) -> None:
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


async def test_store_retry_later_hands_the_message_out_when_due(store: OutboxStore) -> None:
    """retry_later frees the lease; the message is claimed once its next attempt is due, with
    its attempts and last failure (what its expiry names if no attempt starts in time)."""
    message = make_message()
    now = message.created_at.timestamp()
    await accept(store, message, lease=60)
    await store.record_attempt(message.id, Attempt(now + 1, "smtp", "transient", "timed out"))
    await store.retry_later(message.id, now + 20, "connection refused")
    assert await store.claim_due(now + 10, now + 70, 10) == []
    [due] = await store.claim_due(now + 21, now + 80, 10)
    assert (due.message.id, due.attempts, due.last_error) == (message.id, 1, "connection refused")
    status = await store.status(message.id)
    assert status is not None and status.last_error == "connection refused"


async def test_store_a_failed_attempt_is_the_last_error_until_the_next(store: OutboxStore) -> None:
    """record_attempt keeps a failed attempt's error as the message's last_error (a process
    that dies before retry_later leaves it named); an attempt without one leaves it as it was."""
    message = make_message()
    now = message.created_at.timestamp()
    await accept(store, message, lease=5)
    await store.record_attempt(message.id, Attempt(now + 1, "smtp", "transient", "timed out"))
    await store.record_attempt(message.id, Attempt(now + 2, "smtp", "transient"))
    status = await store.status(message.id)
    assert status is not None and status.last_error == "timed out"
    [due] = await store.claim_due(now + 6, now + 60, 10)
    assert (due.attempts, due.last_error) == (2, "timed out")


async def test_store_claim_takes_at_most_the_limit(store: OutboxStore) -> None:
    """claim_due hands out no more messages than asked, the rest on the next call."""
    now = time.time()
    for _ in range(5):
        await accept(store, make_message(at=now), lease=0)
    first = await store.claim_due(now + 1, now + 60, 3)
    second = await store.claim_due(now + 1, now + 60, 3)
    assert len(first) == 3 and len(second) == 2
    assert not {d.message.id for d in first} & {d.message.id for d in second}


async def test_store_purge_forgets_finished_messages_and_keeps_queued(store: OutboxStore) -> None:
    """purge deletes what finished before the cut-off, with its attempts; queued stays."""
    done, queued = make_message(), make_message()
    await accept(store, done, key="email:done")
    await accept(store, queued)
    await store.finish(done.id, "sent", "smtp", None, Attempt(time.time(), "smtp", "sent"))
    assert await store.purge(time.time() + 1) == 1
    assert await store.status(done.id) is None
    assert await store.existing("email:done", None, time.time()) is None
    assert await store.status(queued.id) is not None


async def test_store_concurrent_accepts_each_get_their_own_answer(store: OutboxStore) -> None:
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


async def test_store_one_unstorable_message_fails_alone_in_a_burst(store: OutboxStore) -> None:
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
        if message is bad:  # SQLite stores it; PostgreSQL refuses it for good: either way, alone
            assert isinstance(result, WriteRefused) == isinstance(store, PostgresStore), result
            continue
        assert not isinstance(result, BaseException), result
        assert result.created and await store.status(message.id) is not None


async def test_store_refused_write_fails_its_caller_alone_as_write_refused(
    store: OutboxStore,
) -> None:
    """A bookkeeping write the database refuses for good (text it cannot hold) reaches its
    caller as WriteRefused; the writes batched with it are kept."""
    import asyncio

    bad, good = make_message(), make_message()
    await accept(store, bad)
    await accept(store, good)
    # A NUL character: PostgreSQL text refuses it; SQLite refuses a value it cannot bind.
    unstorable: Any = "nul\x00" if isinstance(store, PostgresStore) else object()
    results = await asyncio.gather(
        store.retry_later(bad.id, time.time() + 5, unstorable),
        store.retry_later(good.id, time.time() + 5, "connection refused"),
        return_exceptions=True,
    )
    assert isinstance(results[0], WriteRefused) and results[1] is None, results
    status = await store.status(good.id)
    assert status is not None and status.last_error == "connection refused"


async def test_store_attempts_keep_the_providers_message_id(store: OutboxStore) -> None:
    """Each attempt keeps the provider's own id of the message (when it gave one); status
    returns it, for the failed attempts and the final one."""
    message = make_message(channel="sms", to="+8613800138000")
    now = message.created_at.timestamp()
    await accept(store, message)
    await store.record_attempt(message.id, Attempt(now + 1, "aliyun", "transient", "throttled"))
    await store.record_attempt(
        message.id, Attempt(now + 2, "aliyun", "transient", "busy", provider_id="biz-1")
    )
    await store.finish(
        message.id, "sent", "vonage", None, Attempt(now + 3, "vonage", "sent", provider_id="v-42")
    )
    status = await store.status(message.id)
    assert status is not None
    assert [(a.provider, a.provider_id) for a in status.attempts] == [
        ("aliyun", None), ("aliyun", "biz-1"), ("vonage", "v-42")]  # fmt: skip


async def test_store_recovers_a_cut_off_sms_once_its_lease_runs_out_never_claiming_it(
    store: OutboxStore,
) -> None:
    """The documented point: an SMS whose attempt started without an outcome is never handed
    out by claim_due; recover finishes it (failed, unknown attempt) once its lease has run out,
    and returns it to be counted; an email, or an SMS with a recorded outcome, is left alone."""
    sms, email = make_message(channel="sms", to="+8613800138000"), make_message()
    retried = make_message(channel="sms", to="+8613800138001")
    now = sms.created_at.timestamp()
    for message in (sms, email, retried):
        await accept(store, message, lease=30)
    await store.start_attempt(sms.id, "aliyun", now + 1)
    await store.start_attempt(retried.id, "vonage", now + 1)
    await store.record_attempt(retried.id, Attempt(now + 2, "vonage", "transient", "busy"))
    await store.retry_later(retried.id, now + 3, "busy")
    assert await store.recover(now + 10) == []  # its lease still runs: its run may be alive
    [recovered] = await store.recover(now + 31)
    assert (recovered.id, recovered.to, recovered.provider) == (sms.id, sms.to, "aliyun")
    assert recovered.attempts == 1
    assert await store.recover(now + 32) == []  # once
    status = await store.status(sms.id)
    assert status is not None and status.status == "failed"
    assert (status.last_error, status.provider) == (UNKNOWN_OUTCOME, "aliyun")
    assert [(a.provider, a.outcome, a.at) for a in status.attempts] == [
        ("aliyun", "unknown", now + 1)
    ]
    claimed = {due.message.id for due in await store.claim_due(now + 33, now + 90, 10)}
    assert claimed == {email.id, retried.id}


async def test_store_never_claims_a_started_sms_before_recovery(store: OutboxStore) -> None:
    """claim_due leaves an SMS whose attempt started alone even after its lease ran out:
    only recover decides its fate (no second text between the two)."""
    sms = make_message(channel="sms", to="+8613800138000")
    now = sms.created_at.timestamp()
    await accept(store, sms, lease=5)
    await store.start_attempt(sms.id, "vonage", now + 1)
    assert await store.claim_due(now + 6, now + 60, 10) == []
    status = await store.status(sms.id)
    assert status is not None and status.status == "queued"


async def test_store_recovery_after_a_restart_happens_at_the_first_recover(
    new_store: Callable[[], Any],
) -> None:
    """A run dies mid-attempt: after the next open (SQLite ends the dead run's leases; on
    PostgreSQL the lease runs out) the cut-off SMS is recovered by recover, on both backends."""
    first = new_store()
    await first.open()
    sms = make_message(channel="sms", to="+8613800138000")
    now = sms.created_at.timestamp()
    await accept(first, sms, lease=20)
    await first.start_attempt(sms.id, "vonage", now + 1)
    await first.close()  # the run dies here, the attempt unanswered
    second = new_store()
    await second.open()
    try:
        status = await second.status(sms.id)
        assert status is not None and status.status == "queued"  # not at open: at recover
        sqlite = isinstance(second, SqliteStore)
        lease_over = now + 1 if sqlite else now + 21  # SQLite: the file is ours
        assert [r.id for r in await second.recover(lease_over)] == [sms.id]
        status = await second.status(sms.id)
        assert status is not None and status.status == "failed"
    finally:
        await second.close()


@pytest.mark.postgres
async def test_store_purge_leaves_the_other_ports_data_alone(
    tmp_path: Path, pg_schema: tuple[str, str]
) -> None:
    """Purging finished messages touches neither captured messages (the inbox trims itself)
    nor live limit counters: on PostgreSQL, which holds all three, and on SQLite."""
    from otp_service.store.inbox import InboxQuery
    from otp_service.store.pg_inbox import PgInbox

    url, schema = pg_schema
    store = PostgresStore(url, schema=schema, pool_size=3)
    inbox = PgInbox(store, 100)
    await store.open()
    try:
        old = make_message(at=time.time() - 3600)
        await inbox.add(old)
        now = time.time()
        for _ in range(2):
            assert await store.hit("to:email:ana@example.com", 2, 60, now) is None
        await accept(store, make_message())
        await store.purge(time.time() + 10)
        assert [m.id for m in await inbox.list(InboxQuery(), 10)] == [old.id]
        assert await store.hit("to:email:ana@example.com", 2, 60, now) is not None
    finally:
        await inbox.close()
        await store.close()
    sqlite = SqliteStore(tmp_path / "outbox.sqlite3")
    await sqlite.open()
    for _ in range(2):
        assert await sqlite.hit("to:email:ana@example.com", 2, 60, now) is None
    await accept(sqlite, make_message())
    await sqlite.purge(time.time() + 10)
    await sqlite.close()
    sqlite = SqliteStore(tmp_path / "outbox.sqlite3")  # what it kept, read back
    await sqlite.open()
    assert await sqlite.hit("to:email:ana@example.com", 2, 60, now) is not None
    await sqlite.close()


async def test_sqlite_store_drops_the_previous_runs_key_holds_on_open(tmp_path: Path) -> None:
    """SQLite is one process's: a key held by a request of a run that died, its message never
    stored, is free at the next start (PostgreSQL keeps holds: other replicas live)."""
    store = SqliteStore(tmp_path / "outbox.sqlite3")
    await store.open()
    dead, stored, fresh = make_message(), make_message(), make_message()
    now = time.time()
    await store.hold_key("held", dead.id, now, now - 60)
    await store.hold_key("kept", stored.id, now, now - 60)
    await accept(store, stored, key="kept")
    await store.close()
    store = SqliteStore(tmp_path / "outbox.sqlite3")
    await store.open()
    try:
        assert await store.hold_key("held", fresh.id, now, now - 60) == KeyHold(fresh.id)
        kept = await store.hold_key("kept", fresh.id, now, now - 60)
        assert kept is not None and kept.message_id == stored.id and kept.stored is not None
    finally:
        await store.close()
