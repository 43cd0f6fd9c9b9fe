"""Message ids: 32 lowercase hex digits, ordered by creation time, unguessable.

The first 12 digits are the creation time in milliseconds since the epoch, the other 20 are
80 random bits (as a ULID or a UUIDv7 does). Time order matters for the stores: a new id goes
at the end of the primary-key B-tree, so an insert touches one page however many messages are
kept; with random ids (``uuid4``) each insert dirtied a page somewhere in an index that
outgrows the page cache, and the accepting rate fell as the store filled (83% of a fresh
store's rate after 150,000 messages). The random part keeps ids unguessable: the status API
answers anyone who knows one.
"""

from __future__ import annotations

import secrets
import time


def new_message_id(now: float | None = None) -> str:
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis & 0xFFFF_FFFF_FFFF:012x}{secrets.randbits(80):020x}"
