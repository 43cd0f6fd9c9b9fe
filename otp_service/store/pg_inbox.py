"""The capture inbox in PostgreSQL: what any replica captured, for every replica to read.

Captured messages are rows of ``captured`` beside the outbox, bounded like the memory inbox:
at most ``max_messages`` and ``max_bytes`` (of stored JSON), the oldest dropped first, the newest
always kept. The inbox trims itself as it adds (no other port's purge touches it), every tenth
of ``max_messages`` added or twentieth of ``max_bytes``, so between two trims it may hold that
much more. The table is unlogged (migration 6): a PostgreSQL crash empties it, which a test
inbox can afford, and its bodies cost no WAL.
Every change is announced with ``NOTIFY`` in the transaction that makes it; each
replica listens on a connection of its own and wakes its waiters (``latest?wait=``) and its live
readers from there, so a message captured on one replica wakes a waiter on another without
polling. When the listening connection is lost, it is opened again and every waiter looks again
(a notification sent meanwhile is not replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..message.compose import Message
from ..retry import Backoff
from .codec import message_from_json, message_to_json
from .inbox import InboxEvent, InboxQuery, Readers, UnknownMessage
from .pg_connection import PgConnection

log = logging.getLogger("otp_service.store")

# A captured message and its notification in one statement (sent when the batch commits).
_ADD = """
WITH added AS (
  INSERT INTO captured (id, channel, recipient, type, body, created_at)
  VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING RETURNING id
)
SELECT pg_notify($7, $8) FROM added
"""
# _ADD for many messages in one statement (each parameter an array, one element a message).
_ADD_MANY = """
WITH added AS (
  INSERT INTO captured (id, channel, recipient, type, body, created_at)
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[])
  ON CONFLICT (id) DO NOTHING RETURNING id
)
SELECT pg_notify(($7::text[])[1], p.payload)
FROM added JOIN unnest($1::text[], $8::text[]) AS p(id, payload) USING (id)
"""
# Keep the newest max_messages ($1) holding at most max_bytes ($3), the newest always (the
# running size only grows from the newest back, so what is kept is the newest few); one
# statement drops the rest and announces them, 200 ids a notification (a notification each
# cost every listening worker a wake-up per message). (octet_length of a compressed body is
# read from its header, not by decompressing it.)
_TRIM = """
WITH kept AS (  -- the newest max_messages with their running size: read by the index, no more
  SELECT seq, sum(octet_length(body)) OVER (ORDER BY seq DESC) AS total
  FROM captured ORDER BY seq DESC LIMIT $1
), edge AS (
  SELECT coalesce(min(seq) FILTER (WHERE total <= $3), max(seq)) AS seq FROM kept
), dropped AS (
  DELETE FROM captured WHERE seq < (SELECT seq FROM edge) RETURNING id
)
SELECT pg_notify($2, json_build_object('kind', 'deleted', 'ids', json_agg(id))::text)
FROM (SELECT id, (row_number() OVER ()) / 200 AS part FROM dropped) d GROUP BY part
"""


@dataclass(eq=False)
class _Waiter:
    query: InboxQuery
    since: datetime | None
    after: str | None
    wake: asyncio.Event


def _where(query: InboxQuery, since: datetime | None, args: list[Any]) -> str:
    """SQL conditions for ``query`` and ``since``, appending their values to ``args``."""
    conditions = ["TRUE"]
    for column, value in (("lower(recipient)", query.to and query.to.lower()),
                          ("channel", query.channel), ("type", query.type)):  # fmt: skip
        if value is not None:
            args.append(value)
            conditions.append(f"{column} = ${len(args)}")
    if since is not None:
        args.append(since.timestamp())
        conditions.append(f"created_at >= ${len(args)}")
    return " AND ".join(conditions)


class PgInbox:
    """The :class:`~otp_service.store.inbox.Inbox` on the PostgreSQL store's database."""

    def __init__(
        self,
        store: PgConnection,
        max_messages: int = 1000,
        queue_size: int = 1000,
        max_bytes: int = 64 * 1024 * 1024,
        stream_bytes: int = 1024 * 1024,
    ) -> None:
        self.store = store
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._unbounded_bytes = 0  # stored since the last trim
        self.channel = f"otp_inbox_{store.schema}"[:63]
        self._waiters: set[_Waiter] = set()
        self._readers = Readers(queue_size, stream_bytes)
        self._listener: asyncpg.Connection | None = None
        self._listening: asyncio.Task[None] | None = None
        self._closed = False
        self._heard = asyncio.Event()  # the LISTEN connection is up
        self._order = asyncio.Lock()
        self._publishing: set[asyncio.Task[None]] = set()
        self._recent: OrderedDict[str, Message] = OrderedDict()  # added here, for live readers
        self._adds = 0
        # The trim reads every kept row: run it every tenth of max_messages added (at least
        # every 20), so it costs a few rows per message, not fifty; the inbox may hold that
        # many more for a moment (and a twentieth of max_bytes more).
        self._trim_every = max(20, max_messages // 10)
        store.bulk[_ADD] = _ADD_MANY
        store.on_connect.append(self._start)

    # -- listening

    async def _start(self, pool: Any) -> None:
        if self._listening is None and not self._closed:
            self._listening = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        backoff = Backoff(first=0.5, cap=10.0)
        while not self._closed:
            lost = asyncio.Event()
            conn = None
            try:
                conn = await asyncpg.connect(self.store.url, timeout=self.store.connect_timeout)
                conn.add_termination_listener(lambda _, event=lost: event.set())
                await conn.add_listener(self.channel, self._notified)
                self._listener = conn
                backoff.reset()
                self._heard.set()
                self._wake_all()  # anything sent while nobody listened: look again
                await lost.wait()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:  # also when cancelled (close): the connection never outlives the task
                self._listener = None
                self._heard.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if not self._closed:
                delay = backoff.next()
                log.warning("inbox: the LISTEN connection is lost; reconnecting in %.1f s", delay)
                await asyncio.sleep(delay)

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        event = json.loads(payload)
        if "ids" not in event:
            self._heard_event(event)
        elif self._readers:  # the trim: many deleted at once, one event each for the readers
            for each in event["ids"]:
                self._heard_event({"kind": event["kind"], "id": each})

    def _heard_event(self, event: dict[str, Any]) -> None:
        if event["kind"] == "added":
            self._wake_all()
        if self._readers:
            task = asyncio.get_running_loop().create_task(self._publish(event))
            self._publishing.add(task)  # held until done (the loop keeps only weak references)
            task.add_done_callback(self._publishing.discard)

    def _wake_all(self) -> None:
        for waiter in self._waiters:
            waiter.wake.set()

    async def _publish(self, event: dict[str, Any]) -> None:
        async with self._order:  # tasks start in arrival order; the lock keeps it
            await self._publish_one(event)

    async def _publish_one(self, event: dict[str, Any]) -> None:
        message = None
        if event["kind"] == "added":  # ours in hand, another replica's read back
            message = self._recent.get(event["id"]) or await self.get(event["id"])
        if event["kind"] == "added" and message is None:
            return  # deleted since
        deleted = event["id"] if event["kind"] == "deleted" else None
        self._readers.publish(
            InboxEvent(event["kind"], message=message, id=deleted, to=event.get("to"))
        )

    async def _notify(self, conn: Any, kind: str, **fields: Any) -> None:
        payload = json.dumps({"kind": kind, **fields})
        await conn.execute("SELECT pg_notify($1, $2)", self.channel, payload)

    # -- changes

    async def add(self, message: Message) -> None:
        # Written with the outbox's bookkeeping batch (one transaction for a burst); the
        # notification goes out when it commits. The bounds are applied every tenth of
        # max_messages added, and whenever a twentieth of max_bytes came in since the last time.
        self._adds += 1
        number = self._adds  # this add's own number: others change _adds while it waits
        self._recent[message.id] = message
        while len(self._recent) > 256:
            self._recent.popitem(last=False)
        body = message_to_json(message)
        await self.store.write(
            _ADD, message.id, message.channel, message.to, message.type, body,
            message.created_at.timestamp(), self.channel,
            json.dumps({"kind": "added", "id": message.id}),
        )  # fmt: skip
        self._unbounded_bytes += len(body)
        if (
            number % self._trim_every == 0
            or self.max_messages < 20
            or self._unbounded_bytes >= self.max_bytes // 20
        ):
            self._unbounded_bytes = 0
            await self.store.query(
                "execute", _TRIM, self.max_messages, self.channel, self.max_bytes
            )

    async def delete(self, message_id: str) -> bool:
        async with self.store.connection() as conn, conn.transaction():
            gone = await conn.fetchval(
                "DELETE FROM captured WHERE id = $1 RETURNING id", message_id
            )
            if gone is not None:
                await self._notify(conn, "deleted", id=message_id)
        return gone is not None

    async def clear(self, to: str | None = None) -> int:
        async with self.store.connection() as conn, conn.transaction():
            if to is None:
                done = await conn.execute("DELETE FROM captured")
            else:
                done = await conn.execute(
                    "DELETE FROM captured WHERE lower(recipient) = $1", to.lower()
                )
            await self._notify(conn, "cleared", to=to)
        return int(done.split()[-1])

    # -- reading

    async def get(self, message_id: str) -> Message | None:
        async with self.store.connection() as conn:
            body = await conn.fetchval("SELECT body FROM captured WHERE id = $1", message_id)
        return None if body is None else message_from_json(body)

    async def list(self, query: InboxQuery, limit: int) -> list[Message]:
        args: list[Any] = []
        where = _where(query, None, args)
        args.append(limit)
        async with self.store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT body FROM captured WHERE {where} ORDER BY seq DESC LIMIT ${len(args)}",  # noqa: S608
                *args,
            )
        return [message_from_json(row["body"]) for row in rows]

    async def latest(
        self, query: InboxQuery, *, since: datetime | None = None, after: str | None = None
    ) -> Message | None:
        args: list[Any] = []
        where = _where(query, since, args)
        async with self.store.connection() as conn:
            if after is not None:
                floor = await conn.fetchval("SELECT seq FROM captured WHERE id = $1", after)
                if floor is None:
                    raise UnknownMessage(after)
                args.append(floor)
                where += f" AND seq > ${len(args)}"
            body = await conn.fetchval(
                f"SELECT body FROM captured WHERE {where} ORDER BY seq DESC LIMIT 1",  # noqa: S608
                *args,
            )
        return None if body is None else message_from_json(body)

    async def wait(
        self, query: InboxQuery, *, since: datetime | None = None, after: str | None = None
    ) -> Message | None:
        # Registered before looking: a notification arriving while we look sets the event.
        waiter = _Waiter(query, since, after, asyncio.Event())
        self._waiters.add(waiter)
        try:
            while not self._closed:
                waiter.wake.clear()
                if (found := await self.latest(query, since=since, after=after)) is not None:
                    return found
                await waiter.wake.wait()
            return None
        finally:
            self._waiters.discard(waiter)

    def events(self) -> AsyncGenerator[InboxEvent, None]:
        # "ready" once the LISTEN connection is up: it promises that nothing is missed from now.
        return self._readers.stream(self._heard)

    async def close(self) -> None:
        self._closed = True
        self._wake_all()
        self._readers.close()
        if self._listening is not None:  # its connection is closed as it ends
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
