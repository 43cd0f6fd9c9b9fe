"""Messages and the accept call the store tests share (the contract suite and the backends')."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from otp_service.message.compose import Message
from otp_service.store import OutboxStore

CODE = "604217"


def make_message(
    to: str = "ana@example.com", channel: str = "email", at: float | None = None
) -> Message:
    created = datetime.fromtimestamp(at or time.time(), UTC)
    return Message(id=uuid.uuid4().hex, channel=channel, to=to, type="SignIn", locale="en",  # type: ignore[arg-type]
                   text=f"Your code is {CODE}", subject="Code", code=CODE, created_at=created)  # fmt: skip


async def accept(store: OutboxStore, message: Message, *, ttl: float = 600, lease: float = 60,
                 key: str | None = None, dedupe: str | None = None) -> Any:  # fmt: skip
    now = message.created_at.timestamp()
    return await store.accept(message, expires_at=now + ttl, lease_until=now + lease,
                              idempotency_key=key, dedupe_key=dedupe)  # fmt: skip
