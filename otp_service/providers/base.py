"""The provider seam: ``send(message) -> SendResult`` and ``close()``.

A provider maps every SDK or transport failure to
:class:`~otp_service.errors.TransientProviderError` (a later attempt may work) or
:class:`~otp_service.errors.PermanentProviderError` at its own edge; nothing from an SDK leaks
past this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..message.compose import Message
from ..store.receipts import Receipt


@dataclass(frozen=True)
class SendResult:
    provider: str
    status: str  # "sent" once handed to a real provider, "captured" for the capture inbox
    provider_id: str | None = None


class Provider(Protocol):
    name: str

    async def send(self, message: Message) -> SendResult:
        """Deliver ``message`` or raise a ProviderError."""
        ...

    async def close(self) -> None:
        """Release connections; the provider is not used afterwards."""
        ...


@runtime_checkable
class ReceiptSource(Protocol):
    """A provider that is asked for delivery receipts (Aliyun's QuerySendDetails) instead of,
    or as well as, calling us back with them."""

    async def query_receipt(self, provider_id: str, to: str, sent_at: float) -> Receipt | None:
        """The receipt of the message ``provider_id`` (to ``to``, accepted at ``sent_at``),
        or None while the provider has none; raises a ProviderError."""
        ...
