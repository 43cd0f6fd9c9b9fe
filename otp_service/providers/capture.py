"""The capture provider: delivers into the capture inbox instead of sending anything."""

from __future__ import annotations

from ..config import Config
from ..message.compose import Message
from ..store.inbox import Inbox
from .base import SendResult


class CaptureProvider:
    """Delivers into an :class:`~otp_service.store.inbox.Inbox`; never fails."""

    name = "capture"

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def send(self, message: Message) -> SendResult:
        await self.inbox.add(message)
        return SendResult(provider=self.name, status="captured", provider_id=message.id)

    async def close(self) -> None:
        return None


def build(config: Config, inbox: Inbox) -> CaptureProvider:
    """The provider of its registry entry: messages kept in ``inbox``."""
    return CaptureProvider(inbox)
