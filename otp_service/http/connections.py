"""The listening socket, guarded against slow and idle clients.

aiohttp reads requests without a deadline for the headers and keeps idle connections for about
an hour, so a thousand clients sending one byte at a time hold every file descriptor of the
process. Here every connection passes through :class:`_Guarded`, which

- closes a connection that has not sent a complete request head within
  ``server.header_timeout_seconds`` (the body then has its own deadline in the handler);
- counts open connections against a cap: ``server.max_connections``, and never more than the
  descriptor limit (``ulimit -n``) leaves room for (the store, SMTP and SMS connections, the
  SMTP intake's own cap and the refusals below need some). At the cap, the oldest connection
  still without a complete request head is dropped to make room (a slow client yields to a new
  one), else an idle keep-alive connection (one that finished its request and sent nothing
  since); when every connection is busy with a real request, the new one gets a plain ``503``
  (``too_many_connections``).
- makes that ``503`` readable: closing a socket whose request was never read makes the kernel
  send a reset, which can destroy the answer before the client reads it. So the refusal is
  written, the connection half-closed, what the client still sends read and discarded for at
  most :data:`REFUSAL_LINGER_SECONDS`, then closed. At most :data:`MAX_REFUSING` connections
  linger at once (each holds a descriptor); beyond, a refusal is written and closed at once.
- gives a keep-alive connection's next request the same head deadline as the first.

Idle keep-alive connections are closed by aiohttp itself after ``server.keepalive_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .headers import SECURITY_HEADERS

log = logging.getLogger("otp_service.web")
RESERVED_DESCRIPTORS = 64  # store, SMTP pool, SMS clients, logs, the listener itself
MAX_REFUSING = 64  # refused connections lingering so their 503 is read (each one a descriptor)
# Sockets accepted but not yet seen by a protocol (asyncio accepts up to 100 per wake-up and
# hands them over a loop turn or two later; dropped ones close a turn later): room for a burst.
ACCEPT_BURST = 256
REFUSAL_LINGER_SECONDS = 1.0
_END_OF_HEAD = b"\r\n\r\n"
_BODY = json.dumps(
    {"error": {"code": "too_many_connections", "message": "too many connections; retry shortly"}}
).encode()
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    + b"".join(f"{name}: {value}\r\n".encode() for name, value in SECURITY_HEADERS.items())
    + b"Connection: close\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


def connection_cap(configured: int, reserved: int = 0) -> int:
    """``configured``, lowered to what the process's descriptor limit allows once ``reserved``
    descriptors (e.g. the SMTP intake's connections) are set aside."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(
        8, min(configured, soft - RESERVED_DESCRIPTORS - MAX_REFUSING - ACCEPT_BURST - reserved)
    )


class Guard:
    """Shared state of the guarded listener: open connections and those without a request."""

    def __init__(self, header_timeout: float, cap: int) -> None:
        self.header_timeout = header_timeout
        self.cap = cap
        self.open = 0
        self.refused = 0
        self.dropped_slow = 0
        self.refusing = 0  # refused connections still lingering
        self.waiting: OrderedDict[_Guarded, None] = OrderedDict()  # no complete head yet
        self.admitted: OrderedDict[_Guarded, None] = OrderedDict()  # every open connection

    def make_room(self) -> bool:
        """Drop the oldest connection without a complete head, else an idle keep-alive one."""
        if self.waiting:
            next(iter(self.waiting)).drop("room for a new connection")
            return True
        for connection in self.admitted:
            if connection.idle():
                connection.drop("room for a new connection (idle keep-alive)")
                return True
        return False


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: deadline for the head, connection cap."""

    def __init__(self, guard: Guard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.admitted = False
        self.refusing: asyncio.TimerHandle | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        guard = self.guard
        if guard.open >= guard.cap and not guard.make_room():
            self.refuse(transport)
            return
        self.admitted = True
        guard.open += 1
        guard.admitted[self] = None
        self.start_head()
        self.inner.connection_made(transport)

    def refuse(self, transport: asyncio.Transport) -> None:
        """The plain 503, written so that the client can read it (see the module docstring)."""
        guard = self.guard
        guard.refused += 1
        transport.write(REFUSAL)
        if guard.refusing >= MAX_REFUSING or not transport.can_write_eof():
            transport.close()
            return
        guard.refusing += 1
        transport.write_eof()  # the client reads the answer, then its end of the stream
        self.refusing = asyncio.get_running_loop().call_later(
            REFUSAL_LINGER_SECONDS, transport.close
        )

    def start_head(self) -> None:
        """A request head is expected from now on, within ``header_timeout``."""
        self.tail = b""
        self.guard.waiting[self] = None
        self.timer = asyncio.get_running_loop().call_later(
            self.guard.header_timeout, self.drop, "no complete request head in time"
        )

    def idle(self) -> bool:
        """Between requests: the last one answered, nothing of the next one received."""
        waiter = getattr(self.inner, "_waiter", None)  # aiohttp waits for the next message
        return self.timer is None and waiter is not None and not waiter.done()

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
            return  # a refused connection: what it still sends is discarded
        if self.timer is None and self.idle():  # the next request on a keep-alive connection
            self.start_head()
        if self.timer is not None:
            if _END_OF_HEAD in self.tail + data:
                self.head_done()
            else:
                self.tail = data[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.refusing is not None and self.transport is not None:
            self.transport.close()  # the client is done: the answer was sent before our EOF
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refusing is not None:
            self.refusing.cancel()
            self.refusing = None
            self.guard.refusing -= 1
        if not self.admitted:
            return
        self.admitted = False
        self.head_done()
        self.guard.open -= 1
        self.guard.admitted.pop(self, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Listener:
    """The guarded listening socket; :meth:`close` stops it without resetting anyone."""

    def __init__(self, server: asyncio.Server, sock: socket.socket, guard: Guard,
                 factory: Callable[[], asyncio.Protocol]) -> None:  # fmt: skip
        self.server = server
        self.sock = sock
        self.guard = guard
        self.factory = factory
        self.port: int = sock.getsockname()[1]

    async def close(self) -> None:
        """Stop listening. Connections the kernel already accepted (the backlog) would be
        reset by a plain close, their requests unread: they are taken and served first, and
        connections still sending their request head get until it is complete (at most
        ``header_timeout``), so every request sent before the close is answered."""
        loop = asyncio.get_running_loop()
        keep = self.sock.dup()  # the listening socket stays open while the backlog is taken
        self.server.close()
        try:
            while True:
                try:
                    conn, _ = keep.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # out of descriptors: what is left is refused
                    break
                conn.setblocking(False)
                await loop.connect_accepted_socket(self.factory, conn)
        finally:
            keep.close()
        deadline = loop.time() + self.guard.header_timeout
        while self.guard.waiting and loop.time() < deadline:  # noqa: ASYNC110 (a count)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # let requests just completed reach their handlers


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    header_timeout: float,
    max_connections: int,
    reuse_port: bool = False,
    reserved: int = 0,
) -> Listener:
    """Listen on ``host:port`` for ``runner``'s app, every connection guarded; ``reuse_port``
    lets sibling workers bind the same port (``SO_REUSEPORT``: the kernel spreads them);
    ``reserved``: descriptors set aside for other listeners (the SMTP intake's cap)."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    guard = Guard(header_timeout, connection_cap(max_connections, reserved))

    def factory() -> asyncio.Protocol:
        inner: Any = server()
        return _Guarded(guard, inner)

    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
        listener = await asyncio.get_running_loop().create_server(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    return Listener(listener, sock, guard, factory)
