"""Delivery: hand a composed message to its provider(s), in order, within the request.

Email goes to its one provider with one quick retry of a transient failure. SMS follows the
first matching ``sms.routes`` rule: a transient failure moves the message to the next provider
(one quick retry when the route names a single provider); a permanent failure, or an unknown
outcome that could turn a retry into a duplicate, stops at once. Durable retries come with the
outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from .compose import Message
from .config import DeliveryConfig
from .errors import ProviderError, TransientProviderError
from .providers.base import Provider, SendResult
from .sanitize import mask_email, mask_phone
from .sms_config import SmsConfig

log = logging.getLogger("otp_service.delivery")
_MAX_QUICK_RETRY_DELAY = 2.0


def masked(message: Message) -> str:
    return mask_email(message.to) if message.channel == "email" else mask_phone(message.to)


class Dispatcher:
    """Chooses the providers of a message and walks them until one delivers."""

    def __init__(
        self,
        email: Provider,
        sms: Mapping[str, Provider],
        sms_config: SmsConfig,
        config: DeliveryConfig,
    ) -> None:
        self.email = email
        self.sms = dict(sms)
        self.sms_config = sms_config
        self.config = config

    def plan(self, message: Message) -> list[Provider]:
        """The providers to try, in order (the same one twice means one quick retry)."""
        if message.channel == "email":
            providers = [self.email]
        else:
            names = self.sms_config.route_for(message.to).providers
            providers = [self.sms[name] for name in names]
        return providers * 2 if len(providers) == 1 else providers

    async def deliver(self, message: Message) -> SendResult:
        """Send ``message``; raises the last ProviderError when no provider delivered it."""
        started = time.perf_counter()
        plan = self.plan(message)
        last: TransientProviderError | None = None
        for attempt, provider in enumerate(plan, start=1):
            if last is not None and plan[attempt - 2] is provider:
                delay = max(self.config.retry_delay_seconds, last.retry_after or 0.0)
                await asyncio.sleep(min(delay, _MAX_QUICK_RETRY_DELAY))
            try:
                result = await provider.send(message)
            except TransientProviderError as exc:
                self._log_failure(message, exc, attempt)
                last = exc
                continue
            except ProviderError as exc:
                self._log_failure(message, exc, attempt)
                raise
            log.info(
                "delivered id=%s channel=%s type=%s to=%s provider=%s status=%s "
                "attempts=%d ms=%.1f",
                message.id, message.channel, message.type, masked(message),
                result.provider, result.status, attempt, (time.perf_counter() - started) * 1000,
            )  # fmt: skip
            return result
        assert last is not None
        raise last

    def _log_failure(self, message: Message, exc: ProviderError, attempt: int) -> None:
        exc.redact(message.code)
        log.warning(
            "delivery failed id=%s channel=%s type=%s to=%s provider=%s attempt=%d "
            "transient=%s detail=%s",
            message.id, message.channel, message.type, masked(message), exc.provider, attempt,
            exc.transient, exc.detail,
        )  # fmt: skip

    async def close(self) -> None:
        for provider in {id(p): p for p in (self.email, *self.sms.values())}.values():
            await provider.close()
