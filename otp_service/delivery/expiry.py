"""Expiry: a message whose lifetime ran out before a provider took it.

Decided in two moments, recorded the same way: the delivering task sees the deadline pass (the
outbox), or the worker finds a message nobody holds past it (the store's ``expire_due``, the
only place a store expires one). Either way the reason is the message's last failure, or
``never attempted`` when it has none (:func:`expiry_reason`; ``expire_due`` writes the same
rule, ``COALESCE(last_error, NEVER_ATTEMPTED)``, from the same constants): one ``last_error``
text, the same in the ``expired`` log event, and one ``otp_messages_total{status="expired"}``
count.
"""

from __future__ import annotations

import logging

from ..logs import event, mask_recipient
from ..metrics import Metrics
from ..store import EXPIRED_PREFIX, NEVER_ATTEMPTED

log = logging.getLogger("otp_service.outbox")


def expiry_reason(last_error: str | None) -> str:
    """Why a message expired: its last failure, or :data:`NEVER_ATTEMPTED` with none (every
    failed attempt leaves its error as the message's ``last_error``)."""
    return last_error or NEVER_ATTEMPTED


def expired_error(reason: str) -> str:
    """The ``last_error`` an expired message keeps."""
    return EXPIRED_PREFIX + reason


def record_expired(
    metrics: Metrics,
    *,
    id: str,
    channel: str,
    to: str,
    attempts: int,
    last_error: str | None,
    **fields: str | float | None,
) -> None:
    """Count and log one message reaching ``expired``."""
    metrics.finished(channel, "expired")
    event(
        log, logging.WARNING, "expired",
        id=id, channel=channel, to=mask_recipient(to), attempts=attempts,
        last_error=expiry_reason(last_error), **fields,
    )  # fmt: skip
