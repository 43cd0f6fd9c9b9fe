"""The inbox port: captured messages to list, read, delete, watch and wait for.

:class:`Inbox` is what the HTTP layer (the JSON API, ``latest?wait=``, the live page) and the
capture intakes (the capture provider, the SMTP intake) need. :class:`MemoryInbox` is the
embedded backend for one process: a bounded ordered dict, with ``wait`` and ``events`` woken by
plain asyncio futures and queues (no polling). The shared backend (PostgreSQL, for several
replicas: :mod:`.pg_inbox`) wakes waiters with LISTEN/NOTIFY. Every backend keeps these
promises (tests/test_inbox_store.py holds each to them):

- **Order**: "newest" is the order in which messages were captured. ``since`` (a time) keeps
  messages *created* at or after it; ``after`` (a message id) keeps messages captured after
  that one.
- **Bounded by itself**: at most ``capture.max_messages`` messages and about
  ``capture.max_bytes`` of them (memory: their strings' size; PostgreSQL: their stored JSON),
  the oldest dropped first (live readers hear ``deleted``), the newest always kept. No other
  port's purge touches captured messages.
- **Woken, not polled**: :meth:`Inbox.wait` and :meth:`Inbox.events` hear an arrival as it
  lands (on any replica sharing the backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from ..message.compose import Message


class UnknownMessage(LookupError):
    """``after`` names a message the inbox does not hold (never captured, or deleted)."""


@dataclass(frozen=True)
class InboxQuery:
    """Which captured messages: one recipient (already normalised), channel or usage type."""

    to: str | None = None
    channel: str | None = None
    type: str | None = None

    def matches(self, message: Message) -> bool:
        return (
            (self.to is None or message.to.lower() == self.to.lower())
            and (self.channel is None or message.channel == self.channel)
            and (self.type is None or message.type == self.type)
        )


@dataclass(frozen=True)
class InboxEvent:
    """A change to the inbox, as the live page hears it.

    ``ready``: the subscription is registered (read the list after this and nothing is missed);
    ``added``: ``message`` was captured; ``deleted``: the message ``id`` was deleted;
    ``cleared``: every message to ``to`` (every message at all when ``to`` is None) was deleted.
    """

    kind: Literal["ready", "added", "deleted", "cleared"]
    message: Message | None = None
    id: str | None = None
    to: str | None = None


class Inbox(Protocol):
    async def add(self, message: Message) -> None:
        """Capture ``message``; wakes the waiters it matches and tells every subscriber."""
        ...

    async def get(self, message_id: str) -> Message | None: ...

    async def list(self, query: InboxQuery, limit: int) -> list[Message]:
        """Up to ``limit`` messages matching ``query``, newest first."""
        ...

    async def delete(self, message_id: str) -> bool:
        """Delete one message; False when the inbox does not hold it."""
        ...

    async def clear(self, to: str | None = None) -> int:
        """Delete every message to ``to`` (every message when None); how many were deleted."""
        ...

    async def latest(
        self, query: InboxQuery, *, since: datetime | None = None, after: str | None = None
    ) -> Message | None:
        """The newest message matching ``query``, created at or after ``since`` and captured
        after the message ``after``; raises :class:`UnknownMessage` for an unknown ``after``."""
        ...

    async def wait(
        self, query: InboxQuery, *, since: datetime | None = None, after: str | None = None
    ) -> Message | None:
        """:meth:`latest`, or when there is none yet the first such message captured from now
        on, woken on arrival (not by polling); None when the inbox closes first. Bound it with
        ``asyncio.timeout``."""
        ...

    def events(self) -> AsyncGenerator[InboxEvent, None]:
        """Every change from now on, starting with ``ready``; ends when the reader falls too
        far behind (it should reload and subscribe again) or the inbox closes."""
        ...

    async def close(self) -> None:
        """End every subscription and wake every waiter (with nothing): shutting down."""
        ...


@dataclass(eq=False)
class _Waiter:
    query: InboxQuery
    since: datetime | None
    future: asyncio.Future[Message]


ANSWER_MAX_BYTES = 8 * 1024 * 1024  # what one listing may hold (its JSON is about as big)


def message_size(message: Message) -> int:
    """Roughly the memory a captured message holds (its strings dominate)."""
    texts = (message.text, message.html, message.subject, message.code, message.link, message.to)
    size = sum(sys.getsizeof(t) for t in texts if t)
    return size + sum(sys.getsizeof(v) for v in message.params.values() if isinstance(v, str))


def event_size(event: InboxEvent) -> int:
    """Roughly what a queued event holds (its message may be dropped from the inbox meanwhile:
    the reader's queue then is all that keeps it)."""
    return 64 + (message_size(event.message) if event.message is not None else 0)


class _Reader:
    """One live reader's queue, and the bytes its events hold."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[InboxEvent | None] = asyncio.Queue(size + 1)
        self.bytes = 0


class Readers:
    """The live readers of an inbox (both backends): a bounded queue of events each. A reader
    that falls ``queue_size`` events or ``max_bytes`` bytes behind is ended (it reloads and
    subscribes again): a reader that does not read can hold no more than that."""

    def __init__(self, queue_size: int, max_bytes: int = 1024 * 1024) -> None:
        self.queue_size = queue_size
        self.max_bytes = max_bytes
        self.closed = False
        self._readers: set[_Reader] = set()

    def __bool__(self) -> bool:
        return bool(self._readers)

    def __len__(self) -> int:
        return len(self._readers)

    async def stream(self, ready: asyncio.Event | None = None) -> AsyncGenerator[InboxEvent, None]:
        """``ready`` first (once ``ready`` is set, when given), then every published event."""
        if self.closed:
            return
        reader = _Reader(self.queue_size)
        self._readers.add(reader)
        try:
            if ready is not None:
                await ready.wait()
            yield InboxEvent("ready")
            while (event := await reader.queue.get()) is not None:
                reader.bytes -= event_size(event)
                yield event
        finally:
            self._readers.discard(reader)

    def publish(self, event: InboxEvent) -> None:
        if not self._readers:  # the common case: nobody is watching, nothing to measure
            return
        size = event_size(event)
        for reader in list(self._readers):
            behind = reader.queue.qsize() >= self.queue_size
            if behind or (reader.bytes and reader.bytes + size > self.max_bytes):
                self._readers.discard(reader)  # a reader this far behind starts over
                reader.bytes = 0
                _end(reader.queue, clear=True)
            else:
                reader.bytes += size
                reader.queue.put_nowait(event)

    def close(self) -> None:
        """End every stream, now and to come."""
        self.closed = True
        for reader in self._readers:
            _end(reader.queue)


class MemoryInbox:
    """The newest ``max_messages`` captured messages, in this process's memory, and at most
    ``max_bytes`` of them (payload values can make one message large): the oldest go first."""

    def __init__(
        self,
        max_messages: int = 1000,
        queue_size: int = 1000,
        max_bytes: int = 64 * 1024 * 1024,
        stream_bytes: int = 1024 * 1024,
    ) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0
        self._sizes: dict[str, int] = {}
        self._readers = Readers(queue_size, stream_bytes)
        self._messages: OrderedDict[str, tuple[int, Message]] = OrderedDict()
        self._seq = 0
        self._waiters: set[_Waiter] = set()
        self._closed = False

    # -- changes

    async def add(self, message: Message) -> None:
        self._seq += 1
        self._forget_size(message.id)
        self._messages[message.id] = (self._seq, message)
        self._sizes[message.id] = size = message_size(message)
        self.bytes += size
        while len(self._messages) > 1 and (
            len(self._messages) > self.max_messages or self.bytes > self.max_bytes
        ):
            dropped, _ = self._messages.popitem(last=False)
            self._forget_size(dropped)
            self._readers.publish(InboxEvent("deleted", id=dropped))
        for waiter in list(self._waiters):
            if _fits(message, waiter.query, waiter.since) and not waiter.future.done():
                waiter.future.set_result(message)
        self._readers.publish(InboxEvent("added", message=message))

    def _forget_size(self, message_id: str) -> None:
        self.bytes -= self._sizes.pop(message_id, 0)

    async def delete(self, message_id: str) -> bool:
        if self._messages.pop(message_id, None) is None:
            return False
        self._forget_size(message_id)
        self._readers.publish(InboxEvent("deleted", id=message_id))
        return True

    async def clear(self, to: str | None = None) -> int:
        if to is None:
            count = len(self._messages)
            self._messages.clear()
            self._sizes.clear()
            self.bytes = 0
        else:
            query = InboxQuery(to=to)
            gone = [key for key, (_, m) in self._messages.items() if query.matches(m)]
            for key in gone:
                del self._messages[key]
                self._forget_size(key)
            count = len(gone)
        self._readers.publish(InboxEvent("cleared", to=to))
        return count

    # -- reading

    async def get(self, message_id: str) -> Message | None:
        found = self._messages.get(message_id)
        return None if found is None else found[1]

    async def list(self, query: InboxQuery, limit: int) -> list[Message]:
        """Newest first: at most ``limit``, and about an eighth of ``max_bytes`` (8 MiB at
        most), always at least the newest match."""
        found: list[Message] = []
        budget, total = min(ANSWER_MAX_BYTES, self.max_bytes // 8), 0
        for _, message in reversed(self._messages.values()):
            if query.matches(message):
                total += self._sizes.get(message.id, 0)
                if found and total > budget:
                    break
                found.append(message)
                if len(found) >= limit:
                    break
        return found

    async def latest(
        self, query: InboxQuery, *, since: datetime | None = None, after: str | None = None
    ) -> Message | None:
        floor = 0
        if after is not None:
            anchor = self._messages.get(after)
            if anchor is None:
                raise UnknownMessage(after)
            floor = anchor[0]
        for seq, message in reversed(self._messages.values()):
            if seq <= floor:
                break
            if _fits(message, query, since):
                return message
        return None

    async def wait(
        self, query: InboxQuery, *, since: datetime | None = None, after: str | None = None
    ) -> Message | None:
        # No await between looking and registering: nothing can be captured in between.
        found = await self.latest(query, since=since, after=after)
        if found is not None or self._closed:
            return found
        waiter = _Waiter(query, since, asyncio.get_running_loop().create_future())
        self._waiters.add(waiter)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            if _cancelling():  # the caller itself is cancelled (or timed out), not the waiter
                raise
            return None  # closed
        finally:
            self._waiters.discard(waiter)

    def events(self) -> AsyncGenerator[InboxEvent, None]:
        return self._readers.stream()

    async def close(self) -> None:
        self._closed = True
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.cancel()
        self._readers.close()


def _fits(message: Message, query: InboxQuery, since: datetime | None) -> bool:
    return query.matches(message) and (since is None or message.created_at >= since)


def _end(queue: asyncio.Queue[InboxEvent | None], *, clear: bool = False) -> None:
    """Put the end marker, making room for it when the queue is full (``clear``: dropping
    every queued event, so that they are freed now)."""
    while clear and not queue.empty():
        queue.get_nowait()
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(None)


def _cancelling() -> bool:
    """Whether the current task itself is being cancelled (not just a waiter's future)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
