"""Storage: the Store protocol and its backends: SQLite (embedded default, one process) and
PostgreSQL (:mod:`.postgres`, imported when configured: replicas and workers), and the capture
inbox (in memory for one process)."""

from ..errors import StoreUnavailable
from .base import (
    Accepted,
    Attempt,
    Due,
    ExpiredMessage,
    Store,
    StoredStatus,
)
from .inbox import Inbox, InboxEvent, InboxQuery, MemoryInbox, UnknownMessage
from .sqlite import SqliteStore

__all__ = [
    "Accepted",
    "Attempt",
    "Due",
    "ExpiredMessage",
    "Inbox",
    "InboxEvent",
    "InboxQuery",
    "MemoryInbox",
    "SqliteStore",
    "Store",
    "StoreUnavailable",
    "StoredStatus",
    "UnknownMessage",
]
