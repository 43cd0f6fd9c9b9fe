"""Durable storage of accepted messages (the outbox)."""

from .base import Accepted, Attempt, Due, Store, StoredStatus
from .sqlite import SqliteStore

__all__ = ["Accepted", "Attempt", "Due", "SqliteStore", "Store", "StoredStatus"]
