"""Retrying with backoff: the one place where a delay between attempts is decided.

Every loop that tries something again (a provider send, a store write, a lost connection, a
read of Logto's API) takes its delays from :class:`Backoff` and, where it simply calls until a
call succeeds, uses :func:`retry`. Delays double from ``first`` up to ``cap``, with jitter in
the upper half of each step (``[base / 2, base]``), so many processes that failed together do
not come back together; a server's own ``Retry-After`` is a floor, never shortened.

Only what can succeed later is retried: :func:`retry` takes the exception types worth another
try, and anything else (a refusal that will never change) propagates at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def backoff_delay(attempt: int, first: float, cap: float, at_least: float | None = None) -> float:
    """The delay before attempt ``attempt + 1`` (``attempt`` >= 1 attempts made so far)."""
    base = min(cap, first * 2 ** max(0, attempt - 1))
    delay = random.uniform(base / 2, base) if base > 0 else 0.0
    return max(delay, at_least or 0.0)


@dataclass
class Backoff:
    """The delays of one retry loop: :meth:`next` grows them, :meth:`reset` starts over after
    a success."""

    first: float
    cap: float
    attempts: int = 0

    def next(self, at_least: float | None = None) -> float:
        """Count a failure and return how long to wait before the next try."""
        self.attempts += 1
        return backoff_delay(self.attempts, self.first, self.cap, at_least)

    def reset(self) -> None:
        self.attempts = 0

    async def wait(self, at_least: float | None = None) -> float:
        """Sleep for :meth:`next`; return the seconds slept."""
        delay = self.next(at_least)
        await asyncio.sleep(delay)
        return delay


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    backoff: Backoff,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """Await ``call()`` until it returns, waiting :meth:`Backoff.next` after each failure of a
    ``retry_on`` type (``on_retry(error, delay)`` is told first, to log it); any other
    exception propagates at once. Cancel the caller to give up."""
    while True:
        try:
            return await call()
        except retry_on as exc:
            delay = backoff.next()
            if on_retry is not None:
                on_retry(exc, delay)
        await asyncio.sleep(delay)
