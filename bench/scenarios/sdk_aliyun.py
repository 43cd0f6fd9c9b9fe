"""SMS run (a) for Aliyun: its async SDK, one client, asyncio.gather bounded by a semaphore.

    python -m bench.scenarios.sdk_aliyun --fake-info F --count N --seconds S --concurrency C

``Client(Config(..., endpoint="127.0.0.1:PORT", protocol="http"))`` and
``await client.send_sms_with_options_async(SendSmsRequest(...), RuntimeOptions(autoretry=False))``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
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


async def measure(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """Aliyun's async SDK: one client; asyncio.gather bounded by a semaphore."""
    from alibabacloud_dysmsapi20170525 import models as sms_models
    from alibabacloud_dysmsapi20170525.client import Client
    from alibabacloud_tea_openapi import utils_models as open_api_models
    from darabonba.runtime import RuntimeOptions

    connector = logto_connector("aliyun")
    client = Client(
        open_api_models.Config(
            access_key_id=connector["accessKeyId"],
            access_key_secret=connector["accessKeySecret"],
            endpoint=info["host"],
            protocol="http",
            read_timeout=SMS_TIMEOUT_SECONDS * 1000,
            connect_timeout=SMS_TIMEOUT_SECONDS * 1000,
        )
    )
    runtime = RuntimeOptions(autoretry=False)
    template = sms_message("aliyun", 0)
    errors: Counter[str] = Counter()
    gate = asyncio.Semaphore(args.concurrency)

    async def one(seq: int, deadline: float, latencies: list[float] | None) -> None:
        async with gate:
            if time.perf_counter() >= deadline:
                return
            request = sms_models.SendSmsRequest(
                phone_numbers=phone_digits("sms-aliyun", seq)[2:],  # mainland: without 86
                sign_name=template["sign_name"],
                template_code=template["template_code"],
                template_param=template["template_param"],
            )
            started = time.perf_counter()
            try:
                response = await client.send_sms_with_options_async(request, runtime)
                if response.body is None or response.body.code != "OK":
                    code = response.body.code if response.body is not None else "empty"
                    errors[f"business error {code}"] += 1
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
    result = sdk_result(
        latencies, errors, meter.elapsed, meter.own, meter.fake,
        (meter.machine0, meter.machine1), args.concurrency, args.warmup,
    )  # fmt: skip
    result["warmup_errors"] = warm_errors
    return result


def main(argv: list[str] | None = None) -> int:
    return report(asyncio.run(measure(*child_args("aliyun", argv))))


if __name__ == "__main__":
    sys.exit(main())
