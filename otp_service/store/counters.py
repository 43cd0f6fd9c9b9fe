"""The counters port: abuse-limit counters (GCRA), and their in-memory backend.

:class:`CounterStore` is what the limiter needs (provider rates come next). Backends: SQLite and
PostgreSQL keep the counters next to the outbox (:mod:`.sqlite`, :mod:`.postgres`), so a
restart is no fresh quota and replicas sharing a database share counts; :class:`Counters` keeps
them in this process's memory only. Every backend keeps these promises
(tests/test_counters_store.py holds each to them):

- **One rule**: :func:`gcra`, one stored time per key, O(1) per event; a refused event is not
  counted. Keys come canonical from :mod:`otp_service.text.limit_keys` and are stored as keyed
  hashes, never an address in the clear.
- **Bounded**: entries whose time has passed hold nothing and are forgotten by the backend
  itself (no other port's purge touches them); SQLite and memory hold at most about
  ``limits.max_keys`` entries per window length, dropping the oldest generation first under a
  flood of distinct keys (a fresh allowance for the keys it held).
- **Durable where stored**: SQLite and PostgreSQL counts survive a restart; counting costs the
  send path no commit of its own (SQLite writes changed counters with the engine's next batch,
  the accept of the same request).

The Generic Cell Rate Algorithm keeps one number per key, its *theoretical arrival time*
(TAT). A limit of ``count`` per ``window`` has an emission interval ``T = window / count``.
An event at ``now`` is allowed when ``max(TAT, now) + T - now <= window``; then
``TAT = max(TAT, now) + T``. Otherwise it is refused (and not counted) and the caller may
retry after ``max(TAT, now) + T - window - now`` seconds. So ``count`` events may come at once
(a user asking twice for a code is fine), after which the allowance refills at ``count`` per
``window``: in any interval of length ``t`` at most ``count + t * count / window`` events pass,
never the ``2 * count`` a fixed window lets through around its boundary. A key whose TAT has
passed holds nothing (it equals a fresh key) and may be forgotten.

Memory (:class:`Counters`): one table per window length, in two generations. A key is written
to the current generation; the previous one is still read. Every ``window`` seconds the current
generation becomes the previous one and the old previous one is dropped whole: whatever it held
was written over a window ago, so its TAT has passed and dropping it loses no count. Keys are
kept as keyed hashes (salted 64-bit ones in memory alone). Past ``max_keys`` entries in one
table the previous generation is dropped early, which bounds memory under a flood of distinct
keys at the cost of a fresh allowance for the keys it held (counted in ``evicted``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class CounterStore(Protocol):
    async def hit(self, key: str, limit: int, window: float, now: float) -> float | None:
        """Count one event for ``key`` by GCRA (``limit`` at once, refilled at ``limit`` per
        ``window``); None when allowed, else the seconds until it would be (a refused event
        is not counted)."""
        ...

    async def reset_counters(self, keys: Sequence[str] | None) -> None:
        """Forget the counts of ``keys`` (of every key when None)."""
        ...


def gcra(tat: float | None, count: int, window: float, now: float) -> tuple[float | None, float]:
    """One event against a stored TAT: ``(retry_after or None, the TAT to store)``.

    Every backend applies exactly this rule (in memory here and for SQLite, a shared database in
    one statement), so limits mean the same whatever holds the counters.
    """
    interval = window / count
    start = now if tat is None or tat < now else tat
    new_tat = start + interval
    if new_tat - now > window + 1e-9:
        return new_tat - window - now, start
    return None, new_tat


@dataclass
class _Table:
    started: float
    current: dict[Hashable, float] = field(default_factory=dict)
    previous: dict[Hashable, float] = field(default_factory=dict)


class Counters:
    """GCRA counters for many keys in this process's memory, in bounded tables (one per window
    length): the memory backend of :class:`CounterStore`, and the SQLite store's working set.

    ``slot`` turns a key into what is kept (by default a salted 64-bit hash).
    """

    def __init__(
        self, max_keys: int = 500_000, slot: Callable[[str], Hashable] | None = None
    ) -> None:
        self.max_keys = max_keys
        self.evicted = 0  # entries dropped early to stay within max_keys
        salt = secrets.token_hex(16)  # hash() is siphash: unknown salt, no crafted keys
        self.slot: Callable[[str], Hashable] = slot or (lambda key: hash(salt + key))
        self._tables: dict[float, _Table] = {}

    def __len__(self) -> int:
        return sum(len(t.current) + len(t.previous) for t in self._tables.values())

    def _table(self, window: float, now: float) -> _Table:
        table = self._tables.get(window)
        if table is None:
            table = self._tables[window] = _Table(now)
        elif now - table.started >= window:
            table.previous = table.current if now - table.started < 2 * window else {}
            table.current, table.started = {}, now
        return table

    def count(
        self, key: str, limit: int, window: float, now: float
    ) -> tuple[float | None, Hashable, float]:
        """Count one event for ``key``: ``(retry_after or None, its slot, its TAT now)``."""
        table = self._tables.get(window)
        if table is None or now - table.started >= window:
            table = self._table(window, now)
        slot = self.slot(key)
        tat = table.current.get(slot)
        if tat is None:
            tat = table.previous.get(slot)
        retry_after, new_tat = gcra(tat, limit, window, now)
        if retry_after is None:
            table.current[slot] = new_tat
            if len(table.current) + len(table.previous) > self.max_keys:
                self.evicted += len(table.previous)
                if table.previous:
                    table.previous = {}
                else:  # the current generation alone is full: start a new one early
                    table.previous, table.current, table.started = table.current, {}, now
        return retry_after, slot, new_tat

    def keep(self, slot: Hashable, window: float, tat: float, now: float) -> None:
        """Hold a TAT read back from storage (a store reopening)."""
        if tat > now:
            self._table(window, now).current[slot] = tat

    def entries(self, now: float) -> list[tuple[Hashable, float, float]]:
        """Every live entry as ``(slot, window, TAT)`` (to be stored)."""
        found: dict[tuple[Hashable, float], float] = {}
        for window, table in self._tables.items():
            for generation in (table.previous, table.current):  # the current one wins
                for slot, tat in generation.items():
                    if tat > now:
                        found[(slot, window)] = tat
        return [(slot, window, tat) for (slot, window), tat in found.items()]

    def forget(self, slots: Iterable[Hashable] | None) -> None:
        """Drop the entries of ``slots`` (every entry when None)."""
        if slots is None:
            self._tables.clear()
            return
        for slot in slots:
            for table in self._tables.values():
                table.current.pop(slot, None)
                table.previous.pop(slot, None)

    # -- the counters port

    async def hit(self, key: str, limit: int, window: float, now: float) -> float | None:
        return self.count(key, limit, window, now)[0]

    async def reset_counters(self, keys: Sequence[str] | None) -> None:
        self.forget(None if keys is None else [self.slot(key) for key in keys])
