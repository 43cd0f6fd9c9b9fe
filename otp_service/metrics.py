"""Counters for operators, exposed in Prometheus' text format at ``GET /metrics``.

No client library: a handful of labelled counters and gauges, no per-recipient labels (they
would be unbounded and personal).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

_HELP = {
    "otp_requests_total": "Send requests answered, by channel and HTTP status.",
    "otp_attempts_total": "Delivery attempts, by channel, provider and outcome.",
    "otp_outbox_in_flight": "Messages being delivered by this process right now.",
    "otp_logto_templates_up": "1 when the email templates kept in Logto were read and compiled.",
}


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.attempts: Counter[tuple[str, str, str]] = Counter()
        self.gauges: dict[str, Callable[[], float]] = {}

    def request(self, channel: str, status: int) -> None:
        self.requests[(channel, status)] += 1

    def attempt(self, channel: str, provider: str, outcome: str) -> None:
        self.attempts[(channel, provider, outcome)] += 1

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str) -> None:
            lines.append(f"# HELP {name} {_HELP[name]}")
            lines.append(f"# TYPE {name} {kind}")

        family("otp_requests_total", "counter")
        for (channel, status), count in sorted(self.requests.items()):
            lines.append(f'otp_requests_total{{channel="{channel}",status="{status}"}} {count}')
        family("otp_attempts_total", "counter")
        for (channel, provider, outcome), count in sorted(self.attempts.items()):
            lines.append(
                f'otp_attempts_total{{channel="{channel}",provider="{provider}",'
                f'outcome="{outcome}"}} {count}'
            )
        for name, read in sorted(self.gauges.items()):
            family(name, "gauge")
            lines.append(f"{name} {read():g}")
        return "\n".join(lines) + "\n"
