"""Delivery: hand a composed message to its channel's provider, with one quick retry.

A transient failure is retried once within the request (after ``retry_delay_seconds``, or the
provider's Retry-After when it is short); a permanent one is not retried. Durable retries come
with the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from .compose import Channel, Message
from .config import DeliveryConfig
from .errors import ProviderError, TransientProviderError
from .providers.base import Provider, SendResult
from .sanitize import mask_email, mask_phone

log = logging.getLogger("otp_service.delivery")
_MAX_QUICK_RETRY_DELAY = 2.0


def masked(message: Message) -> str:
    return mask_email(message.to) if message.channel == "email" else mask_phone(message.to)


class Dispatcher:
    """Routes a message to the provider of its channel."""

    def __init__(self, providers: Mapping[Channel, Provider], config: DeliveryConfig) -> None:
        self.providers = dict(providers)
        self.config = config

    async def deliver(self, message: Message) -> SendResult:
        """Send ``message``; raises a ProviderError when it could not be delivered."""
        provider = self.providers[message.channel]
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                result = await provider.send(message)
            except TransientProviderError as exc:
                if attempt == 2:
                    self._log_failure(message, exc, attempt)
                    raise
                self._log_failure(message, exc, attempt)
                delay = self.config.retry_delay_seconds
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                await asyncio.sleep(min(delay, _MAX_QUICK_RETRY_DELAY))
            except ProviderError as exc:
                self._log_failure(message, exc, attempt)
                raise
            else:
                log.info(
                    "delivered id=%s channel=%s type=%s to=%s provider=%s status=%s "
                    "attempts=%d ms=%.1f",
                    message.id, message.channel, message.type, masked(message),
                    result.provider, result.status, attempt, (time.perf_counter() - started) * 1000,
                )  # fmt: skip
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_failure(self, message: Message, exc: ProviderError, attempt: int) -> None:
        exc.redact(message.code)
        log.warning(
            "delivery failed id=%s channel=%s type=%s to=%s provider=%s attempt=%d "
            "transient=%s detail=%s",
            message.id, message.channel, message.type, masked(message), exc.provider, attempt,
            exc.transient, exc.detail,
        )  # fmt: skip

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
