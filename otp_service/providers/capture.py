"""The capture provider: keeps messages in a bounded in-memory inbox instead of sending them."""

from __future__ import annotations

from collections import OrderedDict

from ..message.compose import Message
from .base import SendResult


class CaptureInbox:
    """Captured messages, newest last; the oldest is dropped past ``max_messages``."""

    def __init__(self, max_messages: int = 1000) -> None:
        self.max_messages = max_messages
        self._messages: OrderedDict[str, Message] = OrderedDict()

    def add(self, message: Message) -> None:
        self._messages[message.id] = message
        while len(self._messages) > self.max_messages:
            self._messages.popitem(last=False)

    def get(self, message_id: str) -> Message | None:
        return self._messages.get(message_id)

    def list(
        self, *, to: str | None = None, channel: str | None = None, limit: int = 50
    ) -> list[Message]:
        """Newest first, optionally only one recipient (normalised) or one channel."""
        found: list[Message] = []
        for message in reversed(self._messages.values()):
            if (to is None or message.to.lower() == to.lower()) and (
                channel is None or message.channel == channel
            ):
                found.append(message)
                if len(found) >= limit:
                    break
        return found

    def clear(self) -> int:
        count = len(self._messages)
        self._messages.clear()
        return count


class CaptureProvider:
    """Delivers into a :class:`CaptureInbox`; never fails."""

    name = "capture"

    def __init__(self, inbox: CaptureInbox) -> None:
        self.inbox = inbox

    async def send(self, message: Message) -> SendResult:
        self.inbox.add(message)
        return SendResult(provider=self.name, status="captured", provider_id=message.id)

    async def close(self) -> None:
        return None
