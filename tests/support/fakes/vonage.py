"""A fake of Vonage's SMS API over HTTPS, for the real ``vonage`` SDK.

Wire format (https://developer.vonage.com/en/api/sms): ``POST /sms/json`` with a form body
(``from``, ``to``, ``text``, ``type``, ``client-ref`` ...) and ``Authorization: Basic
base64(key:secret)``. The answer is HTTP 200 with ``{"message-count", "messages": [...]}``; each
message has ``status`` ``"0"`` when accepted, else an ``error-text``
(https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms). Transport-level
failures (401, 429, 5xx, a dropped connection, a body that is not JSON) are scripted replies.

Delivery receipts (https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts): the
fake remembers each accepted SMS (:attr:`FakeVonage.accepted`: its ``message-id``, ``to`` and the
``callback`` the request named) and, when a test asks (:meth:`FakeVonage.send_receipt`), calls
that callback as Vonage does: a form POST (or GET, or JSON POST) with ``messageId``, ``msisdn``,
``to``, ``network-code``, ``price``, ``status``, ``scts``, ``err-code``, ``api-key``,
``client-ref``, ``message-timestamp``; signed (``timestamp``, ``nonce``, ``sig``) when given the
account's signature secret and method (:func:`sign`: written here from Vonage's description, not
from the service's code).

The certificate comes from a ``trustme`` test CA: point ``sms.endpoints.vonage.ca_file`` at
:attr:`FakeVonage.ca_file` (:meth:`FakeVonage.endpoint` does), since ``REQUESTS_CA_BUNDLE`` is
set globally on these machines and the provider trusts only the configured file.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import functools
import hashlib
import hmac
import secrets
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from . import DROP, FakeServer, Recorded, Reply, started

__all__ = [
    "DROP",
    "FakeVonage",
    "fake_vonage",
    "logto_vonage_json",
    "sign",
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
        self.accepted: list[dict[str, str]] = []  # message-id, to, callback, client-ref

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
        with self.lock:
            self.accepted.append(
                {
                    "message-id": message["message-id"],
                    "to": message["to"],
                    "callback": request.form.get("callback", ""),
                    "client-ref": request.form.get("client-ref", ""),
                    "api-key": (basic_auth(request) or ("", ""))[0],
                }
            )
        return Reply(json={"message-count": "1", "messages": [message]})

    def receipt(
        self,
        index: int = -1,
        *,
        status: str = "delivered",
        err_code: str = "0",
        signed: tuple[str, str] | None = None,
        **fields: str,
    ) -> dict[str, str]:
        """The DLR of the ``index``-th accepted SMS, as Vonage sends it; ``signed``:
        (signature secret, method) of an account that signs its webhooks; ``fields`` override
        or add parameters (before signing)."""
        with self.lock:
            sms = self.accepted[index]
        now = datetime.now(UTC)
        params = {
            "msisdn": sms["to"],
            "to": "Acme",
            "network-code": "20810",
            "messageId": sms["message-id"],
            "price": "0.03330000",
            "status": status,
            "scts": now.strftime("%y%m%d%H%M"),
            "err-code": err_code,
            "api-key": sms["api-key"],
            "message-timestamp": now.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if sms["client-ref"]:
            params["client-ref"] = sms["client-ref"]
        params |= fields
        if signed is not None:
            params["timestamp"] = str(int(time.time()))
            params["nonce"] = secrets.token_hex(8)
            params["sig"] = sign(params, *signed)
        return params

    def send_receipt(
        self,
        params: dict[str, str],
        *,
        url: str | None = None,
        method: str = "POST",
        as_json: bool = False,
    ) -> concurrent.futures.Future[tuple[int, str]]:
        """Call the SMS's callback (or ``url``) with ``params`` from the fake's own loop, as
        Vonage's platform does; ``await asyncio.wrap_future(...)`` gives (status, body)."""
        target = url or next(
            s["callback"] for s in self.accepted if s["message-id"] == params["messageId"]
        )
        assert self._loop is not None, "start the fake first"

        async def call() -> tuple[int, str]:
            async with aiohttp.ClientSession() as session:
                if method == "GET":
                    request = session.get(target, params=params)
                elif as_json:
                    request = session.post(target, json=params)
                else:
                    request = session.post(target, data=params)
                async with request as response:
                    return response.status, await response.text()

        return asyncio.run_coroutine_threadsafe(call(), self._loop)

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


def sign(params: dict[str, str], secret: str, method: str) -> str:
    """Vonage's signature of a webhook's parameters: each parameter but ``sig``, sorted, as
    ``&name=value`` (``&`` and ``=`` in values as ``_``); ``md5hash``: MD5 of that plus the
    secret, else an HMAC keyed with the secret (upper-case hex, as the dashboard shows it)."""
    base = "".join(
        f"&{k}={params[k].replace('&', '_').replace('=', '_')}"
        for k in sorted(params)
        if k != "sig"
    )
    if method == "md5hash":
        return hashlib.md5((base + secret).encode()).hexdigest()  # noqa: S324 (Vonage's scheme)
    return hmac.new(secret.encode(), base.encode(), getattr(hashlib, method)).hexdigest().upper()


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
