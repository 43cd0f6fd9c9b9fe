"""Delivery receipts: what became of each SMS after a provider accepted it.

Every receipt, whoever brings it (Vonage's and Twilio's callbacks, Aliyun's push, our own
QuerySendDetails poll, the capture inbox's simulation), goes through :meth:`ReceiptDesk.take`:
the store moves the attempt's state up, never down (:mod:`otp_service.store.receipts`), and
only a change is counted and logged. An SMS with no final receipt within
``sms.receipt_horizon_seconds`` becomes ``unknown`` (:meth:`ReceiptDesk.tend`, from the outbox
worker's loop).

With ``sms.failover_on_undelivered`` an ``undelivered`` receipt while the code is still valid
resends the message once through the providers after the one that failed in the number's route
(the dispatcher's own failover order). The store hands the resend out once per message
(:meth:`~otp_service.store.outbox.OutboxStore.claim_failover`, durable before anything is
sent: a crash never makes it twice), and the first attempt's receipt is read again just before
the second provider is called: if it turned ``delivered`` meanwhile, nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ..config.capture import CaptureConfig
from ..config.sms import SmsConfig
from ..errors import MessageExpired, OtpServiceError, ProviderError
from ..logs import event, mask_recipient
from ..message.compose import Message
from ..message.recipients import region_of
from ..metrics import Metrics
from ..providers.base import ReceiptSource, SendResult
from ..retry import Backoff
from ..store import Attempt, OutboxStore, StoredStatus
from ..store.receipts import (
    DELIVERED,
    FINAL_RECEIPTS,
    PENDING,
    UNDELIVERED,
    UNKNOWN,
    Receipt,
    ReceiptTarget,
)
from .dispatcher import Dispatcher, outcome_of
from .drain import drain
from .pacing import pacer

log = logging.getLogger("otp_service.receipts")
CAPTURE = "capture"
SIMULATED_ERROR = "simulated: the number matches capture.sms_undelivered"
SWEEP_SECONDS = 10.0  # how often SMS past the horizon are marked unknown
POLL_BATCH = 50  # SMS asked about per poll round, per provider
UNMATCHED_RETRIES = 3  # looks again for the message of a receipt that matched none (~1 s)


class _TurnedDelivered(Exception):
    """The first attempt's receipt turned delivered before the resend started."""


