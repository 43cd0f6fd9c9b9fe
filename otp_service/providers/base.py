"""The provider seam: ``send(message) -> SendResult`` and ``close()``.

A provider maps every SDK or transport failure to
:class:`~otp_service.errors.TransientProviderError` (a later attempt may work) or
:class:`~otp_service.errors.PermanentProviderError` at its own edge; nothing from an SDK leaks
past this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..message.compose import Message


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
