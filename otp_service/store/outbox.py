"""The outbox port: what delivery keeps about each message, whatever holds it.

Messages (with their body until they are finished), attempts, leases, idempotency keys and
dedupe keys. The embedded backend is SQLite (:mod:`.sqlite`, one process); the shared one is
PostgreSQL (:mod:`.postgres`, replicas and workers). Abuse-limit counters are the counters port
(:mod:`.counters`) and captured messages the inbox port (:mod:`.inbox`): a backend may implement
several ports, but each port's methods touch only that port's data. Every backend keeps these
promises (tests/test_store_contract.py holds each to them):

- **Per-request write isolation.** Writes are batched into one transaction
  (:mod:`.batch`), but one request's write that the database refuses (bad text, a constraint)
  fails that request alone, with :class:`~otp_service.errors.WriteRefused`: retrying cannot
  help. Only a failure of the store itself (I/O, full disk, the file gone, the server
  unreachable) fails everyone, with :class:`~otp_service.errors.StoreUnavailable`: a later
  write may succeed.
- **Durable accept.** :meth:`OutboxStore.accept` returns only once the message survives a
  crash of the process and of the machine. It costs one commit per batch of accepts, never a
  round trip of its own.
- **Leases.** A message is delivered by whoever holds its lease; a lease that runs out belongs
  to a run that died (or lost the store) and its message is claimed again. SQLite, owned by one
  process, also ends every lease of the previous run on :meth:`OutboxStore.open`.
- **SMS at most once, and crash recovery in one place.** :meth:`OutboxStore.start_attempt` is
  durable before an SMS provider is called. :meth:`OutboxStore.recover`, and nothing else,
  finishes an SMS whose attempt started without a recorded outcome once its lease has run out:
  ``failed``, with the :data:`UNKNOWN_OUTCOME` error and an ``unknown`` attempt (it may have
  been texted, so it is never resent; :meth:`OutboxStore.claim_due` never hands it out). The
  outbox worker calls it on every poll before it claims, so on both backends recovery happens
  at the worker's first poll after a start and, with PostgreSQL, whenever a dead replica's
  lease runs out. It returns what it finished, for the worker to count and log. (Email is
  resent: same Message-ID.)
- **Nothing derived from a code outlives the message.** The dedupe key is keyed with the
  store's own random :attr:`OutboxStore.dedupe_secret` (an HMAC, not a bare hash of the code),
  and is erased once the message expires (``expires_at``), whatever its status; bodies are
  erased when a message is finished (an SMS that may be resent once on an undelivered receipt,
  ``sms.failover_on_undelivered``, keeps its body until that resend or its expiry at most).
- **Receipts** (:mod:`.receipts`) move an accepted attempt's delivery state up, never down, in
  one conditional write, matched by provider and the provider's message id.
- **One message per Idempotency-Key, across replicas.** :meth:`OutboxStore.hold_key` reserves a
  key for one request before its abuse limits are counted (an atomic insert, seen at once by
  every replica); any other request with that key learns who holds it and answers with that
  message once it is stored. :meth:`OutboxStore.accept` stores the holder's message under the
  key it holds; :meth:`OutboxStore.release_key` gives up a key whose request was refused. A hold
  whose message was never stored (its process died) is taken over once it is older than the
  caller's ``stale_before``.
- **Purge** deletes finished messages' metadata (status, attempts, idempotency keys) and nothing
  of another port.
- **Health.** :attr:`OutboxStore.healthy` is False while the store cannot take durable writes
  (file deleted or replaced, read-only, full disk, server lost); :meth:`OutboxStore.probe`
  tries again and repairs what it can (a deleted file is written anew from the open handle), so
  the service recovers by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..message.compose import Message
from .receipts import Applied, Receipt, ReceiptTarget

FINAL = frozenset({"sent", "captured", "failed", "expired"})

# An expired message's ``last_error``: this prefix, then its last failure (the last attempt's
# error: record_attempt and retry_later keep it) or, with none, NEVER_ATTEMPTED. Written by
# ``expire_due`` here and by the outbox (otp_service.delivery.expiry.expiry_reason) alike.
EXPIRED_PREFIX = "expired before delivery: "
NEVER_ATTEMPTED = "never attempted"

UNKNOWN_OUTCOME = (
    "provider_outcome_unknown: the service stopped during this attempt; the SMS may have been "
    "sent, so it is not resent"
)


@dataclass(frozen=True)
class Attempt:
    at: float  # unix time
    provider: str
    outcome: str  # "sent", "captured", "transient", "permanent", "unknown"
    error: str | None = None
    provider_id: str | None = None  # the provider's own id of the message (support's trace)
    receipt: str | None = None  # its delivery receipt's state (store/receipts.py), once any
    receipt_at: float | None = None  # when that state was reported (unix time)
    receipt_error: str | None = None  # the carrier's error and its meaning, when undelivered


@dataclass(frozen=True)
class Accepted:
    """The answer of :meth:`OutboxStore.accept`: the message that holds this request."""

    id: str
    created: bool  # False: an earlier request (same Idempotency-Key, or a duplicate) holds it
    status: str = "queued"
    provider: str | None = None


@dataclass(frozen=True)
class KeyHold:
    """Who holds an Idempotency-Key (:meth:`OutboxStore.hold_key`)."""

    message_id: str
    stored: Accepted | None = None  # that message once stored; None while its request decides


@dataclass(frozen=True)
class Due:
    """A message claimed for an attempt, with its deadline and its last failure so far."""

    message: Message
    expires_at: float
    attempts: int
    last_error: str | None = None


@dataclass(frozen=True)
class ExpiredMessage:
    """A queued message that :meth:`OutboxStore.expire_due` marked expired."""

    id: str
    channel: str
    to: str
    attempts: int
    last_error: str | None
    request_id: str | None


@dataclass(frozen=True)
class Recovered:
    """An SMS that :meth:`OutboxStore.recover` finished as an unknown outcome."""

    id: str
    to: str
    provider: str | None
    attempts: int
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


class OutboxStore(Protocol):
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
        """Create (or migrate) the schema and erase dedupe keys of expired messages; SQLite
        also ends the leases of the previous run (it owns the file alone). Recovery of SMS cut
        mid-attempt is :meth:`recover`'s."""
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
        idempotency key, or an unexpired message with the same dedupe key. A key ``message``
        holds (:meth:`hold_key`) is kept for it. Durable on return;
        raises :class:`StoreUnavailable` when the store cannot write."""
        ...

    async def existing(
        self, idempotency_key: str | None, dedupe_key: str | None, now: float
    ) -> Accepted | None:
        """What :meth:`accept` would answer for a repeat, without storing anything."""
        ...

    async def hold_key(
        self, key: str, message_id: str, now: float, stale_before: float
    ) -> KeyHold | None:
        """Reserve the idempotency ``key`` for ``message_id`` (committed before returning, seen
        by every replica) unless another message holds it; return the holder: ``message_id``
        itself once reserved (or taken over from a hold made before ``stale_before`` whose
        message was never stored), else the other message, with its stored state when it is
        stored. None: the holder let go of the key meanwhile (ask again)."""
        ...

    async def release_key(self, key: str, message_id: str) -> None:
        """Give up ``key`` if ``message_id`` holds it and was never stored (its request was
        refused); a no-op otherwise."""
        ...

    async def recover(self, now: float) -> list[Recovered]:
        """Finish as ``failed`` (:data:`UNKNOWN_OUTCOME`, with an ``unknown`` attempt) every
        queued SMS whose attempt started without an outcome and whose lease has run out; return
        them."""
        ...

    async def claim_due(self, now: float, lease_until: float, limit: int) -> list[Due]:
        """Lease up to ``limit`` unfinished messages whose next attempt is due (never an SMS
        whose attempt started: that is :meth:`recover`'s); messages past their expiry are
        marked ``expired`` instead (and never returned). Erases the dedupe keys of every
        message past its expiry."""
        ...

    async def start_attempt(self, message_id: str, provider: str, at: float) -> None:
        """Durably note that an attempt at ``provider`` starts now (before an SMS provider is
        called). Cleared by the next :meth:`record_attempt`, :meth:`finish` or
        :meth:`retry_later` of the message."""
        ...

    async def expire_due(self, now: float) -> list[ExpiredMessage]:
        """Mark ``expired`` the unleased queued messages past their expiry and return them
        (the outbox counts and logs each). The only place a store expires a message:
        :meth:`claim_due` never hands one out past its expiry, and never expires one itself.
        ``last_error`` becomes :data:`EXPIRED_PREFIX` + the last failure (or
        :data:`NEVER_ATTEMPTED`)."""
        ...

    async def backlog(self) -> tuple[int, float | None]:
        """How many messages are not yet final, and the creation time of the oldest."""
        ...

    async def renew(self, message_ids: list[str], lease_until: float) -> None:
        """Extend the leases of messages this process is still delivering."""
        ...

    async def record_attempt(self, message_id: str, attempt: Attempt) -> None:
        """Add ``attempt`` (with its ``provider_id``, when the provider gave one) to the
        message's history; its error, when it has one, becomes the message's ``last_error``."""
        ...

    async def finish(
        self,
        message_id: str,
        status: str,
        provider: str | None,
        error: str | None,
        attempt: Attempt | None = None,
        keep_body: bool = False,
    ) -> None:
        """Mark final (sent, captured, failed, expired) and delete the body (it holds the code),
        recording ``attempt`` (with its ``provider_id``) in the same write. ``keep_body``: an
        SMS that may be resent once on an undelivered receipt keeps it until
        :meth:`claim_failover` or :meth:`erase_kept_bodies` (at its expiry at the latest)."""
        ...

    async def retry_later(self, message_id: str, next_attempt_at: float, error: str) -> None:
        """Release the lease and schedule the next attempt."""
        ...

    async def status(self, message_id: str) -> StoredStatus | None:
        """The message's status and its attempts in order, each with its ``provider_id``."""
        ...

    async def forget_duplicates(self, recipient: str | None) -> None:
        """Stop answering new messages to ``recipient`` (compared without case; to anyone when
        None) as duplicates of earlier ones by content; idempotency keys are kept."""
        ...

    async def compact(self) -> None:
        """Drop what finished messages left behind in storage (a no-op where nothing lingers)."""
        ...

    async def purge(self, finished_before: float) -> int:
        """Delete the metadata of messages finished before the given time (their status,
        attempts and idempotency keys; nothing of the other ports); how many messages."""
        ...

    # -- delivery receipts (store/receipts.py)

    async def apply_receipt(self, receipt: Receipt, now: float) -> Applied:
        """Move the state of the latest accepted attempt carrying ``receipt``'s provider id up
        to ``receipt.state`` (never down: a repeat or a lower state changes nothing), unless
        the receipt names another number than the message's."""
        ...

    async def receipt_target(self, provider: str, provider_id: str) -> ReceiptTarget | None:
        """The accepted attempt carrying this provider id, with its state now."""
        ...

    async def awaiting_receipts(
        self, provider: str, after: float, before: float, limit: int
    ) -> list[ReceiptTarget]:
        """SMS attempts accepted by ``provider`` between ``after`` and ``before`` (exclusive)
        with no final receipt yet, oldest first (what a poll for receipts asks about)."""
        ...

    async def overdue_receipts(
        self, sent_after: float, sent_before: float, limit: int
    ) -> list[ReceiptTarget]:
        """Mark ``unknown`` up to ``limit`` SMS attempts accepted between ``sent_after`` and
        ``sent_before`` with no final receipt; return them (as they were)."""
        ...

    async def claim_failover(
        self, message_id: str, provider: str, provider_id: str, now: float
    ) -> Message | None:
        """Take the one resend of a sent SMS whose attempt at ``provider`` is still
        ``undelivered`` and whose code is alive: the message (its kept body), durably marked
        as resent, or None when it was resent already, turned delivered, expired or kept no
        body."""
        ...

    async def erase_kept_bodies(self, now: float) -> None:
        """Erase the bodies kept for a resend (``finish(keep_body=True)``) of messages past
        their expiry."""
        ...
