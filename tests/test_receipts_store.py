"""The receipts part of the outbox port (:mod:`otp_service.store.receipts`), held to one
contract on SQLite and PostgreSQL: matched by provider and provider id, moved up never down,
never across numbers, the horizon's unknown, and the one resend of an undelivered SMS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from otp_service.store import Attempt, OutboxStore, SqliteStore
from otp_service.store.postgres import PostgresStore
from otp_service.store.receipts import Receipt

from .support.store import CODE, accept, make_message

pytestmark = pytest.mark.postgres
TO = "+33612345678"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schema: tuple[str, str]
) -> AsyncIterator[OutboxStore]:
    """An opened store of each backend."""
    url, schema = pg_schema
    opened: OutboxStore = (
        SqliteStore(tmp_path / "outbox.sqlite3")
        if request.param == "sqlite"
        else PostgresStore(url, schema=schema, pool_size=4)
    )
    await opened.open()
    yield opened
    await opened.close()


async def sent(
    store: OutboxStore, provider_id: str, *, provider: str = "vonage", keep: bool = False,
    ttl: float = 600,
) -> str:  # fmt: skip
    """An SMS accepted by ``provider`` as ``provider_id``; its message id."""
    message = make_message(to=TO, channel="sms")
    await accept(store, message, ttl=ttl)
    attempt = Attempt(time.time(), provider, "sent", provider_id=provider_id)
    await store.finish(message.id, "sent", provider, None, attempt, keep_body=keep)
    return message.id


def receipt(state: str, provider_id: str = "ID1", **fields: object) -> Receipt:
    return Receipt("vonage", provider_id, state, **fields)  # type: ignore[arg-type]


async def test_receipt_moves_state_up_never_down(store: OutboxStore) -> None:
    """pending -> delivered is taken; a repeat, a later pending or undelivered is not."""
    message_id = await sent(store, "ID1")
    assert (await store.apply_receipt(receipt("pending"), time.time())).changed
    applied = await store.apply_receipt(receipt("delivered", at=time.time()), time.time())
    assert applied.changed and applied.target is not None
    assert applied.target.message_id == message_id and applied.target.receipt == "pending"
    for later in ("delivered", "pending", "undelivered"):
        assert not (await store.apply_receipt(receipt(later), time.time())).changed
    status = await store.status(message_id)
    assert status is not None and status.attempts[-1].receipt == "delivered"


async def test_receipt_for_another_number_or_provider_changes_nothing(
    store: OutboxStore,
) -> None:
    """A receipt naming another number is a mismatch; the same id from another provider, or
    an unknown id, matches nothing."""
    message_id = await sent(store, "ID1")
    mismatch = await store.apply_receipt(receipt("undelivered", to="33698765432"), time.time())
    assert mismatch.mismatch and not mismatch.changed
    masked = await store.apply_receipt(receipt("pending", to="3361234****"), time.time())
    assert masked.changed  # a masked number that fits is the same number
    other = Receipt("aliyun", "ID1", "undelivered")
    assert (await store.apply_receipt(other, time.time())).target is None
    assert (await store.apply_receipt(receipt("delivered", "ID2"), time.time())).target is None
    status = await store.status(message_id)
    assert status is not None and status.attempts[-1].receipt == "pending"


async def test_concurrent_receipts_end_in_the_highest_state(store: OutboxStore) -> None:
    """Receipts of one message taken at once end delivered, whatever their order."""
    message_id = await sent(store, "ID1")
    states = ["pending", "undelivered", "delivered", "pending", "undelivered"] * 4
    await asyncio.gather(*(store.apply_receipt(receipt(s), time.time()) for s in states))
    status = await store.status(message_id)
    assert status is not None and status.attempts[-1].receipt == "delivered"


async def test_overdue_receipts_marked_unknown_once(store: OutboxStore) -> None:
    """An SMS without a final receipt past the horizon is marked unknown, once; a final one
    is left alone."""
    waiting = await sent(store, "ID1")
    await sent(store, "ID2")
    await store.apply_receipt(receipt("delivered", "ID2"), time.time())
    found = await store.overdue_receipts(0, time.time() + 1, 100)
    assert [t.message_id for t in found] == [waiting]
    assert await store.overdue_receipts(0, time.time() + 1, 100) == []
    assert (await store.apply_receipt(receipt("delivered"), time.time())).changed
    await sent(store, "ID3")
    assert await store.overdue_receipts(time.time() + 1, time.time() + 2, 100) == []


async def test_awaiting_receipts_lists_what_a_poll_asks_about(store: OutboxStore) -> None:
    """Attempts of one provider without a final receipt, oldest first, within the window."""
    first = await sent(store, "B1", provider="aliyun")
    second = await sent(store, "B2", provider="aliyun")
    await sent(store, "V1")
    found = await store.awaiting_receipts("aliyun", 0, time.time() + 1, 10)
    assert [(t.message_id, t.provider_id, t.to) for t in found] == [
        (first, "B1", TO),
        (second, "B2", TO),
    ]
    await store.apply_receipt(Receipt("aliyun", "B1", "undelivered"), time.time())
    found = await store.awaiting_receipts("aliyun", 0, time.time() + 1, 10)
    assert [t.message_id for t in found] == [second]


async def test_failover_claimed_once_while_undelivered_and_alive(store: OutboxStore) -> None:
    """The resend of an undelivered SMS is handed out once, with its kept body (the code);
    never while its receipt is not undelivered."""
    message_id = await sent(store, "ID1", keep=True)
    now = time.time()
    assert await store.claim_failover(message_id, "vonage", "ID1", now) is None  # pending
    await store.apply_receipt(receipt("undelivered"), now)
    claims = await asyncio.gather(
        *(store.claim_failover(message_id, "vonage", "ID1", now) for _ in range(5))
    )
    taken = [m for m in claims if m is not None]
    assert len(taken) == 1 and taken[0].code == CODE
    assert await store.claim_failover(message_id, "vonage", "ID1", now) is None


async def test_failover_not_claimed_after_delivered_or_expiry(store: OutboxStore) -> None:
    """Delivered, or past the code's expiry (its kept body erased), there is no resend."""
    delivered = await sent(store, "ID1", keep=True)
    await store.apply_receipt(receipt("undelivered"), time.time())
    await store.apply_receipt(receipt("delivered"), time.time())
    assert await store.claim_failover(delivered, "vonage", "ID1", time.time()) is None
    expired = await sent(store, "ID2", keep=True, ttl=1)
    await store.apply_receipt(receipt("undelivered", "ID2"), time.time())
    later = time.time() + 5
    await store.erase_kept_bodies(later)
    assert await store.claim_failover(expired, "vonage", "ID2", time.time()) is None


async def test_body_erased_on_finish_unless_kept(store: OutboxStore) -> None:
    """Without keep_body nothing can be resent (the code is gone with the finish)."""
    message_id = await sent(store, "ID1")
    await store.apply_receipt(receipt("undelivered"), time.time())
    assert await store.claim_failover(message_id, "vonage", "ID1", time.time()) is None
