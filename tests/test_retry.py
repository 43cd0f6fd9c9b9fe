"""The one retry helper: delays grow and are capped, Retry-After is a floor, only the named
failures are retried."""

from __future__ import annotations

import pytest

from otp_service.retry import Backoff, backoff_delay, retry


def test_backoff_delays_double_within_jitter_and_stop_at_the_cap() -> None:
    """Each delay lies in the upper half of its doubling step, and never above the cap."""
    for attempt, base in ((1, 0.1), (2, 0.2), (3, 0.4), (10, 1.0)):
        for _ in range(50):
            delay = backoff_delay(attempt, 0.1, 1.0)
            assert base / 2 <= delay <= base


def test_backoff_never_waits_less_than_retry_after() -> None:
    """A server's Retry-After is a floor: the delay is never shorter."""
    assert backoff_delay(1, 0.1, 1.0, at_least=30) == 30


def test_backoff_reset_starts_the_delays_over() -> None:
    """After a success the next failure waits the first delay again."""
    backoff = Backoff(first=1.0, cap=100.0)
    for _ in range(5):
        backoff.next()
    assert backoff.next() >= 16
    backoff.reset()
    assert backoff.next() <= 1.0


async def test_retry_retries_named_failures_until_the_call_succeeds() -> None:
    """A transient failure is tried again; the result of the first success comes back."""
    calls: list[float] = []
    told: list[str] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    result = await retry(
        flaky,
        retry_on=ConnectionError,
        backoff=Backoff(first=0.001, cap=0.002),
        on_retry=lambda exc, delay: told.append(str(exc)),
    )
    assert result == "ok"
    assert len(calls) == 3
    assert told == ["down", "down"]


async def test_retry_lets_a_permanent_failure_through_at_once() -> None:
    """An error not named as worth retrying propagates on the first failure."""
    calls: list[int] = []

    async def refused() -> None:
        calls.append(1)
        raise ValueError("never")

    with pytest.raises(ValueError, match="never"):
        await retry(refused, retry_on=ConnectionError, backoff=Backoff(first=0.001, cap=0.01))
    assert calls == [1]
