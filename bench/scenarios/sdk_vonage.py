"""SMS run (a) for Vonage: its synchronous SDK, one client shared by --concurrency threads.

    python -m bench.scenarios.sdk_vonage --fake-info F --count N --seconds S --concurrency C

``Vonage(Auth(key, secret), HttpClientOptions(rest_host=..., timeout=5))`` and
``client.sms.send(SmsMessage(to, from_, text))``; ``REQUESTS_CA_BUNDLE`` (set by the parent)
points at the fake's test CA. Counts the pooled connections urllib3 discarded.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.common import phone_digits
from bench.scenarios.sdk import (
    SMS_TIMEOUT_SECONDS,
    child_args,
    drive_threads,
    logto_connector,
    report,
    sms_message,
)


def measure(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """Vonage's synchronous SDK: one client; ``concurrency`` threads share it."""
    import logging

    from vonage import Auth, HttpClientOptions, Vonage
    from vonage_sms import SmsMessage

    # requests reads REQUESTS_CA_BUNDLE on every request (set globally on these machines):
    # point it at the fake's test CA. The parent sets it for this process only.
    assert os.environ.get("REQUESTS_CA_BUNDLE") == info["ca_file"]
    discarded = Counter[str]()

    class _Count(logging.Handler):  # urllib3: "Connection pool is full, discarding connection"
        def emit(self, record: logging.LogRecord) -> None:
            discarded[record.getMessage().split(",")[0]] += 1

    pool_log = logging.getLogger("urllib3.connectionpool")
    pool_log.addHandler(_Count())
    pool_log.propagate = False
    connector = logto_connector("vonage")
    # --client wide: the pool as wide as the threads (the SDK's pool_maxsize), as the service
    # keeps it; by default the SDK's 10, which discards connections at concurrency 50.
    pool = {"pool_maxsize": max(10, args.concurrency)} if args.client == "wide" else {}
    client = Vonage(
        Auth(api_key=connector["apiKey"], api_secret=connector["apiSecret"]),
        HttpClientOptions(rest_host=info["host"], timeout=SMS_TIMEOUT_SECONDS, **pool),
    )
    template = sms_message("vonage", 0)

    def prepare(seq: int) -> Callable[[], object]:
        to = phone_digits("sms-vonage", seq)
        return lambda: client.sms.send(
            SmsMessage(to=to, from_=template["from"], text=template["text"])
        )

    result = drive_threads(args, prepare)
    result["discarded_connections"] = sum(discarded.values())
    return result


def main(argv: list[str] | None = None) -> int:
    return report(measure(*child_args("vonage", argv)))


if __name__ == "__main__":
    sys.exit(main())
