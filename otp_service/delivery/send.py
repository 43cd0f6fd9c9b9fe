"""The send path: the one way in for a message, whichever intake it comes from.

An intake (Logto's HTTP connectors, the CLI's ``send``, the intakes to come) parses its caller's
request into a :class:`~otp_service.message.compose.SendRequest` and calls
:meth:`SendPath.send`, which returns an :class:`~.outcome.Outcome` and raises nothing a caller
can cause: compose the message, key it (Idempotency-Key, or its content), count it against the
abuse limits, accept it durably, and wait ``delivery.wait_seconds`` for its first attempt. The
intake maps the outcome to its caller's answer (HTTP: :mod:`otp_service.http.answers`).
"""

from __future__ import annotations

import asyncio
import time

from ..config import DeliveryConfig
from ..errors import RateLimitedRequest, RequestError, ShuttingDownError, StoreError
from ..logs import request_id
from ..message.compose import Channel, Composer, Message, SendRequest
from ..metrics import Metrics
from ..store import StoreUnavailable
from .dedupe import dedupe_key
from .limits import Limiter
from .outbox import Outbox
from .outcome import Outcome

PROBE_WAIT_SECONDS = 0.5


class SendPath:
    """Compose, key, limit, accept and first attempt: see the module docstring."""

    def __init__(
        self,
        composer: Composer,
        limiter: Limiter,
        outbox: Outbox,
        config: DeliveryConfig,
        metrics: Metrics,
        shutdown_retry_after: float = 1.0,
    ) -> None:
        self.composer = composer
        self.limiter = limiter
        self.outbox = outbox
        self.config = config
        self.metrics = metrics
        self.shutdown_retry_after = shutdown_retry_after
        self._probing: asyncio.Future[bool] | None = None

    async def _store_usable(self) -> bool:
        """Whether the store takes writes. One marked unavailable is probed now, not at the
        outbox worker's next round: a disk that was full and has room again takes the very next
        send. Sends arriving meanwhile share the one probe, and wait for it at most
        :data:`PROBE_WAIT_SECONDS` (a store that is down answers 503 promptly)."""
        store = self.outbox.store
        if store.healthy:
            return True
        if self._probing is None:
            self._probing = asyncio.ensure_future(store.probe())
            self._probing.add_done_callback(self._probed)
        try:
            async with asyncio.timeout(PROBE_WAIT_SECONDS):
                return await asyncio.shield(self._probing)
        except TimeoutError:
            return False

    def _probed(self, probing: asyncio.Future[bool]) -> None:
        self._probing = None
        if not probing.cancelled():
            probing.exception()  # retrieved: a failed probe is an unavailable store

    async def send(
        self,
        channel: Channel,
        request: SendRequest,
        *,
        idempotency_key: str | None = None,
        wait_seconds: float | None = None,
    ) -> Outcome:
        """Send ``request`` on ``channel``; a repeat (same ``idempotency_key``, or without one
        the same content while the first lives) gets the first message's outcome, even when the
        abuse limits would refuse a new message. ``wait_seconds``: wait at most this for the
        first attempt (a caller with a deadline of its own), else ``delivery.wait_seconds``."""
        if not self.outbox.accepting:
            # Come back after the listener has closed: by then another instance takes it.
            error = ShuttingDownError(self.shutdown_retry_after)
            return Outcome(channel, "refused", type=request.type, error=error)
        try:
            message = self.composer.compose(channel, request, request_id.get())
        except RequestError as exc:
            return Outcome(channel, "refused", type=request.type, error=exc)
        key = f"{channel}:{idempotency_key}" if idempotency_key else None
        # A key, when given, decides alone; delivery.dedupe: false leaves only keys.
        store = self.outbox.store
        content = (
            None if key or self.config.dedupe is False else dedupe_key(message, store.dedupe_secret)
        )
        ttl = self.config.ttl_seconds
        if request.ttl is not None:
            ttl = min(ttl, request.ttl)
        now = time.time()
        try:
            if not await self._store_usable():
                raise StoreUnavailable()
            # A key is held before the limits are counted: its repeats, on any replica, wait for
            # this request and answer with its message; they never count, nor store another.
            if key is not None and (repeat := await self.outbox.hold(message, key)) is not None:
                return repeat
            try:
                return await self._limited_submit(
                    message, now + ttl, key, content, now, wait_seconds
                )
            except BaseException:
                if key is not None:
                    await self.outbox.release(message, key)
                raise
        except (RequestError, StoreError) as exc:
            return Outcome.of(message, "refused", error=exc)

    async def _limited_submit(
        self, message: Message, expires_at: float, key: str | None, content: str | None,
        now: float, wait_seconds: float | None,
    ) -> Outcome:  # fmt: skip
        try:
            await self.limiter.check(message)
        except RateLimitedRequest as exc:
            # Refused as a new message; a repeat of an accepted one still gets its answer.
            # (Looked up only here: the common path keeps one store round trip.)
            repeat = None
            if content is not None:  # a key, when given, was looked up by hold()
                repeat = await self.outbox.existing(message, None, content, now)
            if repeat is not None:
                return repeat
            self.metrics.refused_by_limit(exc.rule)
            raise
        return await self.outbox.submit(
            message, expires_at=expires_at, idempotency_key=key, dedupe_key=content,
            wait_seconds=wait_seconds,
        )  # fmt: skip
