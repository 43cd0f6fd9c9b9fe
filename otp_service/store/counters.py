"""Abuse-limit counters kept in this process's memory: a count per key per fixed window."""

from __future__ import annotations

import math
from collections.abc import Sequence


class WindowCounters:
    """:meth:`Store.hit` and :meth:`Store.reset_counters` for a store used by one process."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}

    async def hit(self, key: str, limit: int, window: float, now: float) -> float | None:
        start = math.floor(now / window) * window
        window_start, count = self._windows.get(key, (start, 0))
        if window_start != start:
            window_start, count = start, 0
        if count >= limit:
            return window_start + window - now
        self._windows[key] = (window_start, count + 1)
        if len(self._windows) > 100_000:  # drop windows that are over
            self._windows = {k: v for k, v in self._windows.items() if v[0] == start}
        return None

    async def reset_counters(self, keys: Sequence[str] | None) -> None:
        for key in list(self._windows) if keys is None else keys:
            self._windows.pop(key, None)
