"""Delivery: walk a message's providers once, in order, and report how it went.

Email has one provider. SMS follows the first matching ``sms.routes`` rule: a transient failure
(including a provider's rate limit) or a refusal by that provider's account alone
(:class:`~otp_service.errors.AccountRefusedError`: nothing went out) moves the message to the
next provider; a permanent failure, or an unknown outcome that could turn a resend into a
duplicate text, stops at once. When no provider delivered, a transient failure among them makes
the outbox retry later; only account refusals fail the message. Retrying a
round later, with backoff, is the outbox's job. ``limits.provider_rate`` paces each provider to
its throughput (:mod:`.pacing`: in this process with SQLite, across every worker and replica
sharing a PostgreSQL store).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping

from ..config.sms import SmsConfig
from ..errors import (
    MessageExpired,
    OutcomeUnknownError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from ..message.compose import Message
from ..providers.base import Provider, SendResult
from ..store import CounterStore
from .pacing import Pacer, pacer

StartHook = Callable[[str], Awaitable[None]]
# on_attempt(provider, outcome, seconds, error): awaited after every attempt at a provider.
AttemptHook = Callable[[str, str, float, ProviderError | None], Awaitable[None]]


def outcome_of(error: ProviderError) -> str:
    """How an attempt that raised ``error`` is recorded: transient, permanent or unknown."""
    if isinstance(error, OutcomeUnknownError):
        return "unknown"
    return "transient" if error.transient else "permanent"


class Dispatcher:
    """Chooses the providers of a message and walks them until one delivers."""

    def __init__(
        self,
        email: Provider,
        sms: Mapping[str, Provider],
        sms_config: SmsConfig,
        provider_rate: Mapping[str, float] | None = None,
        timeout: float = 30.0,
        shared: CounterStore | None = None,
    ) -> None:
        self.timeout = timeout
        self.email = email
        self.sms = dict(sms)
        self.sms_config = sms_config
        self.shared = shared  # the counters every process shares, or None (one process)
        self.pacers: dict[str, Pacer] = {
            name: pacer(name, rate, shared) for name, rate in (provider_rate or {}).items()
        }

    def plan(self, message: Message) -> list[Provider]:
        """The providers to try, in failover order."""
        if message.channel == "email":
            return [self.email]
        return [self.sms[name] for name in self.sms_config.route_for(message.to).providers]

    async def deliver(
        self,
        message: Message,
        on_attempt: AttemptHook | None = None,
        expires_at: float | None = None,
        on_start: StartHook | None = None,
        skip: Collection[str] = (),
    ) -> SendResult:
        """Send ``message``; raises the last ProviderError when no provider delivered it.

        ``on_attempt(provider, outcome, seconds, error)`` is awaited after each attempt (the
        outbox records and logs it); ``outcome`` is the result's status (sent, captured) or
        transient, permanent, unknown. ``on_start(provider)`` is awaited just before each attempt
        (the outbox records an SMS attempt durably there: if that fails, nothing is sent). Past
        ``expires_at`` (a pacer can wait long) it raises
        :class:`~otp_service.errors.MessageExpired`. Providers named in ``skip`` are passed
        over (a resend after an undelivered receipt goes to the next ones).
        Each attempt is bounded by ``timeout``: an SMS that gets no answer in time is an
        unknown outcome (it may have gone out), an email a transient failure.
        """
        retry: TransientProviderError | None = None  # a later round may deliver
        refused: ProviderError | None = None  # an account refusal: only another provider may
        plan = [p for p in self.plan(message) if p.name not in skip]
        if not plan:
            raise PermanentProviderError("none", "no provider left to try")
        for provider in plan:
            if (pacer := self.pacers.get(provider.name)) is not None:
                await pacer.wait()
            if expires_at is not None and time.time() >= expires_at:
                raise MessageExpired()
            if on_start is not None:
                await on_start(provider.name)
            started = time.perf_counter()
            try:
                try:
                    async with asyncio.timeout(self.timeout):
                        result = await provider.send(message)
                except TimeoutError:
                    kind = (
                        OutcomeUnknownError if message.channel == "sms" else TransientProviderError
                    )
                    raise kind(provider.name, f"no answer within {self.timeout:g} s") from None
            except ProviderError as exc:
                exc.redact(message.code)
                if on_attempt is not None:
                    await on_attempt(
                        provider.name, outcome_of(exc), time.perf_counter() - started, exc
                    )
                if not exc.failover:
                    raise
                if isinstance(exc, TransientProviderError):
                    retry = exc
                else:
                    refused = exc
                continue
            if on_attempt is not None:
                seconds = time.perf_counter() - started
                await on_attempt(result.provider, result.status, seconds, None)
            return result
        error = retry or refused
        assert error is not None
        raise error

    async def close(self) -> None:
        for provider in {id(p): p for p in (self.email, *self.sms.values())}.values():
            await provider.close()
