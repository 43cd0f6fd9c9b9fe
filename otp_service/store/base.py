"""The store seam: what delivery needs to keep, whatever holds it.

Messages (with their body until they are finished), attempts, leases, idempotency keys, dedupe
keys and limit counters. The embedded implementation is SQLite (:mod:`.sqlite`, one process);
the shared one is PostgreSQL (:mod:`.postgres`, replicas and workers), behind the same protocol.
Every backend keeps these promises (tests/test_store_contract.py holds both to them):

- **Per-request write isolation.** Writes may be batched into one transaction, but one
  request's failing write (bad text, a constraint) fails that request alone: the other
  operations of the batch commit. Only a failure of the store itself (I/O, full disk, the file
  gone) fails everyone, and then :meth:`Store.accept` raises :class:`StoreUnavailable`.
- **Durable accept.** :meth:`Store.accept` returns only once the message survives a crash of
  the process and of the machine.
- **SMS at most once.** :meth:`Store.start_attempt` is durable before an SMS provider is
  called. On :meth:`Store.open` (SQLite) or when a dead replica's lease is claimed
  (PostgreSQL), an SMS whose attempt started and has no recorded outcome is finished as
  ``failed`` with a ``provider_outcome_unknown`` error and an ``unknown`` attempt: it may have
  been texted, so it is never resent. (Email is resent: same Message-ID.)
- **Nothing derived from a code outlives the message.** The dedupe key is keyed with the
  store's own random :attr:`Store.dedupe_secret` (an HMAC, not a bare hash of the code), and
  is erased once the message expires (``expires_at``), whatever its status; bodies are erased
  when a message is finished.
- **Abuse-limit counters**: GCRA (:func:`otp_service.store.counters.gcra`), one stored time per
  key, O(1) per event, entries forgotten once their time has passed, memory bounded. Keys come
  canonical from :mod:`otp_service.text.limit_keys`.
- **Health.** :attr:`Store.healthy` is False while the store cannot take durable writes (file
  deleted or replaced, read-only, full disk); :meth:`Store.probe` tries again and repairs what
  it can (a deleted file is written anew from the open handle), so the service recovers by
  itself.
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
    provider_id: str | None = None


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
    dedupe_secret: bytes
    """Random, made with the store and kept in it (every replica sharing the store uses the
    same): the key of the dedupe HMAC. Set by :meth:`open`."""

    @property
    def healthy(self) -> bool:
        """Whether the last write (or probe) succeeded."""
        ...

    async def probe(self) -> bool:
        """Check the store takes a durable write, repairing what can be repaired; the result
        becomes :attr:`healthy`."""
        ...

    async def open(self) -> None:
        """Create (or migrate) the schema; SQLite also releases leases a previous run left;
        finish SMS whose attempt started without an outcome (``provider_outcome_unknown``);
        erase dedupe keys of expired messages."""
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
        idempotency key, or an unexpired message with the same dedupe key. Durable on return;
        raises :class:`StoreUnavailable` when the store cannot write."""
        ...

    async def existing(
        self, idempotency_key: str | None, dedupe_key: str | None, now: float
    ) -> Accepted | None:
        """What :meth:`accept` would answer for a repeat, without storing anything."""
        ...

    async def claim_due(self, now: float, lease_until: float, limit: int) -> list[Due]:
        """Lease up to ``limit`` unfinished messages whose next attempt is due; messages past
        their expiry are marked ``expired`` instead (and never returned). Erases the dedupe
        keys of every message past its expiry."""
        ...

    async def start_attempt(self, message_id: str, provider: str, at: float) -> None:
        """Durably note that an attempt at ``provider`` starts now (before an SMS provider is
        called). Cleared by the next :meth:`record_attempt`, :meth:`finish` or
        :meth:`retry_later` of the message."""
        ...

    async def expire_due(self, now: float) -> list[ExpiredMessage]:
        """Mark ``expired`` the unleased queued messages past their expiry and return them
        (the outbox counts and logs each)."""
        ...

    async def backlog(self) -> tuple[int, float | None]:
        """How many messages are not yet final, and the creation time of the oldest."""
        ...

    async def renew(self, message_ids: list[str], lease_until: float) -> None:
        """Extend the leases of messages this process is still delivering."""
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
        """Count one event for ``key`` by GCRA (``limit`` at once, refilled at ``limit`` per
        ``window``); None when allowed, else the seconds until it would be (a refused event
        is not counted)."""
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
