"""A fake of Vonage's SMS API over HTTPS, for the real ``vonage`` SDK.

Wire format (https://developer.vonage.com/en/api/sms): ``POST /sms/json`` with a form body
(``from``, ``to``, ``text``, ``type``, ``client-ref`` ...) and ``Authorization: Basic
base64(key:secret)``. The answer is HTTP 200 with ``{"message-count", "messages": [...]}``; each
message has ``status`` ``"0"`` when accepted, else an ``error-text``
(https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms). Transport-level
failures (401, 429, 5xx, a dropped connection, a body that is not JSON) are scripted replies.

The certificate comes from a ``trustme`` test CA: point ``sms.endpoints.vonage.ca_file`` at
:attr:`FakeVonage.ca_file` (:meth:`FakeVonage.endpoint` does), since ``REQUESTS_CA_BUNDLE`` is
set globally on these machines and the provider trusts only the configured file.
"""

from __future__ import annotations

import atexit
import base64
import functools
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from . import DROP, FakeServer, Recorded, Reply, started

__all__ = [
    "DROP",
    "FakeVonage",
    "fake_vonage",
    "logto_vonage_json",
    "vonage_http",
    "vonage_not_json",
    "vonage_status",
]

# https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms#sms-api-error-codes
STATUS_TEXT = {
    "1": "Throughput Rate Exceeded - please wait [ 1000 ] and retry",
    "2": "Missing to param",
    "4": "Bad Credentials",
    "5": "Internal Error",
    "9": "Quota Exceeded - rejected",
}


@functools.cache
def _ca() -> trustme.CA:
    return trustme.CA()  # key generation is the slow part: one CA per process


@functools.cache
def _ca_file() -> str:
    folder = Path(tempfile.mkdtemp(prefix="fake-vonage-ca-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "ca.pem"
    _ca().cert_pem.write_to_path(str(path))
    return str(path)


def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _ca().issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def vonage_status(status: str, error_text: str | None = None) -> Reply:
    """HTTP 200 with one message refused with ``status`` (``"1"`` throttled, ``"9"`` quota)."""
    text = error_text if error_text is not None else STATUS_TEXT.get(status, "Error")
    return Reply(json={"message-count": "1", "messages": [{"status": status, "error-text": text}]})


def vonage_http(status: int, retry_after: str | None = None) -> Reply:
    """An HTTP error as Vonage's gateway sends it (problem+json body)."""
    titles = {401: "Unauthorized", 429: "Too Many Requests", 500: "Internal Server Error"}
    body = {
        "type": f"https://developer.vonage.com/api-errors#{status}",
        "title": titles.get(status, "Error"),
        "detail": "You did not provide correct credentials." if status == 401 else "Try later.",
        "instance": str(uuid.uuid4()),
    }
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(status=status, json=body, headers=headers)


def vonage_not_json() -> Reply:
    """HTTP 200 whose body is not JSON (a proxy's error page, say)."""
    return Reply(text="<html><body>Bad gateway</body></html>")


class FakeVonage(FakeServer):
    """Vonage's ``POST /sms/json`` on ``https://127.0.0.1:port``, recording each request."""

    scheme = "https"

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port, ssl_context=_server_context())
        self.remaining_balance = 10.0

    ca_file = property(lambda self: _ca_file(), doc="The PEM file of the test CA.")

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/sms/json", self.handle)]

    def default_reply(self, request: Recorded) -> Reply:
        """Accept the message, as Vonage does: status "0" with an id, price and balance."""
        with self.lock:
            self.remaining_balance -= 0.0333
            balance = f"{self.remaining_balance:.8f}"
        message = {
            "to": request.form.get("to", ""),
            "message-id": uuid.uuid4().hex[:16].upper(),
            "status": "0",
            "remaining-balance": balance,
            "message-price": "0.03330000",
            "network": "20810",
        }
        if "client-ref" in request.form:
            message["client-ref"] = request.form["client-ref"]
        return Reply(json={"message-count": "1", "messages": [message]})

    @property
    def sms(self) -> list[dict[str, str]]:
        """The form of every ``/sms/json`` request received, oldest first."""
        return [r.form for r in self.requests if r.path == "/sms/json"]

    def endpoint(self, timeout_seconds: float = 1) -> dict[str, Any]:
        """The ``sms.endpoints.vonage`` config that points the service at this fake."""
        return {
            "host": self.host,
            "protocol": "https",
            "ca_file": self.ca_file,
            "timeout_seconds": timeout_seconds,
        }


def basic_auth(request: Recorded) -> tuple[str, str] | None:
    """The (api_key, api_secret) of a request's Basic ``Authorization`` header."""
    header = request.header("Authorization") or ""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    key, _, secret = base64.b64decode(encoded).decode().partition(":")
    return key, secret


def logto_vonage_json(**overrides: Any) -> dict[str, Any]:
    """Logto's Vonage SMS connector JSON, as an admin pastes it, with test credentials."""
    data: dict[str, Any] = {
        "apiKey": "a1b2c3d4",
        "apiSecret": "VonageS3cretValue",
        "brandName": "Acme",
        "templates": [
            {"usageType": usage, "content": f"Acme {usage}: your code is {{{{code}}}}"}
            for usage in ("Register", "SignIn", "ForgotPassword", "Generic")
        ],
    }
    return data | overrides


@pytest.fixture
def fake_vonage() -> Iterator[FakeVonage]:
    """A started :class:`FakeVonage`, stopped after the test."""
    with started(FakeVonage) as server:
        yield server
