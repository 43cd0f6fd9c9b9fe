"""Group commit for every backend: queue writes, commit them together, answer each caller.

A backend gives :class:`WriteBatch` a ``commit`` coroutine that writes a list of queued writes
in one transaction and returns one outcome per write: its result, or the exception of a write
that failed alone. While one batch commits the next queues up, so a burst costs one commit.

What a caller gets when something fails:

- ``commit`` raises :class:`~otp_service.errors.StoreUnavailable`: the store itself failed (I/O,
  full disk, the server lost). Nothing of the batch is kept and every caller of the batch gets
  that error: an outage, a later write may succeed.
- ``commit`` raises anything else: one write spoiled the batch (a value the database refuses,
  two batches in a deadlock). The writes are committed again one by one, each alone, so that
  only the bad one fails.
- a write failing alone reaches its caller as :class:`~otp_service.errors.WriteRefused` (the
  database refused that write for good; retrying cannot help), unless it failed for want of the
  store (:class:`~otp_service.errors.StoreUnavailable` again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from ..errors import StoreError, StoreUnavailable, WriteRefused

W = TypeVar("W")
T = TypeVar("T")
Commit = Callable[[list[W]], Awaitable[Sequence[Any]]]


def settle(future: asyncio.Future[T], outcome: T | BaseException) -> None:
    """Answer a queued caller with a result or an error, unless it has stopped waiting."""
    if not future.done():
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def refused(exc: BaseException) -> BaseException:
    """What the caller of a write that failed alone gets: a store error as it is, anything else
    as :class:`WriteRefused` (the original kept as its cause)."""
    if isinstance(exc, StoreError):
        return exc
    text = f"the store refused this write: {type(exc).__name__}: {exc}"
    error = WriteRefused(text[:300])
    error.__cause__ = exc
    return error


class WriteBatch(Generic[W]):
    """A queue of writes committed together by ``commit`` (see the module)."""

    def __init__(self, commit: Commit[W]) -> None:
        self._commit = commit
        self._queue: list[tuple[W, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def put_nowait(self, write: W) -> asyncio.Future[Any]:
        """Queue ``write`` for the next batch; the future answers it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((write, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return future

    async def put(self, write: W) -> Any:
        """Queue ``write``; its result once its batch has committed."""
        return await self.put_nowait(write)

    async def drain(self) -> None:
        """Wait for the batches under way (closing)."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            writes = [write for write, _ in batch]
            try:
                outcomes: Sequence[Any] = await self._commit(writes)
            except StoreUnavailable as exc:  # nobody's write is kept: each caller retries its own
                for _, future in batch:
                    settle(future, exc)
                continue
            except Exception as exc:  # one bad write must not fail the others: each on its own
                if len(batch) == 1:
                    outcomes = [exc]
                else:
                    outcomes = [await self._alone(write) for write in writes]
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                settle(future, refused(outcome) if isinstance(outcome, BaseException) else outcome)

    async def _alone(self, write: W) -> Any:
        try:
            return (await self._commit([write]))[0]
        except Exception as exc:
            return exc
