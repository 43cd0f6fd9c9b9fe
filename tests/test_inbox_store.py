"""The capture inbox seam (:class:`otp_service.store.inbox.Inbox`), one suite run against the
in-memory inbox and the PostgreSQL one (a fresh schema of the test database); only the
PostgreSQL runs are marked ``postgres``, so the quick run keeps the memory ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from otp_service.message.compose import Message
from otp_service.store import Inbox, InboxEvent, InboxQuery, MemoryInbox, UnknownMessage
from otp_service.store.pg_inbox import PgInbox
from otp_service.store.postgres import PostgresStore

from .support.markers import POSTGRES

NewInbox = Callable[..., tuple[Inbox, Any]]


@pytest.fixture(params=["memory", POSTGRES])
def new_inbox(request: pytest.FixtureRequest) -> NewInbox:
    """Each backend's maker of an inbox with the given bounds and the store it lives in (None
    for memory); a fresh PostgreSQL schema is taken for the marked PostgreSQL runs only."""
    if request.param == "memory":
        return lambda **bounds: (MemoryInbox(**bounds), None)
    url, schema = request.getfixturevalue("pg_schema")

    def new(**bounds: int) -> tuple[Inbox, Any]:
        store = PostgresStore(url, schema=schema, pool_size=3)
        return PgInbox(store, **bounds), store

    return new


@pytest.fixture
async def inbox(new_inbox: NewInbox) -> AsyncIterator[Inbox]:
    """Each backend's inbox, bounded at 100 messages."""
    made, store = new_inbox(max_messages=100)
    if store is not None:
        await store.open()
    yield made
    await made.close()
    if store is not None:
        await store.close()


def message(
    to: str = "ana@example.com",
    code: str = "123456",
    channel: str = "email",
    type: str = "SignIn",
    at: datetime | None = None,
) -> Message:
    return Message(
        id=f"{to}-{code}-{channel}-{type}",
        channel=channel,  # type: ignore[arg-type]
        to=to,
        type=type,
        locale="en",
        text=f"Your code is {code}",
        code=code,
        created_at=at or datetime.now(UTC),
    )


async def test_inbox_lists_newest_first_with_filters(inbox: Inbox) -> None:
    """list answers newest first and honours recipient (any case), channel and type."""
    await inbox.add(message(code="1"))
    await inbox.add(message(code="2", type="Register"))
    await inbox.add(message(to="+33612345678", code="3", channel="sms"))
    codes = [m.code for m in await inbox.list(InboxQuery(), 10)]
    assert codes == ["3", "2", "1"]
    assert [m.code for m in await inbox.list(InboxQuery(to="ANA@example.com"), 10)] == ["2", "1"]
    assert [m.code for m in await inbox.list(InboxQuery(channel="sms"), 10)] == ["3"]
    assert [m.code for m in await inbox.list(InboxQuery(type="Register"), 10)] == ["2"]
    assert [m.code for m in await inbox.list(InboxQuery(), 1)] == ["3"]


async def test_inbox_delete_and_clear_one_recipient(inbox: Inbox) -> None:
    """delete removes one message; clear(to) only that recipient's; clear() the rest."""
    first, second = message(code="1"), message(to="bob@example.com", code="2")
    await inbox.add(first)
    await inbox.add(second)
    await inbox.add(message(code="3"))
    assert await inbox.delete(first.id) is True and await inbox.delete(first.id) is False
    assert await inbox.get(first.id) is None and await inbox.get(second.id) == second
    assert await inbox.clear("ana@example.com") == 1
    assert [m.code for m in await inbox.list(InboxQuery(), 10)] == ["2"]
    assert await inbox.clear() == 1 and await inbox.list(InboxQuery(), 10) == []


async def test_inbox_latest_since_time_and_after_id(inbox: Inbox) -> None:
    """latest keeps messages created at or after ``since`` and captured after ``after``."""
    now = datetime.now(UTC)
    old = message(code="1", at=now - timedelta(seconds=5))
    new = message(code="2", at=now)
    await inbox.add(old)
    assert await inbox.latest(InboxQuery(), since=now) is None
    await inbox.add(new)
    assert await inbox.latest(InboxQuery(), since=now) == new
    assert await inbox.latest(InboxQuery(), after=old.id) == new
    assert await inbox.latest(InboxQuery(), after=new.id) is None
    with pytest.raises(UnknownMessage):
        await inbox.latest(InboxQuery(), after="no-such-id")