class ReceiptDesk:
    """Takes receipts, marks the silent ones unknown, polls providers that are asked, and
    resends once on non-delivery when configured."""

    def __init__(
        self,
        store: OutboxStore,
        dispatcher: Dispatcher,
        metrics: Metrics,
        sms: SmsConfig,
        capture: CaptureConfig | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.sms = sms
        pattern = capture.sms_undelivered if capture is not None else None
        self.undelivered_pattern = re.compile(pattern) if pattern else None
        self.sources: Mapping[str, ReceiptSource] = {
            name: provider
            for name, provider in dispatcher.sms.items()
            if isinstance(provider, ReceiptSource)
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        self._swept_at = 0.0
        self._polled_at = 0.0
        self._poll: asyncio.Task[None] | None = None
        self._cursor: dict[str, float] = {}
        # A per-account limit: counted across every process sharing the store, as provider rates.
        self._pacer = pacer("receipt_queries", sms.receipt_query_rate, dispatcher.shared)

    @property
    def keeps_bodies(self) -> bool:
        """Whether a sent SMS keeps its body (the code) for one resend, until it expires."""
        return self.sms.failover_on_undelivered

    # -- receipts in

    async def take(self, receipt: Receipt) -> str:
        """Apply ``receipt``; its result: ``accepted`` (the state moved up), ``duplicate``
        (it changed nothing), ``unmatched`` (no message carries its id) or ``mismatch`` (it
        names another number: refused). Counted either way."""
        now = time.time()
        if receipt.at is not None and receipt.at > now:  # a provider's clock ahead of ours
            receipt = replace(receipt, at=now)
        applied = await self.store.apply_receipt(receipt, now)
        # A receipt can overtake our own record of the send (the caller is answered before
        # the outcome is written): look again a few times before calling it unmatched.
        backoff = Backoff(0.1, 1.0)
        while applied.target is None and backoff.attempts < UNMATCHED_RETRIES:
            await backoff.wait()
            applied = await self.store.apply_receipt(receipt, now)
        target = applied.target
        if target is None:
            result = "unmatched"
        elif applied.mismatch:
            result = "mismatch"
            log.warning(
                "receipt refused: %s id %s names another number than message %s",
                receipt.provider, receipt.provider_id, target.message_id,
            )  # fmt: skip
        else:
            result = "accepted" if applied.changed else "duplicate"
        self.metrics.receipt(receipt.provider, result)
        if target is None or result != "accepted":
            return result
        self._reached(target, receipt.state, receipt.at or now, receipt.error)
        if receipt.state == UNDELIVERED and self.sms.failover_on_undelivered:
            self._spawn(self._failover(target))
        return result

    def _reached(self, target: ReceiptTarget, state: str, at: float, error: str | None) -> None:
        """Count and log a message's new delivery state (a pending one only logs)."""
        seconds = max(0.0, at - target.sent_at) if state == DELIVERED else None
        if state != PENDING:
            self.metrics.delivery_state(target.provider, region_of(target.to), state, seconds)
        level = logging.WARNING if state in (UNDELIVERED, UNKNOWN) else logging.INFO
        event(
            log, level, f"receipt {state}",
            id=target.message_id, channel="sms", to=mask_recipient(target.to),
            provider=target.provider, provider_id=target.provider_id,
            to_handset_s=round(seconds, 3) if seconds is not None else None, error=error,
        )  # fmt: skip

    async def sent(self, message: Message, result: SendResult) -> None:
        """An SMS was handed over: in capture mode its receipt is simulated at once
        (``undelivered`` for numbers ``capture.sms_undelivered`` finds)."""
        if result.provider != CAPTURE or result.provider_id is None:
            return
        failed = self.undelivered_pattern is not None and bool(
            self.undelivered_pattern.search(message.to)
        )
        state, error = (UNDELIVERED, SIMULATED_ERROR) if failed else (DELIVERED, None)
        await self.take(Receipt(CAPTURE, result.provider_id, state, error=error))

    # -- the worker's round

    async def tend(self, now: float) -> None:
        """Mark SMS past the horizon unknown, erase bodies kept for a resend once their code
        expired, and start a poll of the providers that are asked (one at a time)."""
        if self.keeps_bodies:
            await self.store.erase_kept_bodies(now)
        if now - self._swept_at >= SWEEP_SECONDS:
            self._swept_at = now
            # Only SMS that crossed the horizon lately: older ones (from before receipts, or a
            # long outage) show unknown when read, without a burst of counts on the next start.
            horizon = self.sms.receipt_horizon_seconds
            for target in await self.store.overdue_receipts(now - 2 * horizon, now - horizon, 500):
                self._reached(target, UNKNOWN, now, "no final receipt within the horizon")
        polling = self._poll is not None and not self._poll.done()
        if self.sources and not polling and now - self._polled_at >= self.sms.receipt_poll_seconds:
            self._polled_at = now
            self._poll = self._spawn(self.poll(now))

    async def poll(self, now: float) -> int:
        """Ask each polled provider about up to :data:`POLL_BATCH` SMS still waiting, oldest
        first, paced at ``sms.receipt_query_rate``; take what they answer. Successive rounds
        move on through the waiting SMS, then start over. Returns how many were asked."""
        asked = 0
        since = now - self.sms.receipt_horizon_seconds
        for name, source in self.sources.items():
            after = max(self._cursor.get(name, since), since)
            waiting = await self.store.awaiting_receipts(name, after, now, POLL_BATCH)
            self._cursor[name] = waiting[-1].sent_at if len(waiting) == POLL_BATCH else since
            for target in waiting:
                await self._pacer.wait()
                asked += 1
                try:
                    receipt = await source.query_receipt(
                        target.provider_id, target.to, target.sent_at
                    )
                except ProviderError as exc:
                    log.warning("receipts: asking %s failed: %s", name, exc.detail)
                    break  # the next round asks again
                # Still waiting, as last time: nothing to take (nor to count as a repeat).
                if receipt is not None and not (receipt.state == target.receipt == PENDING):
                    await self.take(receipt)
        return asked

    # -- failover on non-delivery

    def next_providers(self, target: ReceiptTarget) -> list[str]:
        """The providers after the one that failed, in the number's route."""
        route = list(self.sms.route_for(target.to).providers)
        if target.provider not in route:
            return []
        return route[route.index(target.provider) + 1 :]

    async def _failover(self, failed: ReceiptTarget) -> None:
        """Resend once through the next providers, unless that was done, the code expired, or
        the first attempt turns delivered before the resend starts."""
        remaining = self.next_providers(failed)
        if not remaining:
            return
        message = await self.store.claim_failover(
            failed.message_id, failed.provider, failed.provider_id, time.time()
        )
        if message is None:
            return
        skip = set(self.sms.route_for(failed.to).providers) - set(remaining)

        async def on_start(provider: str) -> None:
            now = await self.store.receipt_target(failed.provider, failed.provider_id)
            if now is not None and now.receipt == DELIVERED:
                raise _TurnedDelivered()
            await self.store.start_attempt(message.id, provider, time.time())

        async def on_attempt(
            provider: str, outcome: str, seconds: float, error: ProviderError | None
        ) -> None:
            self.metrics.attempt("sms", provider, outcome, seconds)
            if error is not None:
                with contextlib.suppress(OtpServiceError):
                    await self.store.record_attempt(
                        message.id, Attempt(time.time(), provider, outcome_of(error), error.detail)
                    )

        note: str | None = None
        attempt = None
        provider = failed.provider
        try:
            result = await self.dispatcher.deliver(
                message, on_attempt=on_attempt, expires_at=failed.expires_at,
                on_start=on_start, skip=skip,
            )  # fmt: skip
        except _TurnedDelivered:
            outcome = "cancelled"
        except (ProviderError, MessageExpired) as exc:
            outcome = "failed"
            reason = exc.detail if isinstance(exc, ProviderError) else exc.message
            note = f"resend after an undelivered receipt failed: {reason}"
        else:
            outcome, provider = "sent", result.provider
            attempt = Attempt(time.time(), result.provider, "sent", provider_id=result.provider_id)
        self.metrics.failover(provider if outcome == "sent" else remaining[0], outcome)
        event(
            log, logging.WARNING if outcome == "failed" else logging.INFO,
            f"resend after undelivered {outcome}",
            id=message.id, channel="sms", to=mask_recipient(message.to),
            first_provider=failed.provider, provider=provider, error=note,
        )  # fmt: skip
        # The body (the code) goes now, whatever happened: one resend at most.
        await self.store.finish(message.id, "sent", provider, note, attempt)

    # -- life cycle

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("receipts: background work failed", exc_info=error)

    async def stop(self, grace_seconds: float) -> None:
        """Give resends under way ``grace_seconds``, stop polling."""
        if self._poll is not None:
            self._poll.cancel()
        await drain(self._tasks, grace_seconds)


def delivery_of(status: StoredStatus, horizon_seconds: float, now: float) -> dict[str, Any] | None:
    """An SMS's delivery as ``GET /v1/messages/{id}`` shows it: the receipt state of the
    attempt that carried it (``pending`` while none came, ``unknown`` past the horizon), when,
    the seconds to the handset, the carrier's error; None for email or an SMS never handed
    over."""
    if status.channel != "sms":
        return None
    carried = [a for a in status.attempts if a.outcome in ("sent", "captured")]
    if not carried:
        return None
    last = carried[-1]
    state = last.receipt or PENDING
    if state == PENDING and now - last.at > horizon_seconds:
        state = UNKNOWN
    seconds = None
    if state == DELIVERED and last.receipt_at is not None:
        seconds = round(max(0.0, last.receipt_at - last.at), 3)
    return {
        "state": state,
        "final": state in FINAL_RECEIPTS,
        "provider": last.provider,
        "provider_id": last.provider_id,
        "at": (
            datetime.fromtimestamp(last.receipt_at, UTC).isoformat()
            if state in FINAL_RECEIPTS and last.receipt_at is not None
            else None
        ),
        "seconds_to_handset": seconds,
        "error": last.receipt_error if state in (UNDELIVERED, UNKNOWN) else None,
        "resent": len(carried) > 1,
    }
