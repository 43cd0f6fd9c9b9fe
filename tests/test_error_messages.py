"""Error bodies an end user can read: Logto shows our error message on its sign-in page."""

from __future__ import annotations

import re
from typing import Any

import pytest

from otp_service.errors import PermanentProviderError, short_reason
from otp_service.providers.smtp import classify

from .support.service import ClientFactory
from .support.smtp_server import ServerFactory

CODE = "482913"
_INTERNALS = re.compile(
    r"Traceback|File \"|\.py\b|/[\w.-]+/|Errno|\b\d{1,3}(?:\.\d{1,3}){3}\b|0x[0-9a-f]{6,}|"
    r"Exception|Error\b|aiohttp|aiosmtplib|jinja|sqlite",
)


def assert_readable(body: dict[str, Any]) -> None:
    """Short, one line, plain words: no stack frame, path, address of ours or class name."""
    message = body["error"]["message"]
    assert isinstance(message, str) and 0 < len(message) <= 200, message
    assert "\n" not in message and not _INTERNALS.search(message), message
    assert CODE not in message
    assert re.fullmatch(r"[a-z_]+", body["error"]["code"])


BAD_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("invalid_json", {"data": b"{not json", "headers": {"Content-Type": "application/json"}}),
    ("unsupported_media_type", {"data": b"to=x", "headers": {"Content-Type": "text/plain"}}),
    ("invalid_request", {"json": ["not", "an", "object"]}),
    ("missing_field", {"json": {"type": "SignIn"}}),
    ("invalid_type", {"json": {"to": "a@example.com", "type": "Sign In!"}}),
    ("invalid_email", {"json": {"to": "not-an-address", "type": "SignIn"}}),
    ("invalid_email", {"json": {"to": "a@-bad-.example", "type": "SignIn"}}),
    ("invalid_header_value", {"json": {"to": "a@example.com\r\nBcc: x@y.z", "type": "SignIn"}}),
    ("invalid_request", {"json": {"to": "a@example.com", "type": "SignIn", "payload": [1]}}),
    ("invalid_request", {"json": {"to": "a@example.com", "type": "SignIn", "ttl": -1}}),
    ("payload_too_large", {"json": {"to": "a@example.com", "type": "SignIn", "x": "y" * 70000}}),
]


@pytest.mark.parametrize(("code", "request_args"), BAD_REQUESTS)
async def test_error_message_bad_request_is_plain(
    service: ClientFactory, code: str, request_args: dict[str, Any]
) -> None:
    """Every refusal of a malformed request is a short plain sentence with a stable code."""
    client = await service({"store": {"path": ":memory:"}})
    response = await client.post("/v1/email", **request_args)
    body = await response.json()
    assert 400 <= response.status < 500 and body["error"]["code"] == code
    assert_readable(body)


async def test_error_message_template_errors_are_plain(service: ClientFactory) -> None:
    """A template failing to render reads plainly (no Jinja internals)."""
    client = await service(
        {
            "store": {"path": ":memory:"},
            "email": {
                "smtp": {
                    "host": "127.0.0.1", "port": 25, "fromEmail": "a@example.com",
                    "templates": [
                        {"usageType": t, "contentType": "text/plain", "subject": "S",
                         "content": "{{ user.name.upper() }} {{ nothing() }}"}
                        for t in ("SignIn", "Register", "ForgotPassword", "Generic")
                    ],
                }
            },
        }
    )  # fmt: skip
    response = await client.post(
        "/v1/email", json={"to": "a@example.com", "type": "SignIn", "payload": {"code": CODE}}
    )
    body = await response.json()
    assert response.status == 422 and body["error"]["code"] == "template_error"
    assert_readable(body)


async def test_error_message_provider_refusal_gives_short_reason_only(
    service: ClientFactory, smtp_servers: ServerFactory
) -> None:
    """A mail server's refusal shows its status code, not its raw reply (hosts, paths, code)."""
    server = smtp_servers()
    raw = (
        f"550 5.7.1 Rejected by /etc/postfix/header_checks on mx1.internal.example "
        f"[10.0.0.12]: message with {CODE} from <no-reply@acme.example> looks like spam"
    )
    server.reply_next("DATA", raw)
    client = await service(
        {
            "store": {"path": ":memory:"},
            "email": {
                "provider": "smtp",
                "smtp": {"host": "127.0.0.1", "port": server.port, "fromEmail": "a@acme.example"},
            },
            "delivery": {"retry_delay_seconds": 0.01, "wait_seconds": 5},
        }
    )
    response = await client.post(
        "/v1/email", json={"to": "ana@example.com", "type": "SignIn", "payload": {"code": CODE}}
    )
    body = await response.json()
    assert response.status == 502 and body["error"]["code"] == "provider_rejected"
    assert "550 5.7.1" in body["error"]["message"] and "postfix" not in body["error"]["message"]
    assert_readable(body)


def test_error_message_connection_failure_hides_address() -> None:
    """A refused connection says the mail server could not be reached, not where it is."""
    error = classify(ConnectionRefusedError(111, "Connect call failed ('10.1.2.3', 2525)"))
    assert error.reason == "could not connect to the mail server"
    assert "10.1.2.3" in error.detail  # the operator still sees it in the attempt record


def test_error_message_reason_is_one_short_line_with_the_code_masked() -> None:
    """A provider's long reason is cut to one line of 100 characters, the code masked."""
    error = PermanentProviderError("vonage", "status 9: " + "Quota\nExceeded " * 8 + CODE)
    error.redact(CODE)
    assert len(error.reason) <= 100 and "\n" not in error.reason and CODE[:3] not in error.reason
    assert short_reason("a\x00b\r\nc") == "a b c"
