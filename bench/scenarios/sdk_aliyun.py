"""SMS run (a) for Aliyun: its async SDK, one client, asyncio.gather bounded by a semaphore.

    python -m bench.scenarios.sdk_aliyun --fake-info F --count N --seconds S --concurrency C

``Client(Config(..., endpoint="127.0.0.1:PORT", protocol="http"))`` and
``await client.send_sms_with_options_async(SendSmsRequest(...), RuntimeOptions(autoretry=False))``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable
from typing import Any

from bench.common import phone_digits
from bench.scenarios.sdk import (
    SMS_TIMEOUT_SECONDS,
    Refused,
    child_args,
    drive_async,
    logto_connector,
    report,
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

    async def send(request: Any) -> None:
        response = await client.send_sms_with_options_async(request, runtime)
        if response.body is None or response.body.code != "OK":
            code = response.body.code if response.body is not None else "empty"
            raise Refused(f"business error {code}")

    def prepare(seq: int) -> Awaitable[None]:
        return send(
            sms_models.SendSmsRequest(
                phone_numbers=phone_digits("sms-aliyun", seq)[2:],  # mainland: without 86
                sign_name=template["sign_name"],
                template_code=template["template_code"],
                template_param=template["template_param"],
            )
        )

    return await drive_async(args, prepare)


def main(argv: list[str] | None = None) -> int:
    return report(asyncio.run(measure(*child_args("aliyun", argv))))


if __name__ == "__main__":
    sys.exit(main())
