"""Caps on the clients that wait: ``latest?wait=`` long-polls and the event stream.

A waiting reader holds a connection (a descriptor) and some memory for as long as it waits, so
without a cap 2,000 long-polls took the connections that sends need. :class:`Waiting` admits at
most ``capture.max_waiting`` waiting readers in the process (never more than half of
``server.max_connections``: sends keep the other half) and ``capture.max_waiting_per_client``
per client, a client being the token it presents (a hash of it: the token itself is never kept)
or, without a token, its address. Beyond the per-client cap a reader gets 429, beyond the
process's cap 503, both ``too_many_waiting`` with ``Retry-After``; sends and ``/healthz`` are
not counted and keep answering.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterator

from aiohttp import web

from ..config import Config
from ..errors import RequestError

RETRY_AFTER_SECONDS = 5.0


class Waiting:
    """The waiting readers of one process, counted per client."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.count = 0
        self.by_client: Counter[str] = Counter()
        self.refused = 0

    @classmethod
    def from_config(cls, config: Config) -> Waiting:
        total = min(config.capture.max_waiting, max(1, config.server.max_connections // 2))
        return cls(total, min(total, config.capture.max_waiting_per_client))

    @contextlib.contextmanager
    def admit(self, request: web.Request) -> Iterator[None]:
        """Count ``request`` as waiting while the block runs; 429/503 when over a cap."""
        client = client_key(request)
        if self.by_client[client] >= self.per_client:
            self.refused += 1
            raise RequestError(
                "too_many_waiting",
                f"this client already has {self.per_client} waiting requests or event streams; "
                "retry when one ends",
                429,
                RETRY_AFTER_SECONDS,
            )
        if self.count >= self.total:
            self.refused += 1
            raise RequestError(
                "too_many_waiting",
                "too many waiting requests and event streams; retry shortly",
                503,
                RETRY_AFTER_SECONDS,
            )
        self.count += 1
        self.by_client[client] += 1
        try:
            yield
        finally:
            self.count -= 1
            self.by_client[client] -= 1
            if self.by_client[client] <= 0:
                del self.by_client[client]


def client_key(request: web.Request) -> str:
    """Who is waiting: a hash of the presented Authorization header, else the peer address."""
    header = request.headers.get("Authorization")
    if header:
        digest = hashlib.sha256(header.encode("utf-8", "surrogateescape")).hexdigest()
        return "token:" + digest[:32]
    return "ip:" + (request.remote or "")


WAITING = web.AppKey("waiting", Waiting)
