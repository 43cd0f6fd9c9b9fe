"""A message as the backends store it: one compact JSON text (outbox bodies, captured
messages)."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from typing import Any

from ..message.compose import Message

_FIELDS = tuple(f.name for f in fields(Message))
_KNOWN = frozenset(_FIELDS)


def message_to_json(message: Message) -> str:
    # Not dataclasses.asdict: it deep-copies every value, a measurable cost per request.
    data = {name: getattr(message, name) for name in _FIELDS}
    data["created_at"] = message.created_at.isoformat()
    data["params"] = dict(message.params)
    data["headers"] = dict(message.headers)
    if message.source is None:  # what a release before `source` can read back (Logto's)
        del data["source"]
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def message_from_json(text: str) -> Message:
    """A stored message; keys this release does not know (written by a newer one during a
    rolling deploy) are left out rather than failing the read."""
    data: dict[str, Any] = json.loads(text)
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    return Message(**{key: value for key, value in data.items() if key in _KNOWN})


def request_id_of(body: str | None) -> str | None:
    """The request id kept in a stored body, or None (no body, or one that cannot be read)."""
    if not body:
        return None
    try:
        found = json.loads(body).get("request_id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None
