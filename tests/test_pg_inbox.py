"""The capture inbox in PostgreSQL: what one replica captures, every replica lists, and a
waiter on one replica is woken by a capture on another (LISTEN/NOTIFY, no polling)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from otp_service.http.app import SERVICES
from otp_service.store.inbox import InboxQuery, UnknownMessage
from otp_service.store.pg_inbox import PgInbox
from otp_service.store.postgres import PostgresStore

from .support.service import ClientFactory
from .support.store import make_message

pytestmark = pytest.mark.postgres


@pytest.fixture
async def inboxes(pg_schema: tuple[str, str]) -> AsyncIterator[list[PgInbox]]:
    """The inboxes of two replicas on one schema."""
    url, schema = pg_schema
    stores = [PostgresStore(url, schema=schema, pool_size=3) for _ in range(2)]
    inboxes = [PgInbox(store, max_messages=5) for store in stores]
    for store in stores:
        await store.open()
    yield inboxes
    for inbox, store in zip(inboxes, stores, strict=True):
        await inbox.close()
        await store.close()


async def listening(*inboxes: PgInbox) -> None:
    for _ in range(100):
        if all(inbox._listener is not None for inbox in inboxes):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the inboxes never listened")


async def test_pg_inbox_lists_what_another_replica_captured(inboxes: list[PgInbox]) -> None:
    """A message captured on one replica is listed and read on the other, newest first,
    bounded at max_messages."""
    a, b = inboxes
    messages = [make_message(to=f"user{n}@example.com") for n in range(7)]
    for message in messages:
        await a.add(message)
    listed = await b.list(InboxQuery(), 10)
    assert [m.id for m in listed] == [m.id for m in reversed(messages)][:5]
    assert await b.get(messages[-1].id) == messages[-1]
    assert await b.list(InboxQuery(to="USER6@example.com"), 10) == [messages[-1]]
    assert await b.clear("user6@example.com") == 1
    assert await a.get(messages[-1].id) is None


async def test_pg_inbox_wait_is_woken_by_a_capture_on_another_replica(
    inboxes: list[PgInbox],
) -> None:
    """A waiter on one replica gets the message captured on the other as soon as it lands."""
    a, b = inboxes
    await listening(a, b)
    first = make_message(to="ana@example.com")
    await a.add(first)
    waiter = asyncio.create_task(b.wait(InboxQuery(to="ana@example.com"), after=first.id))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # nothing newer yet
    second = make_message(to="ana@example.com")
    await a.add(second)
    async with asyncio.timeout(10):
        assert await waiter == second
    with pytest.raises(UnknownMessage):
        await b.latest(InboxQuery(), after="no-such-id")


async def test_pg_inbox_live_readers_hear_other_replicas(inboxes: list[PgInbox]) -> None:
    """A live reader on one replica hears additions and deletions made on the other. (The
    reader's replica reads an added message back from the store before announcing it, and
    skips one already deleted: so the delete waits until the addition was heard.)"""
    a, b = inboxes
    await listening(a, b)
    stream = b.events()
    assert (await anext(stream)).kind == "ready"
    message = make_message()
    await a.add(message)
    async with asyncio.timeout(10):
        added = await anext(stream)
    await a.delete(message.id)
    async with asyncio.timeout(10):
        deleted = await anext(stream)
    assert (added.kind, added.message) == ("added", message)
    assert (deleted.kind, deleted.id) == ("deleted", message.id)
    await stream.aclose()


async def test_pg_inbox_api_is_shared_and_latest_wait_wakes_across_replicas(
    service: ClientFactory, pg_schema: tuple[str, str]
) -> None:
    """Two services on one PostgreSQL: GET /v1/messages on one lists what the other captured,
    and GET /v1/messages/latest?wait= on one answers with a message sent to the other."""
    url, schema = pg_schema
    config = {"store": {"url": url, "schema": schema, "pool_size": 3}}
    a, b = await service(config), await service(config)
    await listening(a.app[SERVICES].inbox, b.app[SERVICES].inbox)  # type: ignore[arg-type]
    body = {"to": "ana@example.com", "type": "SignIn", "payload": {"code": "123456"}}
    sent = await (await a.post("/v1/email", json=body)).json()
    listed = await (await b.get("/v1/messages?to=ana@example.com")).json()
    assert [m["id"] for m in listed["messages"]] == [sent["id"]]
    waiting = asyncio.create_task(
        b.get("/v1/messages/latest", params={"to": "bob@example.com", "wait": "20"})
    )
    await asyncio.sleep(0.5)
    assert not waiting.done()
    other = await (await a.post("/v1/email", json=body | {"to": "bob@example.com"})).json()
    response = await asyncio.wait_for(waiting, 15)
    assert response.status == 200
    assert (await response.json())["id"] == other["id"]
