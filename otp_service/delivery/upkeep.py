"""The outbox worker's upkeep between claims: recover SMS cut off mid-attempt, expire the dead,
renew leases, compact, purge."""

from __future__ import annotations

import logging
import time

from ..logs import event, mask_recipient
from ..metrics import Metrics
from ..store import OutboxStore, StoreUnavailable
from .expiry import record_expired

log = logging.getLogger("otp_service.outbox")


class Upkeep:
    """What the worker does on each poll besides claiming due messages."""

    def __init__(
        self, store: OutboxStore, metrics: Metrics, lease_seconds: float, retention_seconds: float
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self._purged_at = 0.0
        self._compacted_at = time.time()
        self._renewed_at = time.time()
        self._store_warned_at = 0.0

    async def recover(self, now: float) -> None:
        """Finish SMS cut off mid-attempt (their lease ran out) as unknown outcomes, never
        resent; count and log each."""
        for lost in await self.store.recover(now):
            self.metrics.recovered(lost.provider)
            event(
                log, logging.ERROR, "recovered unknown",
                id=lost.id, channel="sms", to=mask_recipient(lost.to),
                request_id=lost.request_id, provider=lost.provider, attempts=lost.attempts,
            )  # fmt: skip

    async def expire(self, now: float) -> None:
        """Expire what nobody can deliver in time any more; count and log each (the store
        writes their ``last_error`` as :func:`.expiry.expired_error` does)."""
        for gone in await self.store.expire_due(now):
            record_expired(
                self.metrics, id=gone.id, channel=gone.channel, to=gone.to,
                attempts=gone.attempts, last_error=gone.last_error, request_id=gone.request_id,
            )  # fmt: skip

    async def tend(self, now: float, active: set[str], *, idle: bool) -> None:
        """Renew the leases of what this process delivers; compact when idle; purge old rows."""
        lease = self.lease_seconds
        if active and now - self._renewed_at > lease / 3:
            self._renewed_at = now
            await self.store.renew(sorted(active), now + lease)
        if now - self._compacted_at > 60 and idle:
            self._compacted_at = now
            await self.store.compact()
        if now - self._purged_at > 3600:
            self._purged_at = now
            purged = await self.store.purge(now - self.retention_seconds)
            if purged:
                log.info("purged %d finished message(s) past retention", purged)

    def store_unavailable(self, exc: StoreUnavailable) -> None:
        """An outage: say so now and then, not on every poll."""
        if time.time() - self._store_warned_at > 30:
            self._store_warned_at = time.time()
            log.warning("outbox worker: store unavailable (%s); retrying", exc)
