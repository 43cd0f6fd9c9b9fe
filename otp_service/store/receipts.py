"""Delivery receipts as the outbox port keeps them: one state per SMS attempt that a provider
accepted, matched by the provider's own message id (:attr:`~.outbox.Attempt.provider_id`).

A receipt moves an attempt's state up, never down: ``pending`` (the carrier has it, buffered)
< ``unknown`` (no final receipt before the horizon) < ``undelivered`` < ``delivered``. So a
repeated receipt changes nothing, an intermediate one never overwrites a final one, and a
``delivered`` beats a later ``undelivered`` for the same message id (the handset had it). Both
backends apply this rule in one conditional write (:data:`RANK_SQL`), so two replicas taking
two receipts of one message at once end in the same state.
"""

from __future__ import annotations

from dataclasses import dataclass

PENDING, UNKNOWN, UNDELIVERED, DELIVERED = "pending", "unknown", "undelivered", "delivered"
RANK = {PENDING: 1, UNKNOWN: 2, UNDELIVERED: 3, DELIVERED: 4}
FINAL_RECEIPTS = frozenset({UNDELIVERED, DELIVERED})
# The rank of the stored ``receipt`` column, in SQL both SQLite and PostgreSQL understand.
RANK_SQL = (
    "CASE receipt WHEN 'pending' THEN 1 WHEN 'unknown' THEN 2 WHEN 'undelivered' THEN 3 "
    "WHEN 'delivered' THEN 4 ELSE 0 END"
)


@dataclass(frozen=True)
class Receipt:
    """What a provider reported about one message it accepted."""

    provider: str
    provider_id: str
    state: str  # pending, undelivered, delivered (unknown is ours, never a provider's)
    at: float | None = None  # when the carrier or handset reported it (unix time), if said
    error: str | None = None  # the carrier's error code and its meaning, for undelivered
    to: str | None = None  # the number the receipt names (digits), to check it matches


@dataclass(frozen=True)
class ReceiptTarget:
    """The attempt a receipt is for, and its message."""

    message_id: str
    provider: str
    provider_id: str
    to: str  # the message's recipient (E.164)
    sent_at: float  # when the provider accepted it (the attempt's time)
    receipt: str | None  # the state it holds now
    status: str  # the message's status (sent, captured, failed ...)
    expires_at: float  # the code's end of life


@dataclass(frozen=True)
class Applied:
    """The answer of :meth:`~.outbox.OutboxStore.apply_receipt`."""

    target: ReceiptTarget | None  # None: no attempt carries this provider id
    changed: bool  # False: a repeat, or a state no higher than the one held
    mismatch: bool = False  # the receipt names another number: refused, nothing changed


def same_number(recipient: str, named: str | None) -> bool:
    """Whether a receipt's number (digits, maybe without the country code, maybe partly
    masked with ``*``) can be ``recipient``'s: receipts never move another number's state."""
    if not named:
        return True
    digits = "".join(c for c in named if c.isdigit() or c == "*")
    mine = recipient.lstrip("+")
    if len(digits) < 6 or len(digits) > len(mine):
        return False
    tail = mine[len(mine) - len(digits) :]
    return all(d == "*" or d == m for d, m in zip(digits, tail, strict=True))
