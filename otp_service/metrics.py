"""What operators measure, exposed in Prometheus' text format at ``GET /metrics``.

One :class:`Metrics` per application, each with its own registry (no module-level collectors),
so several apps never share or double-register series. No label holds a recipient, a code or a
token: labels are channels, usage types from a fixed list, HTTP statuses, provider names,
outcomes and limit rules, all bounded.

**Several workers, one view.** Under ``serve --workers N`` the supervisor gives every worker
the same folder in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode): each
process writes its values to memory-mapped files of its own there, and :meth:`Metrics.render`,
in whichever worker answers the scrape, sums the files of every worker, live or dead. So a
counter never goes back when a worker dies or is restarted (the dead worker's file still
counts; the supervisor calls ``mark_process_dead``, which drops only its *live* gauges). Each
gauge says how it combines: the outbox backlog is read from the shared store and the most
recent reading wins (``livemostrecent``: once, not once per worker); ``otp_outbox_in_flight``
sums the live workers; a provider's up/down is its most recent attempt in any worker. With one
process (no folder) it is a plain registry, as before.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from . import __version__

# The *_created series double the output and nobody alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]
# Logto's usage types and the hooks'; anything else is counted as "other" so a caller cannot
# grow the series.
USAGE_TYPES = frozenset(
    {
        "SignIn",
        "Register",
        "ForgotPassword",
        "Generic",
        "Test",
        "OrganizationInvitation",
        "UserPermissionValidation",
        "BindNewIdentifier",
        "MfaVerification",
        "BindMfa",
        # the other identity systems' hooks (otp_service/intake/): their own types and notices
        "Message",
        "Invite",
        "EmailChangeNew",
        "EmailChangeCurrent",
        "PasswordChanged",
        "EmailChanged",
        "PhoneChanged",
        "IdentityLinked",
        "IdentityUnlinked",
        "MfaFactorEnrolled",
        "MfaFactorUnenrolled",
        "UnknownAccount",
    }
)
SUCCESS = frozenset({"sent", "captured"})
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Set by the supervisor of ``serve --workers N`` for its workers (read by prometheus-client when
# it is imported): the folder of every worker's metric files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# An attempt takes from well under a millisecond (capture) to the 30 s attempt timeout.
_ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# From the provider's accept to the handset's receipt: seconds for most, minutes for a few.
_HANDSET_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass(frozen=True)
class ProviderState:
    """A provider's last attempt, for ``/readyz``."""

    outcome: str  # sent, captured, transient, permanent, unknown
    at: float  # unix time


def usage_label(usage_type: str | None) -> str:
    """The ``type`` label: a known Logto usage type, ``other``, or ``none`` (not parsed)."""
    if usage_type is None:
        return "none"
    return usage_type if usage_type in USAGE_TYPES else "other"


