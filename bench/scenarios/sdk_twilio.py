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
from typing import Any

from bench.common import phone_digits
from bench.scenarios.sdk import (
    SMS_TIMEOUT_SECONDS,
    child_args,
    drive_async,
    drive_threads,
    logto_connector,
    report,
    sms_message,
)


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

    async def send(seq: int) -> None:
        await client.messages.create_async(
            to="+" + phone_digits("sms-twilio", seq),
            messaging_service_sid=template["messaging_service_sid"],
            body=template["body"],
        )

    result = await drive_async(args, send)
    await http.close()
    return result


def measure_threads(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """The SDK's requests client: one client; ``concurrency`` threads share it."""
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

    def send(seq: int) -> None:
        client.messages.create(
            to="+" + phone_digits("sms-twilio", seq),
            messaging_service_sid=template["messaging_service_sid"],
            body=template["body"],
        )

    return drive_threads(args, lambda seq: lambda: send(seq))


def main(argv: list[str] | None = None) -> int:
    args, info = child_args("twilio", argv)
    if args.client == "threads":
        return report(measure_threads(args, info))
    return report(asyncio.run(measure_aiohttp(args, info)))


if __name__ == "__main__":
    sys.exit(main())
