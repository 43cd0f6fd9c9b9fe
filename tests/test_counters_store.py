"""The counters port (:mod:`otp_service.store.counters`), held to one contract on every backend
that implements it: memory, SQLite and PostgreSQL (a fresh schema of the test database).

Each test runs once per backend (``counters`` is parametrised). What only a stored backend
promises (counts survive a restart; SQLite's table stays bounded) runs on SQLite and PostgreSQL.
Only the PostgreSQL runs are marked ``postgres``, so the quick run keeps the others.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from otp_service.store import Counters, CounterStore, SqliteStore
from otp_service.store.postgres import PostgresStore

from .support.markers import POSTGRES

ANA, BOB = "to:email:ana@example.com", "to:email:bob@example.com"

NewBackend = Callable[..., Any]


def backend_maker(request: pytest.FixtureRequest, tmp_path: Path) -> NewBackend:
    """A maker of unopened backends of kind ``request.param``, on the same file or schema each
    time (a fresh PostgreSQL schema taken for the marked PostgreSQL runs only)."""
    if request.param == "memory":
        return lambda **options: Counters(**options)
    if request.param == "sqlite":
        return lambda **options: SqliteStore(tmp_path / "outbox.sqlite3", **options)
    url, schema = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(url, schema=schema, pool_size=3)


@pytest.fixture(params=["memory", "sqlite", POSTGRES])
def new_backend(request: pytest.FixtureRequest, tmp_path: Path) -> NewBackend:
    return backend_maker(request, tmp_path)


@pytest.fixture(params=["sqlite", POSTGRES])
def new_stored(request: pytest.FixtureRequest, tmp_path: Path) -> NewBackend:
    """Each stored backend's maker (what survives a restart)."""
    return backend_maker(request, tmp_path)


async def opened(backend: Any) -> Any:
    if not isinstance(backend, Counters):
        await backend.open()
    return backend


async def closed(backend: Any) -> None:
    if not isinstance(backend, Counters):
        await backend.close()


@pytest.fixture
async def counters(new_backend: NewBackend) -> AsyncIterator[CounterStore]:
    backend = await opened(new_backend())
    yield backend
    await closed(backend)


async def test_counters_refuse_past_the_limit_with_retry_after(counters: CounterStore) -> None:
    """``limit`` events pass at once, the next is refused with a wait within the window; keys
    count apart; the allowance refills."""
    now = time.time()
    for _ in range(3):
        assert await counters.hit(ANA, 3, 60, now) is None
    retry_after = await counters.hit(ANA, 3, 60, now)
    assert retry_after is not None and 0 < retry_after <= 60
    assert await counters.hit(BOB, 3, 60, now) is None  # per key
    assert await counters.hit(ANA, 3, 60, now + 61) is None  # refilled


async def test_counters_gcra_refills_gradually_and_refusals_do_not_count(
    counters: CounterStore,
) -> None:
    """GCRA: after a burst of ``limit``, one event per ``window / limit`` passes; refused
    events are not counted (waiting the retry-after always works)."""
    now = 1_000_000.0 + time.time()  # every backend applies the given time, not the clock
    assert [await counters.hit(ANA, 5, 100, now) for _ in range(5)] == [None] * 5
    refused = await counters.hit(ANA, 5, 100, now + 0.2)
    assert refused is not None and abs(refused - 19.8) < 1e-6
    for _ in range(3):  # refused again and again: no count, the wait does not grow
        assert await counters.hit(ANA, 5, 100, now + 0.2) == pytest.approx(refused)
    assert await counters.hit(ANA, 5, 100, now + 20) is None
    assert await counters.hit(ANA, 5, 100, now + 20) is not None


async def test_counters_reset_one_key_or_all(counters: CounterStore) -> None:
    """reset_counters forgets the named keys only; None forgets every key."""
    now = time.time()
    for key in (ANA, BOB):
        for _ in range(2):
            await counters.hit(key, 2, 60, now)
    await counters.reset_counters([ANA])
    assert await counters.hit(ANA, 2, 60, now) is None
    assert await counters.hit(BOB, 2, 60, now) is not None
    await counters.reset_counters(None)
    assert await counters.hit(BOB, 2, 60, now) is None


async def test_counters_survive_a_restart(new_stored: NewBackend) -> None:
    """A restart is no fresh quota: counts, and a reset, are read back by the next open."""
    now = time.time()
    first = await opened(new_stored())
    for _ in range(3):
        assert await first.hit(ANA, 3, 600, now) is None
    for _ in range(3):
        assert await first.hit(BOB, 3, 600, now) is None
    await first.reset_counters([BOB])
    await closed(first)
    second = await opened(new_stored())
    try:
        assert await second.hit(ANA, 3, 600, now + 1) is not None
        assert await second.hit(BOB, 3, 600, now + 1) is None
    finally:
        await closed(second)


async def test_sqlite_counters_stay_bounded_and_keep_no_address(tmp_path: Path) -> None:
    """SQLite's counter table holds about ``max_limit_keys`` rows under a flood of distinct
    keys, forgets expired ones, and stores keyed hashes, never the key itself."""
    store = await opened(SqliteStore(tmp_path / "outbox.sqlite3", max_limit_keys=100))
    now = time.time()
    for n in range(100):
        await store.hit(f"to:email:old{n}@example.com", 5, 1, now - 10)  # long expired
    for n in range(3000):  # thirty times the bound
        await store.hit(f"to:email:user{n}@example.com", 5, 600, now)
        if n % 50 == 0:
            await store.forget_duplicates(None)  # any write: the counters go with it
    await store.forget_duplicates(None)
    await store.close()
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    try:
        rows = db.execute("SELECT key, tat FROM limit_counters").fetchall()
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    # At most twice the live counters (100 per window length) plus the slack (100) and one
    # batch: the log is rewritten from the live counters as it grows.
    assert 0 < len(rows) <= 2 * (100 + 100) + 100 + 51
    assert all(tat > now - 1 for _, tat in rows)  # the expired ones are gone
    assert "example.com" not in dump


async def test_stored_counters_forget_keys_whose_time_has_passed(
    new_stored: NewBackend, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A counter whose time has passed holds nothing: the backend deletes its row by itself
    (SQLite as it opens and writes, PostgreSQL as it counts), live ones stay."""
    first = await opened(new_stored())
    assert await first.hit(ANA, 2, 60, time.time() - 1000) is None  # over long ago
    assert await first.hit(BOB, 2, 600, time.time()) is None
    await closed(first)
    second = await opened(new_stored())
    assert await second.hit("to:email:carol@example.com", 2, 600, time.time()) is None
    await closed(second)
    if isinstance(second, SqliteStore):
        db = sqlite3.connect(tmp_path / "outbox.sqlite3")
        (rows,) = db.execute("SELECT count(*) FROM limit_counters").fetchone()
        db.close()
    else:
        url, schema = request.getfixturevalue("pg_schema")  # the one new_stored took
        conn = await asyncpg.connect(url)
        rows = await conn.fetchval(f'SELECT count(*) FROM "{schema}".limit_counters')  # noqa: S608
        await conn.close()
    assert rows == 2  # bob's and carol's
