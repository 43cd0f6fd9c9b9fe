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
import threading
import time
from collections import Counter
from typing import Any

from bench.common import phone_digits
from bench.scenarios.sdk import (
    SMS_TIMEOUT_SECONDS,
    Meter,
    child_args,
    logto_connector,
    report,
    sdk_result,
    sms_message,
)


def measure(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """Vonage's synchronous SDK: one client; ``concurrency`` threads share it."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

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
    client = Vonage(
        Auth(api_key=connector["apiKey"], api_secret=connector["apiSecret"]),
        HttpClientOptions(rest_host=info["host"], timeout=SMS_TIMEOUT_SECONDS),
    )
    template = sms_message("vonage", 0)
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def run(first: int, count: int, seconds: float, latencies: list[float] | None) -> None:
        numbers = iter(range(first, first + count))
        deadline = time.perf_counter() + seconds

        def worker() -> None:
            while time.perf_counter() < deadline:
                with lock:
                    seq = next(numbers, None)
                if seq is None:
                    return
                to = phone_digits("sms-vonage", seq)
                started = time.perf_counter()
                try:
                    client.sms.send(
                        SmsMessage(to=to, from_=template["from"], text=template["text"])
                    )
                except Exception as exc:
                    errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                if latencies is not None:
                    latencies.append(time.perf_counter() - started)

        if args.concurrency == 1:
            worker()
            return
        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="sdk") as pool:
            for future in [pool.submit(worker) for _ in range(args.concurrency)]:
                future.result()

    run(args.seq, args.warmup, args.seconds, None)
    warm_errors = sum(errors.values())
    errors.clear()
    latencies: list[float] = []
    with Meter(args.fake_pid) as meter:
        run(args.seq + args.warmup, args.count, args.seconds, latencies)
    result = sdk_result(
        latencies, errors, meter.elapsed, meter.own, meter.fake,
        (meter.machine0, meter.machine1), args.concurrency, args.warmup,
    )  # fmt: skip
    result["warmup_errors"] = warm_errors
    result["discarded_connections"] = sum(discarded.values())
    return result


def main(argv: list[str] | None = None) -> int:
    return report(measure(*child_args("vonage", argv)))


if __name__ == "__main__":
    sys.exit(main())
