"""Storage: the Store protocol and its backends (SQLite, embedded default for one process)."""

from .base import (
    Accepted,
    Attempt,
    Due,
    Store,
    StoredStatus,
    StoreUnavailable,
)
from .sqlite import SqliteStore

__all__ = ["Accepted", "Attempt", "Due", "SqliteStore", "Store", "StoreUnavailable", "StoredStatus"]
