"""The provider seam: ``send(message) -> SendResult`` and ``close()``.

A provider maps every SDK or transport failure to
:class:`~otp_service.errors.TransientProviderError` (a later attempt may work) or
:class:`~otp_service.errors.PermanentProviderError` at its own edge; nothing from an SDK leaks
past this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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


@dataclass(frozen=True)
class Callback:
    """A provider's call to our receipt route, as the wire brought it (the web layer fills it
    in; the provider's receipt reader makes sense of it)."""

    method: str
    url: str  # the URL the provider called: server.public_url and the path (signatures cover it)
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)  # a form body
    json: Any = None  # a JSON body, parsed
    headers: Mapping[str, str] = field(default_factory=dict)


class ReceiptReader(Protocol):
    """Reads a provider's delivery receipt callbacks (``/v1/receipts/<provider>``)."""

    batched: bool
    """True: one call carries many receipts and is answered 200 whatever each matched (the
    provider would send the whole batch again); False: a receipt for no message is 404."""

    answer: Any
    """The JSON body to answer a call with once taken (None: 204 without a body)."""

    def read(self, callback: Callback) -> list[Receipt]:
        """The receipts ``callback`` carries, its signature checked; raises
        :class:`~otp_service.errors.ReceiptRefused` (unsigned, forged, malformed)."""
        ...
