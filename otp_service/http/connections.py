"""The listening socket, guarded against slow and idle clients.

aiohttp reads requests without a deadline for the headers and keeps idle connections for about
an hour, so a thousand clients sending one byte at a time hold every file descriptor of the
process. Here every connection passes through :class:`_Guarded`, which

- closes a connection that has not sent a complete request head within
  ``server.header_timeout_seconds`` (the body then has its own deadline in the handler);
- counts open connections against a cap: ``server.max_connections``, and never more than the
  descriptor limit (``ulimit -n``) leaves room for (the store, SMTP and SMS connections need
  some). At the cap, the oldest connection still without a complete request head is dropped to
  make room (a slow client yields to a new one); when every connection is busy with a real
  request, the new one gets a plain ``503`` (``too_many_connections``) and is closed.

Idle keep-alive connections are closed by aiohttp itself after ``server.keepalive_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import OrderedDict
from typing import Any

from aiohttp import web

log = logging.getLogger("otp_service.web")
RESERVED_DESCRIPTORS = 64  # store, SMTP pool, SMS clients, logs, the listener itself
_END_OF_HEAD = b"\r\n\r\n"
_BODY = json.dumps(
    {"error": {"code": "too_many_connections", "message": "too many connections; retry shortly"}}
).encode()
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


def connection_cap(configured: int) -> int:
    """``configured``, lowered to what the process's descriptor limit allows."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(8, min(configured, soft - RESERVED_DESCRIPTORS))


class Guard:
    """Shared state of the guarded listener: open connections and those without a request."""

    def __init__(self, header_timeout: float, cap: int) -> None:
        self.header_timeout = header_timeout
        self.cap = cap
        self.open = 0
        self.refused = 0
        self.dropped_slow = 0
        self.waiting: OrderedDict[_Guarded, None] = OrderedDict()  # no complete head yet


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: deadline for the head, connection cap."""

    def __init__(self, guard: Guard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.admitted = False
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        guard = self.guard
        if guard.open >= guard.cap:
            if guard.waiting:  # make room: the oldest client that is still not talking
                oldest = next(iter(guard.waiting))
                oldest.drop("room for a new connection")
            else:
                guard.refused += 1
                transport.write(REFUSAL)
                transport.close()
                return
        self.admitted = True
        guard.open += 1
        guard.waiting[self] = None
        self.timer = asyncio.get_running_loop().call_later(
            guard.header_timeout, self.drop, "no complete request head in time"
        )
        self.inner.connection_made(transport)

    def drop(self, why: str) -> None:
        self.head_done()
        self.guard.dropped_slow += 1
        if self.transport is not None:
            log.debug("closing a connection: %s", why)
            self.transport.abort()

    def head_done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.guard.waiting.pop(self, None)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if self.timer is not None:
            if _END_OF_HEAD in self.tail + data:
                self.head_done()
            else:
                self.tail = data[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.head_done()
        self.guard.open -= 1
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    header_timeout: float,
    max_connections: int,
) -> tuple[asyncio.Server, Guard]:
    """Listen on ``host:port`` for ``runner``'s app, every connection guarded."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    guard = Guard(header_timeout, connection_cap(max_connections))

    def factory() -> asyncio.Protocol:
        inner: Any = server()
        return _Guarded(guard, inner)

    listener = await asyncio.get_running_loop().create_server(
        factory, host, port, reuse_address=True, backlog=1024
    )
    return listener, guard
