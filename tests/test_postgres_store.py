"""What only a shared store must do: two replicas (two PostgresStore on one schema) never
claim the same message, race on an idempotency key to one message, share limit counters, and a
live replica takes over what a dead one leased, finishing a half-sent SMS instead of resending."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from otp_service.store import Attempt
from otp_service.store.postgres import PostgresStore

from .support.store import accept, make_message

pytestmark = pytest.mark.postgres


@pytest.fixture
async def replicas(pg_schema: tuple[str, str]) -> AsyncIterator[list[PostgresStore]]:
    """Two opened stores on one schema: two replicas of the service."""
    url, schema = pg_schema
    stores = [PostgresStore(url, schema=schema, pool_size=4) for _ in range(2)]
    for store in stores:
        await store.open()
    yield stores
    for store in stores:
        await store.close()


async def test_postgres_replicas_never_claim_the_same_message(
    replicas: list[PostgresStore],
) -> None:
    """Both replicas claiming at once split the due messages between them: each once."""
    a, b = replicas
    now = time.time()
    for _ in range(40):
        await accept(a, make_message(at=now), lease=0)
    claims = await asyncio.gather(*(s.claim_due(now + 1, now + 60, 15) for s in (a, b, a, b)))
    ids = [d.message.id for claim in claims for d in claim]
    assert len(ids) == 40 and len(set(ids)) == 40


async def test_postgres_idempotency_race_across_replicas_stores_one_message(
    replicas: list[PostgresStore],
) -> None:
    """The same Idempotency-Key arriving at two replicas at once is one message; both answers
    name it."""
    a, b = replicas
    answers = await asyncio.gather(
        *(accept(store, make_message(), key="email:race") for store in (a, b, a, b))
    )
    assert len({answer.id for answer in answers}) == 1
    assert sum(answer.created for answer in answers) == 1


async def test_postgres_limit_counters_are_shared(replicas: list[PostgresStore]) -> None:
    """Hits on either replica count against one limit."""
    a, b = replicas
    now = time.time()
    results = [await (a, b)[n % 2].hit("to:email:ana@example.com", 4, 60, now) for n in range(5)]
    assert results[:4] == [None] * 4 and results[4] is not None


async def test_postgres_live_replica_takes_over_a_dead_ones_lease(
    replicas: list[PostgresStore],
) -> None:
    """A message leased by a replica that stopped renewing is claimed by the other once the
    lease runs out, while both keep running (no restart needed)."""
    a, b = replicas
    message = make_message()
    now = message.created_at.timestamp()
    await accept(a, message, lease=5)  # replica a accepted it, then died
    assert await b.claim_due(now + 1, now + 60, 10) == []
    [due] = await b.claim_due(now + 6, now + 60, 10)
    assert due.message.id == message.id


async def test_postgres_half_sent_sms_of_a_dead_replica_is_not_resent(
    replicas: list[PostgresStore],
) -> None:
    """An SMS whose attempt started on a replica that died is never handed out for a second
    text; the live replica's recovery finishes it as an unknown outcome once the lease ran out."""
    a, b = replicas
    message = make_message(channel="sms", to="+8613800138000")
    now = message.created_at.timestamp()
    await accept(a, message, lease=5)
    await a.start_attempt(message.id, "aliyun", now + 1)
    assert await b.claim_due(now + 6, now + 60, 10) == []
    assert [r.id for r in await b.recover(now + 6)] == [message.id]
    status = await b.status(message.id)
    assert status is not None and status.status == "failed"
    assert "provider_outcome_unknown" in (status.last_error or "")
    assert [(x.provider, x.outcome) for x in status.attempts] == [("aliyun", "unknown")]


async def test_postgres_failed_attempt_clears_the_started_mark(
    replicas: list[PostgresStore],
) -> None:
    """After a recorded failure (nothing went out) the message is handed out again, not
    written off as unknown."""
    a, b = replicas
    message = make_message(channel="sms", to="+8613800138000")
    now = message.created_at.timestamp()
    await accept(a, message, lease=5)
    await a.start_attempt(message.id, "aliyun", now + 1)
    await a.record_attempt(message.id, Attempt(now + 2, "aliyun", "transient", "throttled"))
    await a.retry_later(message.id, now + 3, "throttled")
    [due] = await b.claim_due(now + 6, now + 60, 10)
    assert due.message.id == message.id and due.attempts == 1


async def test_postgres_reset_counters_and_forget_duplicates(
    replicas: list[PostgresStore],
) -> None:
    """Resetting a key's counter frees it on every replica; forgetting a recipient's
    duplicates lets the same content through again, for that recipient only."""
    a, b = replicas
    now = time.time()
    for _ in range(2):
        await a.hit("to:email:ana@example.com", 2, 60, now)
    assert await b.hit("to:email:ana@example.com", 2, 60, now) is not None
    await b.reset_counters(["to:email:ana@example.com"])
    assert await a.hit("to:email:ana@example.com", 2, 60, now) is None
    ana, bob = make_message(to="Ana@example.com"), make_message(to="bob@example.com")
    await accept(a, ana, dedupe="d-ana")
    await accept(a, bob, dedupe="d-bob")
    await b.forget_duplicates("ana@example.com")
    assert (await accept(a, make_message(to="ana@example.com"), dedupe="d-ana")).created
    assert not (await accept(a, make_message(to="bob@example.com"), dedupe="d-bob")).created


