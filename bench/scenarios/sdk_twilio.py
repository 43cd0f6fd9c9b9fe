"""SMS run (a) for Twilio: its SDK with its aiohttp client, or its requests client on threads.

    python -m bench.scenarios.sdk_twilio --fake-info F --count N --seconds S --concurrency C \
        [--client aiohttp|threads]

``aiohttp`` (what otp-service uses): ``Client(sid, token, http_client=AsyncTwilioHttpClient())``
and ``await client.messages.create_async(...)``, ``asyncio.gather`` bounded by a semaphore, one
``aiohttp`` session trusting the fake's CA. ``threads``: the default ``TwilioHttpClient``
(``requests``) shared by ``--concurrency`` threads calling ``client.messages.create(...)``, its
pool widened to the concurrency (as otp-service does for Vonage), ``REQUESTS_CA_BUNDLE`` (set by
the parent) trusting the fake's CA.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
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


def _finish(
    args: argparse.Namespace, latencies: list[float], errors: Counter[str], meter: Meter
) -> dict[str, Any]:
    return sdk_result(
        latencies, errors, meter.elapsed, meter.own, meter.fake,
        (meter.machine0, meter.machine1), args.concurrency, args.warmup,
    )  # fmt: skip


async def measure_aiohttp(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """The SDK's aiohttp client: one session, ``create_async`` gathered under a semaphore."""
    import aiohttp
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

    connector = logto_connector("twilio")
    http = AsyncTwilioHttpClient(pool_connections=False)
    http.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=args.concurrency, ssl=ssl.create_default_context(cafile=info["ca_file"])
        ),
        timeout=aiohttp.ClientTimeout(total=SMS_TIMEOUT_SECONDS),
    )
    client = Client(connector["accountSID"], connector["authToken"], http_client=http)
    client.api.base_url = info["url"]
    template = sms_message("twilio", 0)
    errors: Counter[str] = Counter()
    gate = asyncio.Semaphore(args.concurrency)

    async def one(seq: int, deadline: float, latencies: list[float] | None) -> None:
        async with gate:
            if time.perf_counter() >= deadline:
                return
            started = time.perf_counter()
            try:
                await client.messages.create_async(
                    to="+" + phone_digits("sms-twilio", seq),
                    messaging_service_sid=template["messaging_service_sid"],
                    body=template["body"],
                )
            except Exception as exc:
                errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            if latencies is not None:
                latencies.append(time.perf_counter() - started)

    async def run(first: int, count: int, latencies: list[float] | None) -> None:
        deadline = time.perf_counter() + args.seconds
        await asyncio.gather(*(one(first + i, deadline, latencies) for i in range(count)))

    await run(args.seq, args.warmup, None)
    warm_errors = sum(errors.values())
    errors.clear()
    latencies: list[float] = []
    with Meter(args.fake_pid) as meter:
        await run(args.seq + args.warmup, args.count, latencies)
    await http.close()
    result = _finish(args, latencies, errors, meter)
    result["warmup_errors"] = warm_errors
    return result


def measure_threads(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """The SDK's requests client: one client; ``concurrency`` threads share it."""
    from concurrent.futures import ThreadPoolExecutor

    from requests.adapters import HTTPAdapter
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    connector = logto_connector("twilio")
    http = TwilioHttpClient(timeout=SMS_TIMEOUT_SECONDS)
    assert http.session is not None
    http.session.mount("https://", HTTPAdapter(pool_maxsize=max(10, args.concurrency)))
    client = Client(connector["accountSID"], connector["authToken"], http_client=http)
    client.api.base_url = info["url"]
    template = sms_message("twilio", 0)
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
                started = time.perf_counter()
                try:
                    client.messages.create(
                        to="+" + phone_digits("sms-twilio", seq),
                        messaging_service_sid=template["messaging_service_sid"],
                        body=template["body"],
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
    result = _finish(args, latencies, errors, meter)
    result["warmup_errors"] = warm_errors
    return result


def main(argv: list[str] | None = None) -> int:
    args, info = child_args("twilio", argv)
    if args.client == "threads":
        return report(measure_threads(args, info))
    return report(asyncio.run(measure_aiohttp(args, info)))


if __name__ == "__main__":
    sys.exit(main())
