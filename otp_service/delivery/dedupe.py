"""The dedupe key: what makes two requests the same message while it lives."""

from __future__ import annotations

import hashlib
import hmac

from ..message.compose import Message

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
