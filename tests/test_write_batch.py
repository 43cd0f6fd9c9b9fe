"""The one batching helper of both backends (:class:`otp_service.store.batch.WriteBatch`):
writes queued together commit together; an outage fails everyone with StoreUnavailable; a
batch spoiled by one write is committed again one by one, so that only that write fails, as
WriteRefused (its cause kept)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from otp_service.errors import StoreUnavailable, WriteRefused
from otp_service.store.batch import WriteBatch


class Database:
    """A commit function over a list: refuses the write "bad" (spoiling its batch, like
    PostgreSQL) and fails whole while ``down``."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.commits: list[list[str]] = []
        self.down = False

    async def commit(self, batch: list[str]) -> Sequence[Any]:
        await asyncio.sleep(0)
        self.commits.append(list(batch))
        if self.down:
            raise StoreUnavailable("the database is gone")
        if "bad" in batch:
            raise ValueError("bad value")
        self.rows += batch
        return [f"stored {write}" for write in batch]


async def test_writes_queued_together_commit_together_each_answered() -> None:
    db = Database()
    batch: WriteBatch[str] = WriteBatch(db.commit)
    answers = await asyncio.gather(*(batch.put(f"w{n}") for n in range(5)))
    assert answers == [f"stored w{n}" for n in range(5)]
    assert db.commits == [[f"w{n}" for n in range(5)]]  # one commit for the burst


async def test_a_spoiled_batch_is_retried_one_by_one_and_only_the_bad_write_fails() -> None:
    db = Database()
    batch: WriteBatch[str] = WriteBatch(db.commit)
    answers = await asyncio.gather(
        batch.put("a"), batch.put("bad"), batch.put("b"), return_exceptions=True
    )
    assert answers[0] == "stored a" and answers[2] == "stored b"
    assert isinstance(answers[1], WriteRefused) and isinstance(answers[1].__cause__, ValueError)
    assert db.rows == ["a", "b"]
    assert db.commits == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]


async def test_an_outage_fails_every_write_of_the_batch_with_store_unavailable() -> None:
    db = Database()
    db.down = True
    batch: WriteBatch[str] = WriteBatch(db.commit)
    answers = await asyncio.gather(*(batch.put(w) for w in "xyz"), return_exceptions=True)
    assert all(isinstance(a, StoreUnavailable) for a in answers), answers
    assert db.commits == [["x", "y", "z"]] and db.rows == []  # not retried one by one
    db.down = False
    assert await batch.put("later") == "stored later"  # the next batch works again


async def test_a_write_failing_alone_in_its_own_result_is_write_refused() -> None:
    """A backend that isolates writes itself (SQLite's savepoints) returns the failure as the
    write's result: that caller alone gets WriteRefused."""

    async def commit(batch: list[str]) -> Sequence[Any]:
        return [KeyError(w) if w == "bad" else w for w in batch]

    batch: WriteBatch[str] = WriteBatch(commit)
    answers = await asyncio.gather(batch.put("a"), batch.put("bad"), return_exceptions=True)
    assert answers[0] == "a" and isinstance(answers[1], WriteRefused)
