"""The store seam: what delivery needs to keep, whatever holds it.

Messages (with their body until they are finished), attempts, leases, idempotency keys and
limit counters. The embedded implementation is SQLite (:mod:`.sqlite`); a shared backend for
several replicas (Redis) implements the same protocol without touching delivery logic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol

from ..message.compose import Message

FINAL = frozenset({"sent", "captured", "failed", "expired"})


@dataclass(frozen=True)
class Attempt:
    at: float  # unix time
    provider: str
    outcome: str  # "sent", "captured", "transient", "permanent", "unknown"
    error: str | None = None


@dataclass(frozen=True)
class Accepted:
    """The answer of :meth:`Store.accept`: the message that holds this request."""

    id: str
    created: bool  # False: an earlier request (same Idempotency-Key, or a duplicate) holds it
    status: str = "queued"
    provider: str | None = None


@dataclass(frozen=True)
class Due:
    """A message claimed for an attempt, with its deadline."""

    message: Message
    expires_at: float
    attempts: int


@dataclass(frozen=True)
class ExpiredMessage:
    """A queued message that :meth:`Store.expire_due` marked expired."""

    id: str
    channel: str
    to: str
    attempts: int
    last_error: str | None
    request_id: str | None


@dataclass(frozen=True)
class StoredStatus:
    id: str
    channel: str
    to: str
    type: str
    status: str
    provider: str | None
    created_at: float
    expires_at: float
    finished_at: float | None
    last_error: str | None
    attempts: tuple[Attempt, ...] = field(default=())


class Store(Protocol):
    async def open(self) -> None:
        """Create the schema; release leases a previous run of this process left behind."""
        ...

    async def close(self) -> None: ...

    async def accept(
        self,
        message: Message,
        *,
        expires_at: float,
        lease_until: float,
        idempotency_key: str | None,
        dedupe_key: str | None,
    ) -> Accepted:
        """Persist ``message`` leased to the caller, or return the message already holding the
        idempotency key, or an unexpired message with the same dedupe key."""
        ...

    async def existing(
        self, idempotency_key: str | None, dedupe_key: str | None, now: float
    ) -> Accepted | None:
        """What :meth:`accept` would answer for a repeat, without storing anything."""
        ...

    async def claim_due(self, now: float, lease_until: float, limit: int) -> list[Due]:
        """Lease up to ``limit`` unfinished messages whose next attempt is due; messages past
        their expiry are marked ``expired`` instead (and never returned)."""
        ...

    async def expire_due(self, now: float) -> list[ExpiredMessage]:
        """Mark ``expired`` the unleased queued messages past their expiry and return them
        (the outbox counts and logs each)."""
        ...

    async def backlog(self) -> tuple[int, float | None]:
        """How many messages are not yet final, and the creation time of the oldest."""
        ...

    async def record_attempt(self, message_id: str, attempt: Attempt) -> None: ...

    async def finish(
        self,
        message_id: str,
        status: str,
        provider: str | None,
        error: str | None,
        attempt: Attempt | None = None,
    ) -> None:
        """Mark final (sent, captured, failed, expired) and delete the body (it holds the code),
        recording ``attempt`` in the same write."""
        ...

    async def retry_later(self, message_id: str, next_attempt_at: float, error: str) -> None:
        """Release the lease and schedule the next attempt."""
        ...

    async def status(self, message_id: str) -> StoredStatus | None: ...

    async def hit(self, key: str, limit: int, window: float, now: float) -> float | None:
        """Count one event for ``key``; None if within ``limit`` per ``window``, else the
        seconds until the window frees up."""
        ...

    async def reset_counters(self, keys: Sequence[str] | None) -> None:
        """Forget the counts of ``keys`` (of every key when None)."""
        ...

    async def forget_duplicates(self, recipient: str | None) -> None:
        """Stop answering new messages to ``recipient`` (compared without case; to anyone when
        None) as duplicates of earlier ones by content; idempotency keys are kept."""
        ...

    async def compact(self) -> None:
        """Drop what finished messages left behind in storage (a no-op where nothing lingers)."""
        ...

    async def purge(self, finished_before: float) -> int:
        """Delete the metadata of messages finished before the given time."""
        ...


_FIELDS = tuple(f.name for f in fields(Message))


def message_to_json(message: Message) -> str:
    # Not dataclasses.asdict: it deep-copies every value, a measurable cost per request.
    data = {name: getattr(message, name) for name in _FIELDS}
    data["created_at"] = message.created_at.isoformat()
    data["params"] = dict(message.params)
    data["headers"] = dict(message.headers)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def message_from_json(text: str) -> Message:
    data: dict[str, Any] = json.loads(text)
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    return Message(**data)