class Metrics:
    """The service's collectors, registered in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "otp_requests",
            "Send requests answered, by channel, usage type and HTTP status.",
            ["channel", "type", "status"],
            registry=r,
        )
        self.attempts = Counter(
            "otp_delivery_attempts",
            "Delivery attempts at a provider, by outcome (sent, captured, transient, permanent, "
            "unknown).",
            ["channel", "provider", "outcome"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "otp_delivery_attempt_seconds",
            "Duration of one delivery attempt at one provider.",
            ["channel", "provider"],
            buckets=_ATTEMPT_BUCKETS,
            registry=r,
        )
        self.messages = Counter(
            "otp_messages",
            "Messages that reached a final state (sent, captured, failed, expired).",
            ["channel", "status"],
            registry=r,
        )
        self.recovered_unknown = Counter(
            "otp_sms_recovered_unknown",
            "SMS found cut off mid-attempt (a crash, a lost replica) and failed as an unknown "
            "outcome instead of being resent, by provider.",
            ["provider"],
            registry=r,
        )
        # Read from the store, which every worker shares: the latest reading of any worker.
        self.pending = Gauge(
            "otp_outbox_pending", "Accepted messages not yet in a final state.",
            registry=r, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.oldest_pending = Gauge(
            "otp_outbox_oldest_pending_seconds",
            "Age of the oldest message not yet in a final state (0 when none).",
            registry=r, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.in_flight = Gauge(
            "otp_outbox_in_flight", "Messages being delivered right now (all workers).",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.limit_refusals = Counter(
            "otp_limit_refusals",
            "Requests refused by an abuse limit, by rule (per_recipient, per_ip, per_sms_prefix).",
            ["rule"],
            registry=r,
        )
        self.intake_requests = Counter(
            "otp_intake_requests",
            "Hook requests from other identity systems (POST /v1/hooks/...), by intake, "
            "channel, usage type and the outcome's HTTP status as /v1/email would answer it "
            "(one per message asked for).",
            ["intake", "channel", "type", "status"],
            registry=r,
        )
        self.provider_up = Gauge(
            "otp_provider_up",
            "1 when the provider's last delivery attempt succeeded, 0 when it failed.",
            ["provider"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.receipts = Counter(
            "otp_sms_receipts",
            "Delivery receipts taken, by provider and result (accepted, duplicate, unmatched, "
            "mismatch, unsigned, forged, invalid, not_configured).",
            ["provider", "result"],
            registry=r,
        )
        self.delivery = Counter(
            "otp_sms_delivery",
            "SMS by delivery state (delivered, undelivered, unknown), provider and destination "
            "country (ISO code; ZZ: none).",
            ["provider", "country", "state"],
            registry=r,
        )
        self.handset_seconds = Histogram(
            "otp_sms_time_to_handset_seconds",
            "From the provider accepting an SMS to its delivered receipt.",
            ["provider"],
            buckets=_HANDSET_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "otp_sms_undelivered_failovers",
            "Resends after an undelivered receipt, by the provider that resent and outcome "
            "(sent, failed, cancelled: the first turned delivered).",
            ["provider", "outcome"],
            registry=r,
        )
        # Per process and the same in each (not kept in the multiprocess files): rendered from
        # this registry of its own besides the files.
        self.own = CollectorRegistry()
        build = Info("otp_build", "The running otp-service.", registry=self.own)
        build.info({"version": __version__, "python": platform.python_version()})
        if r is not self.own:
            r.register(build)
        self._refresh: list[tuple[Gauge, Callable[[], float]]] = []
        for channel in ("email", "sms"):  # the final-state series exist from the start
            for status in ("sent", "captured", "failed", "expired"):
                self.messages.labels(channel, status)
        self.providers: dict[str, ProviderState] = {}
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}  # see _child

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once: labels() checks and locks on every call,
        a measurable cost per request. The label values come from small fixed sets."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def logto_templates(self, read: Callable[[], float]) -> None:
        """Export whether Logto's email templates are usable (``read()``: 1 or 0), read again
        at every scrape (a value, not a function: a function is not kept in the worker files)."""
        gauge = Gauge(
            "otp_logto_templates_up",
            "1 when the email templates kept in Logto were read and compiled.",
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        gauge.set(read())
        self._refresh.append((gauge, read))

    def request(self, channel: str, usage_type: str | None, status: int) -> None:
        self._child(self.requests, channel, usage_label(usage_type), str(status)).inc()

    def intake_request(
        self, intake: str, channel: str, usage_type: str | None, status: int
    ) -> None:
        self.intake_requests.labels(intake, channel, usage_label(usage_type), str(status)).inc()

    def attempt(self, channel: str, provider: str, outcome: str, seconds: float) -> None:
        """One attempt at ``provider``; also its up/down state and its last outcome."""
        self._child(self.attempts, channel, provider, outcome).inc()
        self._child(self.attempt_seconds, channel, provider).observe(seconds)
        self._child(self.provider_up, provider).set(1 if outcome in SUCCESS else 0)
        self.providers[provider] = ProviderState(outcome, time.time())

    def finished(self, channel: str, status: str) -> None:
        self._child(self.messages, channel, status).inc()

    def recovered(self, provider: str | None) -> None:
        """An SMS recovered as an unknown outcome (it also counts as a failed message)."""
        self.recovered_unknown.labels(provider or "unknown").inc()
        self.finished("sms", "failed")

    def receipt(self, provider: str, result: str) -> None:
        """A delivery receipt taken (or refused) from ``provider``."""
        self.receipts.labels(provider, result).inc()

    def delivery_state(
        self, provider: str, country: str, state: str, seconds: float | None = None
    ) -> None:
        """An SMS reached a delivery state; ``seconds`` to the handset when delivered."""
        self.delivery.labels(provider, country, state).inc()
        if seconds is not None:
            self.handset_seconds.labels(provider).observe(seconds)

    def failover(self, provider: str, outcome: str) -> None:
        self.failovers.labels(provider, outcome).inc()

    def refused_by_limit(self, rule: str) -> None:
        self.limit_refusals.labels(rule).inc()

    def outbox(self, pending: int, oldest_created_at: float | None, in_flight: int) -> None:
        self.pending.set(pending)
        age = time.time() - oldest_created_at if oldest_created_at is not None else 0.0
        self.oldest_pending.set(max(0.0, age))
        self.in_flight.set(in_flight)

    def render(self) -> bytes:
        """The text exposition of every collector: of this process, or, under ``--workers``,
        summed over every worker of this replica (see the module)."""
        for gauge, read in self._refresh:
            gauge.set(read())
        folder = os.environ.get(MULTIPROC_ENV)
        if not folder:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, folder)  # type: ignore[no-untyped-call]
        return generate_latest(merged) + generate_latest(self.own)
