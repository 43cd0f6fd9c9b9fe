"""Failover and classification of provider faults that are not the provider's documented
answers: Aliyun throttling on HTTP 429, gateway error pages, an SMTP server that speaks garbage.

The service runs over real HTTP with the real SDKs calling the Aliyun and Vonage fakes
(:mod:`tests.support.fakes`) and a real socket server for the garbage-speaking SMTP peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from .support.fakes import Reply
from .support.fakes import aliyun as aliyun_fakes
from .support.fakes import vonage as vonage_fakes
from .support.fakes.aliyun import FakeAliyun, aliyun_error, logto_aliyun_json
from .support.fakes.vonage import FakeVonage, logto_vonage_json
from .support.service import ClientFactory
from .support.signin import signin

fake_vonage = vonage_fakes.fake_vonage
fake_aliyun = aliyun_fakes.fake_aliyun

CHINA = "+8613800138000"
FAST = {"wait_seconds": 10, "retry_delay_seconds": 0.05, "backoff_max_seconds": 0.3,
        "poll_seconds": 0.05, "timeout_seconds": 5}  # fmt: skip
TEMPLATES = [
    {"usageType": usage, "contentType": "text/plain", "subject": "Code",
     "content": "Your code is {{code}}."}
    for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
]  # fmt: skip


def sms_config(vonage: FakeVonage, aliyun: FakeAliyun) -> dict[str, Any]:
    """+86 routed to Aliyun, then Vonage."""
    return {
        "sms": {
            "provider": "vonage", "vonage": logto_vonage_json(), "aliyun": logto_aliyun_json(),
            "endpoints": {"vonage": vonage.endpoint(), "aliyun": aliyun.endpoint()},
            "routes": [{"prefixes": ["+86"], "providers": ["aliyun", "vonage"]}],
        },
        "limits": {"enabled": False},
        "delivery": FAST,
    }  # fmt: skip


@pytest.mark.parametrize(
    "reply",
    [
        aliyun_error(429, "Throttling.User", "Request was denied due to user flow control."),
        aliyun_error(429, "Throttling", "Request was denied due to flow control."),
        Reply(status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>"),
        Reply(status=503, text="<html><body>Service Temporarily Unavailable</body></html>"),
    ],
    ids=["429-throttling-user", "429-throttling", "502-html", "503-html"],
)
async def test_aliyun_throttling_and_gateway_pages_fail_over_to_vonage(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun, reply: Reply
) -> None:
    """Aliyun's HTTP 429 throttling and a 5xx with an HTML body are transient: the text goes to
    Vonage at once, never a permanent 502 or an unknown outcome."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    fake_aliyun.reply_next(reply)
    response = await client.post("/v1/sms", json=signin(CHINA, locale=None))
    body = await response.json()
    assert response.status == 200 and body["provider"] == "vonage", body
    record = await (await client.get(f"/v1/messages/{body['id']}")).json()
    assert [(a["provider"], a["outcome"]) for a in record["attempts"]] == [
        ("aliyun", "transient"), ("vonage", "sent"),
    ]  # fmt: skip
    assert len(fake_aliyun.sms) == 1 and len(fake_vonage.sms) == 1


class GarbageSmtp:
    """A TCP server that answers every line (and the greeting) with something not SMTP."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n")
            await writer.drain()
            while await reader.readline():
                writer.write(b"<html>garbage</html>\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port


@pytest.fixture
async def garbage_smtp() -> AsyncIterator[GarbageSmtp]:
    garbage = GarbageSmtp()
    garbage.server = await asyncio.start_server(garbage.handle, "127.0.0.1", 0)
    try:
        yield garbage
    finally:
        garbage.server.close()


async def test_smtp_server_answering_garbage_is_transient_and_retried(
    service: ClientFactory, garbage_smtp: GarbageSmtp
) -> None:
    """A peer that answers with no SMTP reply is a transient failure: 202 queued and retried,
    never a permanent 502 provider_rejected."""
    config = {
        "email": {"provider": "smtp", "smtp": {
            "host": "127.0.0.1", "port": garbage_smtp.port, "fromEmail": "a@acme.example",
            "templates": TEMPLATES, "connectionTimeout": 1000, "greetingTimeout": 1000,
            "socketTimeout": 1000}},
        "templates": {"bundled": False}, "limits": {"enabled": False},
        "delivery": FAST | {"wait_seconds": 0.3},
    }  # fmt: skip
    client = await service(config)
    response = await client.post("/v1/email", json=signin("a@example.com", locale=None))
    body = await response.json()
    assert response.status == 202 and body["status"] == "queued", body
    await asyncio.sleep(0.5)
    record = await (await client.get(f"/v1/messages/{body['id']}")).json()
    assert record["status"] == "queued"
    assert {a["outcome"] for a in record["attempts"]} == {"transient"}
    assert "not an SMTP reply" in record["attempts"][0]["error"]
    assert garbage_smtp.connections >= 2
