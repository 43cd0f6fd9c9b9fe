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
import time
from collections.abc import Awaitable, Callable

from ..config import DeliveryConfig
from ..errors import (
    EarlierFailure,
    IdempotencyKeyBusy,
    MessageExpired,
    OtpServiceError,
    OutcomeUnknownError,
    ProviderError,
    StoreError,
    TransientProviderError,
    short_reason,
)
from ..logs import event, mask_recipient, request_id
from ..message.compose import Message
from ..metrics import Metrics
from ..providers.base import SendResult
from ..retry import Backoff, backoff_delay, retry
from ..store import Accepted, Attempt, OutboxStore, StoreUnavailable
from .dispatcher import Dispatcher
from .drain import drain
from .expiry import expired_error, expiry_reason, record_expired
from .outcome import Outcome
from .receipts import ReceiptDesk
from .upkeep import Upkeep

log = logging.getLogger("otp_service.outbox")
KEY_WAIT_SECONDS = 5.0  # a repeat waits this long for the request holding its key to decide
INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR
Settle = Callable[[Outcome], Outcome]


class Outbox:
    def __init__(
        self,
        store: OutboxStore,
        dispatcher: Dispatcher,
        config: DeliveryConfig,
        retention_days: float = 7.0,
        metrics: Metrics | None = None,
        receipts: ReceiptDesk | None = None,
    ) -> None:
        self.store = store
        self.receipts = receipts  # SMS delivery receipts: taken, polled, resent on failure
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
        if left := await drain(self._tasks, grace_seconds):
            log.warning("shutdown: %d message(s) left in the outbox for the next start", left)
        if self.receipts is not None:
            await self.receipts.stop(grace_seconds)
        await self.dispatcher.close()
        await self.store.close()

    # -- accepting

    async def submit(
        self,
        message: Message,
        *,
        expires_at: float,
        idempotency_key: str | None,
        dedupe_key: str | None,
        wait_seconds: float | None = None,
    ) -> Outcome:
        """Store ``message`` durably (raises :class:`StoreUnavailable` when the store cannot),
        start delivering it, and wait ``delivery.wait_seconds`` (or ``wait_seconds``, when
        shorter) for the outcome. A message already holding the idempotency or dedupe key
        answers instead."""
        wait = self.config.wait_seconds
        if wait_seconds is not None:
            wait = min(wait, wait_seconds)
        now = time.time()
        accepted = await self.store.accept(
            message,
            expires_at=expires_at,
            lease_until=now + self.config.lease_seconds,
            idempotency_key=idempotency_key,
            dedupe_key=dedupe_key,
        )
        if not accepted.created:
            return self._repeat(message, accepted)
        # The answer is settled as soon as the outcome is known, before it is written down:
        # the request does not wait for that second write.
        reply: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._spawn(message, expires_at, 0, now + wait, reply)
        await asyncio.wait((reply,), timeout=wait)  # never cancels it
        if reply.done() and not reply.cancelled():  # cancelled: shutting down, still stored
            return reply.result()
        return Outcome.of(message, "queued")

    async def existing(
        self, message: Message, idempotency_key: str | None, dedupe_key: str | None, now: float
    ) -> Outcome | None:
        """The outcome of the earlier message ``message`` repeats, if one holds its keys."""
        found = await self.store.existing(idempotency_key, dedupe_key, now)
        return None if found is None else self._repeat(message, found)

    async def hold(self, message: Message, idempotency_key: str) -> Outcome | None:
        """Hold ``idempotency_key`` for ``message`` before its limits are counted: None once it
        is ``message``'s; else the answer of the message holding it, whichever replica took it
        (waiting, up to :data:`KEY_WAIT_SECONDS`, while that request is still deciding)."""
        deadline = time.monotonic() + KEY_WAIT_SECONDS
        pause = 0.005
        while True:
            now = time.time()
            stale = now - self.config.lease_seconds  # its process died before storing it
            held = await self.store.hold_key(idempotency_key, message.id, now, stale)
            if held is not None and held.message_id == message.id:
                return None
            if held is not None and held.stored is not None:
                return self._repeat(message, held.stored)
            if time.monotonic() >= deadline:
                return Outcome.of(message, "refused", error=IdempotencyKeyBusy())
            await asyncio.sleep(pause)  # the holder counts its limits, then stores or lets go
            pause = min(pause * 2, 0.1)

    async def release(self, message: Message, idempotency_key: str) -> None:
        """Let go of a key ``message`` held but was refused (limits, a store outage): the next
        request with it decides afresh. Best effort: a hold left behind is taken over later."""
        try:
            await self.store.release_key(idempotency_key, message.id)
        except Exception:
            log.warning("could not release an Idempotency-Key held by id=%s", message.id)

    @staticmethod
    def _repeat(message: Message, first: Accepted) -> Outcome:
        """A repeat is answered with the first message's id and where it stands."""
        error: OtpServiceError | None = None
        if first.status == "expired":
            error = MessageExpired()
        elif first.status == "failed":
            error = EarlierFailure()
        return Outcome.of(
            message, first.status, id=first.id, provider=first.provider, duplicate=True,
            error=error,
        )  # fmt: skip

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
        last_error: str | None = None,
    ) -> asyncio.Task[Outcome]:
        task = asyncio.get_running_loop().create_task(
            self._run(message, expires_at, attempts, inline_until, reply, last_error)
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
        """The delay before the next round: :func:`otp_service.retry.backoff_delay` with the
        delivery settings, never before the provider's Retry-After."""
        return backoff_delay(
            attempts, self.config.retry_delay_seconds, self.config.backoff_max_seconds, retry_after
        )

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
        message: Message,
        status: str,
        provider: str | None,
        error: str | None,
        attempt: Attempt | None = None,
        keep_body: bool = False,
    ) -> str | None:
        """Record a final outcome; None once recorded, else why the message failed instead.

        A store outage is waited out (with backoff, while the lease is renewed: the message
        stays this task's, so a store hiccup never means a resend). A store that refuses the
        write for good fails the message with that reason instead of holding its lease."""
        try:
            await self._until_stored(
                message.id,
                lambda: self.store.finish(message.id, status, provider, error, attempt, keep_body),
            )
            return None
        except Exception as exc:
            refused = short_reason(
                exc.message if isinstance(exc, OtpServiceError) else f"{type(exc).__name__}: {exc}"
            )
            log.error("the store refused the %s outcome of id=%s: %s", status, message.id, refused)
        note = f"the store refused its {status} outcome: {refused}"
        try:
            await self._until_stored(
                message.id, lambda: self.store.finish(message.id, "failed", provider, note)
            )
        except Exception:  # the lease runs out; recovery decides (an SMS is never resent)
            log.exception("cannot record any outcome of id=%s", message.id)
        return note

    async def _until_stored(self, message_id: str, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` until the store takes it: an outage (:class:`StoreUnavailable`) is
        retried with backoff; any other error is a refusal and propagates."""

        def waiting(exc: BaseException, delay: float) -> None:
            log.warning("store unavailable: outcome of id=%s kept for later", message_id)

        await retry(write, retry_on=StoreUnavailable, backoff=Backoff(0.1, 5.0), on_retry=waiting)

    async def _run(
        self,
        message: Message,
        expires_at: float,
        attempts: int,
        inline_until: float,
        reply: asyncio.Future[Outcome] | None = None,
        last_error: str | None = None,
    ) -> Outcome:
        """Deliver ``message``, which has had ``attempts`` attempts so far (the last failing
        with ``last_error``): rounds over its providers, short backoffs waited out here, until
        a round ends it (:meth:`_conclude`)."""
        if message.request_id is not None:
            request_id.set(message.request_id)  # this task's context only
        tried = attempts

        def settle(outcome: Outcome) -> Outcome:
            if reply is not None and not reply.done():
                reply.set_result(outcome)
            return outcome

        failure = last_error  # the last attempt's error, named if the message expires

        async def attempted(
            provider: str, outcome: str, seconds: float, error: ProviderError | None
        ) -> None:
            nonlocal tried, failure
            tried += 1
            if error is not None:
                failure = error.detail
            await self._attempted(message, tried, provider, outcome, seconds, error)

        while True:
            ended: SendResult | Exception
            try:
                if time.time() >= expires_at:
                    raise MessageExpired()
                ended = await self.dispatcher.deliver(
                    message,
                    on_attempt=attempted,
                    expires_at=expires_at,
                    on_start=lambda p: self._started(message, p),
                )
            except TransientProviderError as exc:
                failure = exc.detail  # the round's reason to retry, as retry_later keeps it
                delay = self.backoff(tried, exc.retry_after)
                next_at = time.time() + delay
                if next_at < expires_at:  # else no attempt can start before the end of its life
                    event(
                        log, INFO, "retry scheduled",
                        id=message.id, channel=message.channel, attempts=tried,
                        delay_s=round(delay, 3), error=exc.detail,
                    )  # fmt: skip
                    if next_at <= inline_until:
                        await asyncio.sleep(delay)
                        continue
                    return await self._later(message, exc, next_at, settle)
                ended = MessageExpired()
            except asyncio.CancelledError:
                await self._interrupted(message, tried)
                raise
            except Exception as exc:
                ended = exc
            return await self._conclude(message, tried, ended, failure, settle)

    async def _later(
        self, message: Message, error: TransientProviderError, next_at: float, settle: Settle
    ) -> Outcome:
        """Give the message back to the store until ``next_at`` (the worker claims it then)."""
        outcome = settle(Outcome.of(message, "queued", error=error))
        with contextlib.suppress(StoreUnavailable):  # then the lease runs out instead
            await self.store.retry_later(message.id, next_at, error.detail)
        return outcome

    async def _conclude(
        self,
        message: Message,
        tried: int,
        ended: SendResult | Exception,
        failure: str | None,
        settle: Settle,
    ) -> Outcome:
        """Settle the caller's answer, record and log how the delivery of ``message`` ended:
        each way it can end is handled here, once."""
        status, provider, error, attempt = "failed", None, None, None
        match ended:
            case SendResult():
                outcome = settle(Outcome.of(message, ended.status, provider=ended.provider))
                status, provider = ended.status, ended.provider
                attempt = Attempt(time.time(), provider, status, provider_id=ended.provider_id)
            case MessageExpired():
                outcome = settle(Outcome.of(message, "expired", error=ended))
                reason = expiry_reason(failure)
                await self._finish(message, "expired", None, expired_error(reason))
                age = round(time.time() - message.created_at.timestamp(), 3)
                record_expired(
                    self.metrics, id=message.id, channel=message.channel, to=message.to,
                    attempts=tried, last_error=reason, type=message.type, age_s=age,
                )  # fmt: skip
                return outcome
            case StoreUnavailable():
                # Nothing could be written down (an SMS attempt is not even started): once its
                # lease runs out the worker takes the message up again, when the store is back.
                log.warning("store unavailable; id=%s left for the worker", message.id)
                return settle(Outcome.of(message, "queued", error=ended))
            case ProviderError():
                unknown = isinstance(ended, OutcomeUnknownError)
                outcome = settle(
                    Outcome.of(message, "unknown" if unknown else "failed", error=ended,
                               provider=ended.provider)
                )  # fmt: skip
                provider, error = ended.provider, ended.detail
            case StoreError():  # the store refused a write (an SMS attempt's start) for good
                outcome = settle(Outcome.of(message, "failed", error=ended))
                error = f"the store refused a write: {short_reason(ended.message)}"
                log.error("id=%s failed: %s", message.id, error)
            case _:  # a bug or a template/address problem: stop, don't loop
                log.error("delivery of id=%s failed unexpectedly", message.id, exc_info=ended)
                error = f"internal error: {type(ended).__name__}"
                outcome = settle(Outcome.of(message, "failed", error=OtpServiceError(error)))
        # An SMS that may be resent once on an undelivered receipt keeps its code until then.
        keep = status == "sent" and message.channel == "sms" and self._keeps_bodies
        refused = await self._finish(message, status, provider, error, attempt, keep)
        if refused is not None:
            status, error = "failed", refused
        elif isinstance(ended, SendResult) and message.channel == "sms" and self.receipts:
            try:  # a simulated receipt (capture) must never turn a delivery into a failure
                await self.receipts.sent(message, ended)
            except Exception:
                log.warning("could not simulate the receipt of id=%s", message.id, exc_info=True)
        if status == "failed":
            self._final(message, status, tried, ERROR, provider=provider, error=error)
        else:
            self._final(message, status, tried, INFO, provider=provider)
        return outcome

    @property
    def _keeps_bodies(self) -> bool:
        return self.receipts is not None and self.receipts.keeps_bodies

    async def _interrupted(self, message: Message, tried: int) -> None:
        """Shutdown cut an attempt: an SMS may already be at the provider (a Vonage thread even
        completes it), and resending it on the next start could text twice."""
        if message.channel == "sms":
            error = "interrupted by shutdown; not resent"
            await asyncio.shield(self._finish(message, "failed", None, error))
            self._final(message, "failed", tried, ERROR, error=error)

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
                            self._spawn(
                                due.message, due.expires_at, due.attempts, now,
                                last_error=due.last_error,
                            )  # fmt: skip
                await self._upkeep.tend(now, self._active, idle=not self._tasks)
                if self.receipts is not None:
                    await self.receipts.tend(now)
            except StoreUnavailable as exc:
                self._upkeep.store_unavailable(exc)
            except Exception:  # a store hiccup must not kill the worker
                log.exception("outbox worker: claiming failed")
            await asyncio.sleep(self.config.poll_seconds)