def test_batched_writes_group_per_statement_and_never_cross_a_lease_renewal() -> None:
    """Bookkeeping writes of one batch go as one pipelined executemany per statement, in the
    order each statement first appears; a renewal (many messages at once) keeps its place."""
    from otp_service.store.pg_connection import _grouped

    batch: list[tuple[str, tuple[Any, ...]]] = [
        ("add", (1,)), ("finish", (2,)), ("add", (3,)), ("renew", (4,)),
        ("finish", (5,)), ("add", (6,)), ("finish", (7,)),
    ]  # fmt: skip
    assert _grouped(batch, frozenset({"renew"})) == [
        ("add", [(1,), (3,)]), ("finish", [(2,)]), ("renew", [(4,)]),
        ("finish", [(5,), (7,)]), ("add", [(6,)]),
    ]  # fmt: skip
    assert _grouped(batch) == [
        ("add", [(1,), (3,), (6,)]), ("finish", [(2,), (5,), (7,)]), ("renew", [(4,)])
    ]  # fmt: skip


async def test_postgres_finishes_and_captures_written_together_in_one_batch(
    replicas: list[PostgresStore],
) -> None:
    """Thirty messages finished at once (some with an attempt, some without) and captured at
    once are written in one batch (the finishes pipelined, the captured messages one statement
    over arrays): each message gets its own status, attempts and captured row, as when written
    one by one."""
    from otp_service.store.pg_inbox import PgInbox

    store = replicas[0]
    inbox = PgInbox(store, max_messages=1000)
    messages = [make_message(to=f"user{n}@example.com") for n in range(30)]
    for message in messages:
        await accept(store, message)
    now = time.time()
    await asyncio.gather(
        *(store.finish(m.id, "captured", "capture", None,
                       Attempt(now, "capture", "captured", None, f"p{n}") if n % 2 else None)
          for n, m in enumerate(messages)),
        *(inbox.add(m) for m in messages),
    )  # fmt: skip
    for n, message in enumerate(messages):
        status = await store.status(message.id)
        assert status is not None and status.status == "captured"
        assert [a.provider_id for a in status.attempts] == ([f"p{n}"] if n % 2 else [])
        captured = await inbox.get(message.id)
        assert captured is not None and captured.to == message.to
    await inbox.close()


async def _table_counts(url: str, schema: str, updates: int) -> tuple[int, int]:
    """(sequential scans, updates) of ``schema``'s messages table once PostgreSQL's statistics
    count ``updates`` updates (a backend reports them within a second or so of going idle)."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            row = await conn.fetchrow(
                "SELECT seq_scan, n_tup_upd FROM pg_stat_user_tables "
                "WHERE schemaname = $1 AND relname = 'messages'",
                schema,
            )
            assert row is not None
            if row["n_tup_upd"] >= updates or time.monotonic() > deadline:
                return row["seq_scan"], row["n_tup_upd"]
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def test_postgres_finish_batches_read_messages_by_key_after_the_table_grew(
    pg_schema: tuple[str, str],
) -> None:
    """Batches of finishes first run while the outbox is small (the server may then keep one
    plan for the statement) still find each message by its key once the table holds 20,000
    rows: no batch scans the whole table. (A batch written as one statement joining its arrays
    to messages was planned as a hash join over a scan of every row, and kept that plan.)"""
    url, schema = pg_schema
    store = PostgresStore(url, schema=schema, pool_size=1)  # one connection: one plan cache
    await store.open()

    async def finish_batch(batch: int) -> list[Any]:
        messages = [make_message(to=f"user{batch}-{n}@example.com") for n in range(10)]
        for message in messages:
            await accept(store, message)
        now = time.time()
        await asyncio.gather(*(
            store.finish(m.id, "captured", "capture", None,
                         Attempt(now, "capture", "captured", None, m.id))
            for m in messages
        ))  # fmt: skip
        return messages

    try:
        for batch in range(8):  # past the 5 runs after which PostgreSQL may keep a generic plan
            await finish_batch(batch)
        await store.query(
            "execute",
            "INSERT INTO messages (id, channel, recipient, type, status, created_at, expires_at, "
            "next_attempt_at, finished_at) SELECT 'old' || n, 'email', 'old@example.com', "
            "'SignIn', 'captured', 0, 0, 0, 0 FROM generate_series(1, 20000) n",
        )
        scans, updates = await _table_counts(url, schema, 80)
        assert updates == 80
        last = [await finish_batch(batch) for batch in range(8, 11)][-1]
        assert await _table_counts(url, schema, 110) == (scans, 110)
        for message in last:
            status = await store.status(message.id)
            assert status is not None and status.status == "captured"
            assert [a.provider_id for a in status.attempts] == [message.id]
    finally:
        await store.close()
