"""Proof that a request has reached its handler, for tests of requests that wait.

A test that sends something "while a request waits" must know the request is waiting, not
still on its way: otherwise a late request finds the message at once and the test passes
without anything having woken it. :func:`handler_reached` adds aiohttp middleware (innermost,
so it runs right before the handler) that sets an event when a request for a path gets there.
The handler runs on from the middleware without yielding to the loop until it first awaits,
so a test woken by the event runs only once the handler is parked in its wait.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler


def handler_reached(app: web.Application, path: str) -> asyncio.Event:
    """An event set when a request for ``path`` reaches its handler in ``app`` (not started)."""
    reached = asyncio.Event()

    @web.middleware
    async def note(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == path:
            reached.set()
        return await handler(request)

    app.middlewares.append(note)
    return reached
