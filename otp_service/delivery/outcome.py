"""What a request learns of its message: the outcome, the dedupe key, the store refusing."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from ..errors import ProviderError, RequestError
from ..message.compose import Message


@dataclass(frozen=True)
class Outcome:
    """Where a message stands when the request stops waiting."""

    id: str
    status: str  # sent, captured, queued, failed, expired
    provider: str | None = None
    error: ProviderError | None = None
    duplicate: bool = False


# Logto's console "send test" button always sends this; each press must arrive.
_SEND_TEST = (frozenset({"Generic", "Test"}), "000000")


def dedupe_key(message: Message, secret: bytes) -> str | None:
    """The same (channel, to, type, code) is the same message while it lives; Logto's "send
    test" (Generic with code 000000) never is.

    An HMAC under the store's random secret, not a bare hash: a code has a million values, so
    a bare hash would give it back to anyone reading the file (and the store erases the key
    when the message expires)."""
    if not message.code or (message.type in _SEND_TEST[0] and message.code == _SEND_TEST[1]):
        return None
    raw = "\0".join((message.channel, message.to.lower(), message.type, message.code))
    return hmac.new(secret, raw.encode(), hashlib.sha256).hexdigest()


class StoreUnavailableError(RequestError):
    """The outbox cannot store a message durably now: nothing was accepted."""

    def __init__(self) -> None:
        super().__init__(
            "store_unavailable", "the message store is unavailable; retry shortly", 503, 1
        )
