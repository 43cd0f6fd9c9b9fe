"""Abuse-limit counters in memory: GCRA, O(1) per event, bounded memory.

The Generic Cell Rate Algorithm keeps one number per key, its *theoretical arrival time*
(TAT). A limit of ``count`` per ``window`` has an emission interval ``T = window / count``.
An event at ``now`` is allowed when ``max(TAT, now) + T - now <= window``; then
``TAT = max(TAT, now) + T``. Otherwise it is refused (and not counted) and the caller may
retry after ``max(TAT, now) + T - window - now`` seconds. So ``count`` events may come at once
(a user asking twice for a code is fine), after which the allowance refills at ``count`` per
``window``: in any interval of length ``t`` at most ``count + t * count / window`` events pass,
never the ``2 * count`` a fixed window lets through around its boundary. A key whose TAT has
passed holds nothing (it equals a fresh key) and may be forgotten.

Memory: one table per window length, in two generations. A key is written to the current
generation; the previous one is still read. Every ``window`` seconds the current generation
becomes the previous one and the old previous one is dropped whole: whatever it held was
written over a window ago, so its TAT has passed and dropping it loses no count. Keys are kept
as salted 64-bit hashes (no address is held in the clear). Past ``max_keys`` entries in one
table the previous generation is dropped early, which bounds memory under a flood of distinct
keys at the cost of a fresh allowance for the keys it held (counted in ``evicted``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field


def gcra(tat: float | None, count: int, window: float, now: float) -> tuple[float | None, float]:
    """One event against a stored TAT: ``(retry_after or None, the TAT to store)``.

    Every backend applies exactly this rule (the SQLite store in memory, a shared database in
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
    current: dict[int, float] = field(default_factory=dict)
    previous: dict[int, float] = field(default_factory=dict)


class Counters:
    """GCRA counters for many keys, in bounded tables (one per window length)."""

    def __init__(self, max_keys: int = 500_000) -> None:
        self.max_keys = max_keys
        self.evicted = 0  # entries dropped early to stay within max_keys
        self._salt = secrets.token_hex(16)  # hash() is siphash: unknown salt, no crafted keys
        self._tables: dict[float, _Table] = {}

    def __len__(self) -> int:
        return sum(len(t.current) + len(t.previous) for t in self._tables.values())

    def hit(self, key: str, count: int, window: float, now: float) -> float | None:
        """Count one event for ``key``; None when allowed, else seconds until it would be."""
        table = self._tables.get(window)
        if table is None:
            table = self._tables[window] = _Table(now)
        elif now - table.started >= window:
            table.previous = table.current if now - table.started < 2 * window else {}
            table.current, table.started = {}, now
        slot = hash(self._salt + key)
        tat = table.current.get(slot)
        if tat is None:
            tat = table.previous.get(slot)
        retry_after, new_tat = gcra(tat, count, window, now)
        if retry_after is None:
            table.current[slot] = new_tat
            if len(table.current) + len(table.previous) > self.max_keys:
                self.evicted += len(table.previous)
                if table.previous:
                    table.previous = {}
                else:  # the current generation alone is full: start a new one early
                    table.previous, table.current, table.started = table.current, {}, now
        return retry_after

    async def reset_counters(self, keys: Sequence[str] | None) -> None:
        """Forget the counts of ``keys`` (of every key when None)."""
        if keys is None:
            self._tables.clear()
            return
        for key in keys:
            slot = hash(self._salt + key)
            for table in self._tables.values():
                table.current.pop(slot, None)
                table.previous.pop(slot, None)
