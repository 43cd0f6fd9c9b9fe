"""``limits.provider_rate``: at most ``rate`` sends per second to one provider.

The rate is the operator's number for the whole service, not for each process. With one
process (the SQLite store) a :class:`LocalPacer` spaces the sends in memory, as it always did.
With a shared store (PostgreSQL: several workers, several replicas) a :class:`SharedPacer`
counts every send in the store's counters, by the same GCRA as the abuse limits
(:func:`otp_service.store.counters.gcra`, one allowance of 1 refilled every ``1 / rate``
seconds), so all processes together send at most ``rate`` per second plus one: in any interval
of ``t`` seconds at most ``1 + rate * t`` sends start.

A message whose turn has not come waits (it is not failed): the waiters of one process line up
behind one lock, and only the first of them asks the store, sleeping until the time the store
says; so a long queue costs the store one question per send and process, not one per waiter.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from ..store import CounterStore

KEY_PREFIX = "provider_rate:"  # counted under these keys, apart from the abuse limits'


class Pacer(Protocol):
    async def wait(self) -> None:
        """Return when this send may start."""
        ...


class LocalPacer:
    """Spaces sends to at most ``rate`` per second in this process."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self.next_at)
        self.next_at = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class SharedPacer:
    """Spaces sends to at most ``rate`` per second across every process counting in ``store``."""

    def __init__(self, store: CounterStore, provider: str, rate: float) -> None:
        self.store = store
        self.key = KEY_PREFIX + provider
        self.interval = 1.0 / rate
        self._turn = asyncio.Lock()  # this process's waiters, first come first served

    async def wait(self) -> None:
        async with self._turn:
            while True:
                retry_after = await self.store.hit(self.key, 1, self.interval, time.time())
                if retry_after is None:
                    return
                await asyncio.sleep(min(max(retry_after, 0.001), self.interval))


def pacer(provider: str, rate: float, shared: CounterStore | None) -> Pacer:
    """The pacer of ``provider``: across the processes of ``shared`` when given."""
    return LocalPacer(rate) if shared is None else SharedPacer(shared, provider, rate)
