"""Winding down background tasks at shutdown: a grace period, then cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def drain(tasks: Iterable[asyncio.Task[Any]], grace_seconds: float) -> int:
    """Wait for ``tasks`` up to ``grace_seconds``, cancel those still running and wait for them
    to end; how many had to be cancelled."""
    running = set(tasks)
    if not running:
        return 0
    _, pending = await asyncio.wait(running, timeout=grace_seconds)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    return len(pending)
