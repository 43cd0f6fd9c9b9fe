"""The capture provider: keeps messages in a bounded in-memory inbox instead of sending them."""

from __future__ import annotations

import sys
from collections import OrderedDict

from ..message.compose import Message
from .base import SendResult

ANSWER_MAX_BYTES = 8 * 1024 * 1024  # what one listing may hold (its JSON is about as big)


def message_size(message: Message) -> int:
    """Roughly the memory a captured message holds (its strings dominate)."""
    texts = (message.text, message.html, message.subject, message.code, message.link, message.to)
    return sum(sys.getsizeof(t) for t in texts if t) + sum(
        sys.getsizeof(v) for v in message.params.values() if isinstance(v, str)
    )


class CaptureInbox:
    """Captured messages, newest last; the oldest are dropped past ``max_messages`` or past
    ``max_bytes`` in all (payload values can make one message large)."""

    def __init__(self, max_messages: int = 1000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0
        self._messages: OrderedDict[str, Message] = OrderedDict()
        self._sizes: dict[str, int] = {}

    def add(self, message: Message) -> None:
        size = message_size(message)
        if message.id in self._messages:
            self.bytes -= self._sizes[message.id]
        self._messages[message.id] = message
        self._sizes[message.id] = size
        self.bytes += size
        while len(self._messages) > 1 and (
            len(self._messages) > self.max_messages or self.bytes > self.max_bytes
        ):
            dropped, _ = self._messages.popitem(last=False)
            self.bytes -= self._sizes.pop(dropped)

    def get(self, message_id: str) -> Message | None:
        return self._messages.get(message_id)

    def list(
        self,
        *,
        to: str | None = None,
        channel: str | None = None,
        limit: int = 50,
        max_bytes: int | None = None,
    ) -> list[Message]:
        """Newest first, optionally only one recipient (normalised) or one channel; at most
        ``limit`` messages and about ``max_bytes`` (default: an eighth of the inbox, at most
        8 MiB), always at least the newest match."""
        if max_bytes is None:
            max_bytes = min(ANSWER_MAX_BYTES, self.max_bytes // 8)
        found: list[Message] = []
        total = 0
        for message in reversed(self._messages.values()):
            if (to is None or message.to.lower() == to.lower()) and (
                channel is None or message.channel == channel
            ):
                total += self._sizes[message.id]
                if found and total > max_bytes:
                    break
                found.append(message)
                if len(found) >= limit:
                    break
        return found

    def clear(self) -> int:
        count = len(self._messages)
        self._messages.clear()
        self._sizes.clear()
        self.bytes = 0
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
