"""Expiry: a message whose lifetime ran out before a provider took it.

Decided in two moments, recorded the same way: the delivering task sees the deadline pass (the
outbox), or the worker finds a message nobody holds past it (the store's ``expire_due``, whose
``last_error`` is written with the same words). Either way one ``last_error`` text, one
``expired`` log event and one ``otp_messages_total{status="expired"}`` count.
"""

from __future__ import annotations

import logging

from ..logs import event, mask_recipient
from ..metrics import Metrics

log = logging.getLogger("otp_service.outbox")
PREFIX = "expired before delivery: "
NEVER_ATTEMPTED = "never attempted"  # the store writes the same words (expire_due)


def expiry_reason(last_error: str | None, attempts: int = 0) -> str:
    """Why a message expired: its last failure, when one is known."""
    if last_error:
        return last_error
    if attempts:  # tried before this process took it up again
        return f"no attempt could start in time after {attempts}"
    return NEVER_ATTEMPTED


def expired_error(reason: str) -> str:
    """The ``last_error`` an expired message keeps."""
    return PREFIX + reason


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
        last_error=expiry_reason(last_error, attempts), **fields,
    )  # fmt: skip
