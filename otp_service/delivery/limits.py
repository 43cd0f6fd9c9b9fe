"""Abuse limits: per recipient, per client IP and per SMS destination prefix.

Each is ``count`` per window by GCRA (see :mod:`otp_service.store.counters`), counted in the
counters port (so replicas sharing a store share counts), under canonical keys
(:mod:`otp_service.text.limit_keys`: one address however it is written, ``+tag`` removed,
IPv6 by /64). A refused request gets 429 ``rate_limited`` with Retry-After and is never sent.
"""

from __future__ import annotations

import time

from ..config import Limit, LimitsConfig
from ..errors import RateLimitedRequest
from ..message.compose import Message
from ..store import CounterStore
from ..text.limit_keys import ip_key, prefix_key, recipient_key


class Limiter:
    def __init__(self, store: CounterStore, config: LimitsConfig) -> None:
        self.store = store
        self.config = config

    async def check(self, message: Message) -> None:
        """Count ``message`` against every limit; raises
        :class:`~otp_service.errors.RateLimitedRequest`."""
        if self.config.enabled is False:  # None: on (Config.limits_on decides before here)
            return
        now = time.time()
        # The client's own limit first: a request it refuses must not spend the allowance of
        # the recipient (someone else's address) or of the number range.
        checks: list[tuple[str, str, str, Limit | None]] = []
        if message.ip is not None:  # given but blank or junk: the shared unparsed-IP key
            checks.append(("per_ip", "client IP", ip_key(message.ip), self.config.per_ip))
        checks.append(
            (
                "per_recipient",
                "recipient",
                recipient_key(message.channel, message.to),
                self.config.per_recipient,
            )
        )
        if message.channel == "sms":
            key = prefix_key(message.to, self.config.sms_prefix_digits)
            checks.append(("per_sms_prefix", "number range", key, self.config.per_sms_prefix))
        for rule, what, key, limit in checks:
            if limit is None:
                continue
            retry_after = await self.store.hit(key, limit.count, limit.window_seconds, now)
            if retry_after is not None:
                raise RateLimitedRequest(what, retry_after, rule)

    async def reset(self, to: str | None) -> None:
        """Forget the counts of one recipient (on both channels), or every count when None:
        emptying the capture inbox starts a test run afresh."""
        keys = None if to is None else [recipient_key(ch, to) for ch in ("email", "sms")]
        await self.store.reset_counters(keys)
