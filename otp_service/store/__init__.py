"""Storage, by port: the outbox (:mod:`.outbox`: messages, attempts, leases, idempotency,
dedupe), the counters (:mod:`.counters`: abuse limits) and the inbox (:mod:`.inbox`: captured
messages and their live events). Backends: SQLite (embedded default, one process: outbox and
counters), PostgreSQL (:mod:`.postgres` and :mod:`.pg_inbox`, imported when configured:
replicas and workers; all three ports) and memory (:class:`Counters`, :class:`MemoryInbox`)."""

from ..errors import StoreUnavailable
from .counters import Counters, CounterStore
from .inbox import Inbox, InboxEvent, InboxQuery, MemoryInbox, UnknownMessage
from .outbox import (
    EXPIRED_PREFIX,
    NEVER_ATTEMPTED,
    Accepted,
    Attempt,
    Due,
    ExpiredMessage,
    KeyHold,
    OutboxStore,
    Recovered,
    StoredStatus,
)
from .sqlite import SqliteStore

__all__ = [
    "EXPIRED_PREFIX",
    "NEVER_ATTEMPTED",
    "Accepted",
    "Attempt",
    "CounterStore",
    "Counters",
    "Due",
    "ExpiredMessage",
    "Inbox",
    "InboxEvent",
    "InboxQuery",
    "KeyHold",
    "MemoryInbox",
    "OutboxStore",
    "Recovered",
    "SqliteStore",
    "StoreUnavailable",
    "StoredStatus",
    "UnknownMessage",
]
