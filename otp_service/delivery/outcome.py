"""The outcome of a send: what its caller answers and what its log line says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import OtpServiceError, RateLimitedRequest
from ..logs import mask_recipient
from ..message.compose import Message


@dataclass(frozen=True)
class Outcome:
    """Where a send stands when its caller stops waiting.

    ``status``: sent, captured, queued, failed, expired, ``unknown`` (an SMS reached its
    provider and the answer was lost: stored as failed, never resent) or ``refused`` (nothing
    was accepted: invalid, over a limit, the store unavailable, shutting down). ``error`` says
    why it was refused, failed, is unknown or expired (for ``queued``: the last transient
    failure, if any); ``to`` is masked. ``id``, ``type`` and ``to`` are None when the request
    was refused before they were known.
    """

    channel: str
    status: str
    id: str | None = None
    type: str | None = None
    to: str | None = None
    provider: str | None = None
    duplicate: bool = False
    error: OtpServiceError | None = None

    @classmethod
    def of(
        cls,
        message: Message,
        status: str,
        *,
        id: str | None = None,
        provider: str | None = None,
        duplicate: bool = False,
        error: OtpServiceError | None = None,
    ) -> Outcome:
        """An outcome for ``message`` (``id``: a repeat answers with the first message's)."""
        return cls(
            message.channel, status, id or message.id, message.type, mask_recipient(message.to),
            provider, duplicate, error,
        )  # fmt: skip

    @property
    def rule(self) -> str | None:
        """The abuse limit that refused the request (its name in the config)."""
        return self.error.rule if isinstance(self.error, RateLimitedRequest) else None

    def log_fields(self) -> dict[str, Any]:
        """The fields of the request's log line (None values are left out by the logger)."""
        failed = self.error is not None and self.status != "queued"
        return {
            "channel": self.channel, "type": self.type, "id": self.id, "to": self.to,
            "outcome": self.status, "duplicate": self.duplicate or None,
            "code": self.error.code if failed and self.error is not None else None,
            "rule": self.rule,
        }  # fmt: skip
