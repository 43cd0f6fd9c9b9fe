"""The outbox: every accepted message is stored before we answer, then delivered surely.

``submit`` persists the message (leased to this process), starts delivering at once, and
waits up to ``delivery.wait_seconds`` for the outcome. Transient failures are retried with
exponential backoff and jitter (at least the provider's Retry-After) until the message expires;
short delays are waited out in place, longer ones go back to the store, where the worker claims
them when due. While a message is being delivered its lease is renewed; a crash leaves the lease
behind, and once it runs out (or at the next start, with SQLite) a worker picks the message up
again: this process's, or with PostgreSQL any live replica's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from ..config import DeliveryConfig
from ..errors import (
    ProviderError,
    RequestError,
    TransientProviderError,
)
from ..logs import event, mask_recipient, request_id
from ..message.compose import Message
from ..metrics import Metrics
from ..store import Attempt, OutboxStore, StoreUnavailable
from .dispatcher import Dispatcher, Expired
from .outcome import Outcome, StoreUnavailableError, dedupe_key
from .upkeep import Upkeep

log = logging.getLogger("otp_service.outbox")
INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR


class Outbox:
    def __init__(
        self,
        store: OutboxStore,
        dispatcher: Dispatcher,
        config: DeliveryConfig,
        retention_days: float = 7.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.retention_seconds = retention_days * 86400
        self._upkeep = Upkeep(store, self.metrics, config.lease_seconds, self.retention_seconds)
        self.dispatcher = dispatcher
        self.config = config
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self._active: set[str] = set()  # ids this process is delivering right now
        self._worker: asyncio.Task[None] | None = None
        self.accepting = False

    # -- life cycle

    async def start(self) -> None:
        await self.store.open()
        self.accepting = True
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self, grace_seconds: float) -> None:
        """Stop accepting, give in-flight attempts ``grace_seconds``, leave the rest stored."""
        self.accepting = False
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                log.warning(
                    "shutdown: %d message(s) left in the outbox for the next start", len(pending)
                )
        await self.dispatcher.close()
        await self.store.close()

    # -- accepting

    async def submit(
        self,
        message: Message,
        *,
        ttl: float,
        idempotency_key: str | None,
        admit: Callable[[Message], Awaitable[None]] | None = None,
    ) -> Outcome:
        """Store ``message`` durably, start delivering it, and wait a little for the outcome.

        A repeat (same Idempotency-Key, or without one the same content) gets the first
        message's answer, even when ``admit`` (the abuse limits) would refuse a new message.
        """
        now = time.time()
        expires_at = now + ttl
        if message.request_id is None and (rid := request_id.get()) is not None:
            message = replace(message, request_id=rid)  # kept with the message for its retries
        key = f"{message.channel}:{idempotency_key}" if idempotency_key else None
        # A key, when given, decides alone; delivery.dedupe: false leaves only keys.
        content = (
            None
            if key or self.config.dedupe is False
            else dedupe_key(message, self.store.dedupe_secret)
        )
        if not self.store.healthy:
            raise StoreUnavailableError()
        if admit is not None:
            try:
                await admit(message)
            except RequestError:
                # Refused as a new message; a repeat of an accepted one still gets its answer.
                # (Looked up only here: the common path keeps one store round trip.)
                if (found := await self.store.existing(key, content, now)) is not None:
                    return Outcome(found.id, found.status, found.provider, duplicate=True)
                raise
        try:
            accepted = await self.store.accept(
                message,
                expires_at=expires_at,
                lease_until=now + self.config.lease_seconds,
                idempotency_key=key,
                dedupe_key=content,
            )
        except StoreUnavailable:
            raise StoreUnavailableError() from None
        if not accepted.created:
            return Outcome(accepted.id, accepted.status, accepted.provider, duplicate=True)
        # The answer is settled as soon as the outcome is known, before it is written down:
        # the request does not wait for that second write.
        reply: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._spawn(message, expires_at, 0, now + self.config.wait_seconds, reply)
        await asyncio.wait((reply,), timeout=self.config.wait_seconds)  # never cancels it
        if reply.done() and not reply.cancelled():  # cancelled: shutting down, still stored
            return reply.result()
        return Outcome(message.id, "queued")

    async def forget_duplicates(self, to: str | None) -> None:
        """Let the next message to ``to`` (to anyone when None) through even when it repeats an
        earlier one; Idempotency-Keys stay."""
        await self.store.forget_duplicates(to)

    # -- delivering

    def _spawn(
        self,
        message: Message,
        expires_at: float,
        attempts: int,
        inline_until: float,
        reply: asyncio.Future[Outcome] | None = None,
    ) -> asyncio.Task[Outcome]:
        task = asyncio.get_running_loop().create_task(
            self._run(message, expires_at, attempts, inline_until, reply)
        )
        self._tasks.add(task)
        self._active.add(message.id)

        def done(task: asyncio.Task[Outcome]) -> None:
            self._tasks.discard(task)
            self._active.discard(message.id)
            if reply is not None and not reply.done():
                if task.cancelled():
                    reply.cancel()
                elif (error := task.exception()) is not None:
                    reply.set_exception(error)
                else:
                    reply.set_result(task.result())

        task.add_done_callback(done)
        return task

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Exponential with full jitter in its upper half, never before Retry-After."""
        base = min(
            self.config.backoff_max_seconds,
            self.config.retry_delay_seconds * 2 ** max(0, attempts - 1),
        )
        delay = random.uniform(base / 2, base) if base > 0 else 0.0
        return max(delay, retry_after or 0.0)

    async def _attempted(
        self,
        message: Message,
        number: int,
        provider: str,
        outcome: str,
        seconds: float,
        error: ProviderError | None,
    ) -> None:
        """Count, log and (for a failure) record attempt ``number`` of ``message``."""
        self.metrics.attempt(message.channel, provider, outcome, seconds)
        event(
            log, INFO if error is None else WARNING, "attempt",
            id=message.id, channel=message.channel, to=mask_recipient(message.to),
            attempt=number, provider=provider, outcome=outcome, ms=round(seconds * 1000, 1),
            error=error.detail if error is not None else None,
        )  # fmt: skip
        if error is not None:
            try:  # history only: a store outage must not turn into a failed delivery
                await self.store.record_attempt(
                    message.id, Attempt(time.time(), provider, outcome, error.detail)
                )
            except Exception:
                log.warning("could not record a failed attempt of id=%s", message.id, exc_info=True)

    async def _started(self, message: Message, provider: str) -> None:
        """An SMS attempt is on record before the provider is called: after a crash it is an
        unknown outcome, never a second text."""
        if message.channel == "sms":
            await self.store.start_attempt(message.id, provider, time.time())

    async def _finish(
        self,
        message_id: str,
        status: str,
        provider: str | None,
        error: str | None,
        attempt: Attempt | None = None,
    ) -> None:
        """Record a final outcome, retrying until the store takes it: until then the message
        stays this task's (the worker skips it), so a store hiccup never means a resend."""
        await self._until_stored(
            message_id, lambda: self.store.finish(message_id, status, provider, error, attempt)
        )

    async def _until_stored(self, message_id: str, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` until the store takes it (a store outage: retried with backoff, while
        the lease is renewed so no other process takes the message over)."""
        delay = 0.1
        while True:
            try:
                return await write()
            except StoreUnavailable:
                log.warning("store unavailable: outcome of id=%s kept for later", message_id)
            except Exception:
                log.exception("cannot record the outcome of id=%s; retrying", message_id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _run(
        self,
        message: Message,
        expires_at: float,
        attempts: int,
        inline_until: float,
        reply: asyncio.Future[Outcome] | None = None,
    ) -> Outcome:
        """Deliver ``message``, which has had ``attempts`` attempts so far."""
        if message.request_id is not None:
            request_id.set(message.request_id)  # this task's context only
        tried = attempts
        last_error: str | None = None

        def settle(outcome: Outcome) -> Outcome:
            if reply is not None and not reply.done():
                reply.set_result(outcome)
            return outcome

        async def attempted(
            provider: str, outcome: str, seconds: float, error: ProviderError | None
        ) -> None:
            nonlocal tried
            tried += 1
            await self._attempted(message, tried, provider, outcome, seconds, error)

        while True:
            if time.time() >= expires_at:
                return await self._expire(message, tried, last_error, settle)
            try:
                result = await self.dispatcher.deliver(
                    message,
                    on_attempt=attempted,
                    expires_at=expires_at,
                    on_start=lambda p: self._started(message, p),
                )
            except StoreUnavailable:
                # Nothing could be written down (an SMS attempt is not even started): the
                # message stays leased to nobody once its lease runs out, and the worker takes
                # it up again when the store is back.
                log.warning("store unavailable; id=%s left for the worker", message.id)
                return settle(Outcome(message.id, "queued"))
            except Expired:
                return await self._expire(message, tried, last_error, settle)
            except TransientProviderError as exc:
                last_error = exc.detail
                delay = self.backoff(tried, exc.retry_after)
                next_at = time.time() + delay
                if next_at >= expires_at:  # no attempt can start before the end of its life
                    return await self._expire(message, tried, last_error, settle)
                event(
                    log, INFO, "retry scheduled",
                    id=message.id, channel=message.channel, attempts=tried,
                    delay_s=round(delay, 3), error=exc.detail,
                )  # fmt: skip
                if next_at <= inline_until:
                    await asyncio.sleep(delay)
                    continue
                outcome = settle(Outcome(message.id, "queued", error=exc))
                with contextlib.suppress(StoreUnavailable):  # then the lease runs out instead
                    await self.store.retry_later(message.id, next_at, exc.detail)
                return outcome
            except ProviderError as exc:
                outcome = settle(Outcome(message.id, "failed", exc.provider, error=exc))
                await self._finish(message.id, "failed", exc.provider, exc.detail)
                self._final(
                    message, "failed", tried, ERROR, provider=exc.provider, error=exc.detail
                )
                return outcome
            except asyncio.CancelledError:
                if message.channel == "sms":
                    # Shutdown cut an attempt that may already be at the provider (a Vonage
                    # thread even completes it): resending on the next start could text twice.
                    error = "interrupted by shutdown; not resent"
                    await asyncio.shield(self._finish(message.id, "failed", None, error))
                    self._final(message, "failed", tried, ERROR, error=error)
                raise
            except Exception as exc:  # a bug or a template/address problem: stop, don't loop
                log.exception("delivery of id=%s failed unexpectedly", message.id)
                error = f"internal error: {type(exc).__name__}"
                outcome = settle(Outcome(message.id, "failed"))
                await self._finish(message.id, "failed", None, error)
                self._final(message, "failed", tried, ERROR, error=error)
                return outcome
            outcome = settle(Outcome(message.id, result.status, result.provider))
            await self._finish(
                message.id,
                result.status,
                result.provider,
                None,
                Attempt(time.time(), result.provider, result.status),
            )
            self._final(message, result.status, tried, INFO, provider=result.provider)
            return outcome

    def _final(
        self, message: Message, status: str, attempts: int, level: int, **fields: str | None
    ) -> None:
        """Count and log a message reaching its final state."""
        self.metrics.finished(message.channel, status)
        age = time.time() - message.created_at.timestamp()
        event(
            log, level, status,
            id=message.id, channel=message.channel, type=message.type,
            to=mask_recipient(message.to), attempts=attempts, age_s=round(age, 3), **fields,
        )  # fmt: skip

    async def _expire(
        self,
        message: Message,
        attempts: int,
        last_error: str | None,
        settle: Callable[[Outcome], Outcome],
    ) -> Outcome:
        outcome = settle(Outcome(message.id, "expired"))
        error = last_error or "no attempt could be made in time"
        await self._finish(message.id, "expired", None, f"expired before delivery: {error}")
        self._final(message, "expired", attempts, WARNING, last_error=error)
        return outcome

    async def observe(self) -> None:
        """Refresh the outbox gauges (a scrape calls this)."""
        pending, oldest = await self.store.backlog()
        self.metrics.outbox(pending, oldest, len(self._tasks))

    async def _work(self) -> None:
        """Claim due messages (retries, and what a crash left behind) and deliver them; watch
        the store (a failing store is probed until it takes writes again)."""
        while True:
            try:
                room = self.config.concurrency - len(self._tasks)
                now = time.time()
                if not await self.store.probe():  # nothing to do until it can record attempts
                    await asyncio.sleep(self.config.poll_seconds)
                    continue
                await self._upkeep.recover(now)
                await self._upkeep.expire(now)
                if room > 0:
                    for due in await self.store.claim_due(
                        now, now + self.config.lease_seconds, room
                    ):
                        # A lease that ran out while this process still delivers the message
                        # (a slow provider) must not start a second, parallel delivery.
                        if due.message.id not in self._active:
                            self._spawn(due.message, due.expires_at, due.attempts, now)
                await self._upkeep.tend(now, self._active, idle=not self._tasks)
            except StoreUnavailable as exc:
                self._upkeep.store_unavailable(exc)
            except Exception:  # a store hiccup must not kill the worker
                log.exception("outbox worker: claiming failed")
            await asyncio.sleep(self.config.poll_seconds)
