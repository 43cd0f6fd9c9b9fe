"""Checking a pace where it matters, at a provider: the arrival times a fake records.

A pacer at ``rate`` per second (:mod:`otp_service.delivery.pacing`, a GCRA with an allowance of
one) lets at most ``1 + rate * t`` calls start in any ``t`` seconds; a call reaches the provider
a little after its turn, so the bound checked on arrivals allows ``slack`` seconds for that.
"""

from __future__ import annotations

import math


def most_in_window(times: list[float], window: float) -> int:
    """The most arrivals within any ``window`` seconds."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def paced_bound(rate: float, window: float, slack: float) -> int:
    """The most arrivals ``rate`` allows in any ``window`` seconds, with ``slack`` seconds for
    the way from a call's turn to its arrival."""
    return math.floor(1 + rate * (window + slack))
