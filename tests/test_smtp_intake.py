"""The SMTP intake (capture.smtp): mail sent with a real SMTP client lands in the capture inbox."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from otp_service.config import CaptureSmtpConfig, parse_config
from otp_service.errors import ConfigError
from otp_service.http.app import SERVICES, create_app
from otp_service.text.codes import find_code

from .support.arrival import handler_reached
from .support.command import Service, http
from .support.ports import free_port
from .support.service import ClientFactory


async def intake_service(service: ClientFactory) -> tuple[Any, int]:
    """The service with its SMTP intake on a port the system picks; (client, SMTP port)."""
    client = await service({"capture": {"smtp": {"host": "127.0.0.1", "port": 0}}})
    intake = client.server.app[SERVICES].intake
    assert intake is not None
    return client, intake.port


def mail(
    to: str | list[str], subject: str, text: str | None, html: str | None = None
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Acme <no-reply@acme.test>"
    message["To"] = to if isinstance(to, str) else ", ".join(to)
    message["Subject"] = subject
    message["Message-ID"] = "<abc-123@acme.test>"
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    elif html is not None:
        message.set_content(html, subtype="html")
    return message


async def latest(client: Any, **params: str) -> dict[str, Any]:
    response = await client.get("/v1/messages/latest", params=params)
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def test_smtp_intake_captures_mail_with_its_code(service: ClientFactory) -> None:
    """A multipart mail to two recipients is captured once for each, code, parts and headers."""
    client, port = await intake_service(service)
    message = mail(["ana@example.com", "bob@example.com"], "Your sign-in code",
                   "Hello,\nYour verification code is 428193.\nIt expires in 10 minutes.",
                   "<p>Your verification code is <b>428193</b>.</p>")  # fmt: skip
    errors, answer = await aiosmtplib.send(message, hostname="127.0.0.1", port=port)
    assert errors == {} and "captured" in answer
    for to in ("ana@example.com", "bob@example.com"):
        found = await latest(client, to=to)
        assert found["code"] == "428193" and found["type"] == "SMTP"
        assert found["subject"] == "Your sign-in code" and found["channel"] == "email"
        assert "<b>428193</b>" in found["html"] and "428193" in found["text"]
        headers = dict(found["headers"])
        assert headers["From"] == "Acme <no-reply@acme.test>"
        assert headers["Message-ID"] == "<abc-123@acme.test>"


async def test_smtp_intake_html_only_mail_gets_text_and_code(service: ClientFactory) -> None:
    """An HTML-only mail gets a plain-text rendering, and its code is found in it."""
    client, port = await intake_service(service)
    html = "<html><body><h1>Sign in</h1><p>Enter <strong>771044</strong> to continue.</p></body></html>"
    await aiosmtplib.send(mail("ana@example.com", "Sign in", None, html),
                          hostname="127.0.0.1", port=port)  # fmt: skip
    found = await latest(client, to="ana@example.com")
    assert found["code"] == "771044" and "771044" in found["text"] and "<" not in found["text"]
    assert found["html"].startswith("<html>")


async def test_smtp_intake_wakes_a_waiting_latest(aiohttp_client: Any) -> None:
    """latest?wait= answers with mail that arrives over SMTP while it waits: the request is
    parked in its handler before the mail is sent, and the mail (not the end of the 30 s wait)
    answers it."""
    app = create_app(parse_config({"capture": {"smtp": {"host": "127.0.0.1", "port": 0}}}))
    reached = handler_reached(app, "/v1/messages/latest")
    client = await aiohttp_client(app)
    intake = app[SERVICES].intake
    assert intake is not None
    wait = 30.0
    started = time.monotonic()
    waiting = asyncio.create_task(
        client.get("/v1/messages/latest", params={"to": "ana@example.com", "wait": str(wait)})
    )
    await asyncio.wait_for(reached.wait(), wait)  # the handler is waiting from here on
    assert not waiting.done()
    await aiosmtplib.send(mail("ana@example.com", "Code", "Your code: 5521"),
                          hostname="127.0.0.1", port=intake.port)  # fmt: skip
    response = await asyncio.wait_for(waiting, 2 * wait)
    answered_after = time.monotonic() - started
    assert response.status == 200 and (await response.json())["code"] == "5521"
    assert answered_after < wait  # woken by the mail, not answered at the wait's end


async def test_smtp_intake_off_by_default_and_on_with_true() -> None:
    """capture.smtp is off unless set; true means 127.0.0.1:1025; a bad port is a config error."""
    assert parse_config({}).capture.smtp is None
    assert parse_config({"capture": {"smtp": True}}).capture.smtp == CaptureSmtpConfig(
        "127.0.0.1", 1025
    )
    with pytest.raises(ConfigError) as error:
        parse_config({"capture": {"smtp": {"port": 70000}}})
    assert error.value.problems[0].path == "capture.smtp.port"


def test_find_code_prefers_announced_codes_and_skips_years() -> None:
    """The code announced by a word wins; a lone six-digit number next; years never."""
    assert find_code("Sign in", "Order 12345678. Your code is 4821.") == "4821"
    assert find_code("Welcome", "Use 482913 to sign in. © 2026 Acme") == "482913"
    assert find_code("验证码", "您的验证码\uff1a776655\uff0c10分钟内有效") == "776655"
    assert find_code("Hello", "Call 555-1234 before 2026, v2.10") is None


@pytest.mark.slow
def test_debug_log_of_the_intake_holds_no_address_and_no_code(
    tmp_path: Path, services: list[Service]
) -> None:
    """At ``--log-level DEBUG`` aiosmtpd logs every SMTP line (``RCPT TO`` at INFO, each DATA
    line at DEBUG): the service's process log still holds neither the recipient's address, the
    sender's, nor the code, in text or JSON, while aiosmtpd's lines are there (masked)."""
    code, to, sender = "604931", "ana.secret@example.com", "no-reply@acme.test"
    for log_format in ("text", "json"):
        port = free_port()
        folder = tmp_path / log_format
        folder.mkdir()
        service = Service(folder, {"capture": {"smtp": {"host": "127.0.0.1", "port": port}}},
                          "--log-level", "DEBUG", "--log-format", log_format)  # fmt: skip
        services.append(service)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail(sender, [to], mail(to, "Your code", f"Your code is {code}.").as_bytes())
        status, _, body = http("GET", f"{service.base}/v1/messages/latest?to={to}&wait=10")
        assert status == 200 and json.loads(body)["code"] == code
        log = service.log()
        assert to not in log and "ana.secret" not in log and sender not in log
        assert code not in log
        assert "recip: ***" in log  # aiosmtpd spoke, masked (DATA is read by our code: no lines)