async def test_inbox_wait_wakes_on_a_matching_arrival(inbox: Inbox) -> None:
    """wait returns the first matching message captured while it waits, ignoring others."""
    waiting = asyncio.create_task(inbox.wait(InboxQuery(to="ana@example.com")))
    await asyncio.sleep(0)
    await inbox.add(message(to="bob@example.com"))
    await asyncio.sleep(0)
    assert not waiting.done()
    wanted = message(code="777777")
    await inbox.add(wanted)
    assert await asyncio.wait_for(waiting, 30) == wanted


async def test_inbox_wait_bounded_by_timeout_ends_with_nothing(inbox: Inbox) -> None:
    """A wait bounded by asyncio.timeout ends with TimeoutError when nothing matching came."""
    await inbox.add(message(channel="email"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await inbox.wait(InboxQuery(channel="sms"))
    assert await inbox.wait(InboxQuery(channel="email")) is not None


async def test_inbox_events_start_ready_then_follow_changes(inbox: Inbox) -> None:
    """A subscriber hears ready, then every add, delete and clear in order."""
    events = inbox.events()
    seen: list[InboxEvent] = [await anext(events)]
    one = message(code="1")
    await inbox.add(one)
    await inbox.delete(one.id)
    await inbox.clear("ana@example.com")
    seen += [await anext(events) for _ in range(3)]
    assert [(e.kind, e.message, e.id, e.to) for e in seen] == [
        ("ready", None, None, None),
        ("added", one, None, None),
        ("deleted", None, one.id, None),
        ("cleared", None, None, "ana@example.com"),
    ]
    await inbox.close()
    assert [e async for e in events] == []


async def test_inbox_close_wakes_waiters_with_nothing(inbox: Inbox) -> None:
    """Closing the inbox (shutdown) ends pending waits at once with None."""
    waiting = asyncio.create_task(inbox.wait(InboxQuery()))
    await asyncio.sleep(0)
    await inbox.close()
    assert await asyncio.wait_for(waiting, 30) is None


@pytest.mark.parametrize("bound", [2, 200])
async def test_inbox_drops_the_oldest_past_its_bound_and_says_so(
    new_inbox: NewInbox, bound: int
) -> None:
    """Past max_messages the oldest messages go and the newest stay, and live readers hear
    that each one that went was deleted. PostgreSQL trims every tenth of max_messages added
    (every add below 20), so it may hold up to a tenth more meanwhile (docs/replicas.md), and
    announces a trim after the adds it follows: the events are compared in any order."""
    inbox, store = new_inbox(max_messages=bound)
    if store is not None:
        await store.open()
    try:
        events = inbox.events()
        assert (await anext(events)).kind == "ready"
        added = [message(code=str(n)) for n in range(bound + bound // 10 + 10)]
        for each in added:
            await inbox.add(each)
        held = [m.id for m in await inbox.list(InboxQuery(), 1000)]
        assert bound <= len(held) <= bound + bound // 10
        assert held == [m.id for m in reversed(added)][: len(held)]  # the newest, newest first
        gone = {m.id for m in added} - set(held)
        heard = [await asyncio.wait_for(anext(events), 30) for _ in range(len(added) + len(gone))]
        assert sorted(
            (e.kind, e.id or (e.message.id if e.message else "")) for e in heard
        ) == sorted([("added", m.id) for m in added] + [("deleted", gone_id) for gone_id in gone])
        await inbox.close()
        assert [e async for e in events] == []  # nothing else was announced
    finally:
        await inbox.close()
        if store is not None:
            await store.close()


async def test_inbox_max_bytes_bounds_it_oldest_first_newest_kept(new_inbox: NewInbox) -> None:
    """capture.max_bytes bounds the inbox on every backend: messages of about 10 KB each in
    an inbox of 35 KB keep the newest three; one message larger than the bound is kept alone."""
    inbox, store = new_inbox(max_messages=100, max_bytes=35_000)
    if store is not None:
        await store.open()
    try:
        big = [replace(message(code=str(n)), text="x" * 10_000) for n in range(10)]
        for each in big:
            await inbox.add(each)
        held = [m.id for m in big if await inbox.get(m.id) is not None]
        assert held == [m.id for m in big[-3:]]
        huge = replace(message(code="huge"), text="y" * 50_000)
        await inbox.add(huge)
        held = [m.id for m in [*big, huge] if await inbox.get(m.id) is not None]
        assert held == [huge.id]
    finally:
        await inbox.close()
        if store is not None:
            await store.close()
