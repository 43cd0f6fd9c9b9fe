"""A fake of Twilio's Messages API over HTTPS, for the real ``twilio`` SDK, that can also call
the service back with status callbacks as Twilio does.

Wire format (https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource):
``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with a form body (``To``, ``Body``,
``MessagingServiceSid`` or ``From``, ``StatusCallback``, ``RiskCheck`` ...) and ``Authorization:
Basic base64(AccountSid:AuthToken)``. Success is HTTP 201 with the Message resource (``sid``
``SM...``, ``status`` ``accepted`` with a Messaging Service); errors are JSON
``{"code", "message", "more_info", "status"}`` with that HTTP status
(https://www.twilio.com/docs/usage/twilios-response). Wrong credentials are 401/20003, a
missing ``To``/``Body``/sender or a ``To`` that is not E.164 the 400 Twilio answers.

Status callbacks (https://www.twilio.com/docs/messaging/guides/track-outbound-message-status):
Twilio POSTs a form (``MessageSid``, ``SmsSid``, ``MessageStatus``, ``SmsStatus``,
``AccountSid``, ``MessagingServiceSid``, ``To``, ``ApiVersion``, ``ErrorCode`` when failed or
undelivered) to the message's ``StatusCallback``, signed with ``X-Twilio-Signature``: base64 of
HMAC-SHA1, keyed with the auth token, of the full URL followed by each parameter's name and
value sorted by name (https://www.twilio.com/docs/usage/security#validating-requests).
:meth:`FakeTwilio.send_status` does that for a message the fake accepted (computed here, not by
the SDK, so a validator bug cannot cancel out).

The certificate is the Vonage fake's ``trustme`` test CA: ``sms.endpoints.twilio.ca_file``
(:meth:`FakeTwilio.endpoint` fills it in).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from . import DROP, FakeServer, Recorded, Reply, started
from .vonage import _ca_file, _server_context, basic_auth

__all__ = [
    "DROP",
    "ERRORS",
    "FakeTwilio",
    "fake_twilio",
    "logto_twilio_json",
    "twilio_error",
    "twilio_not_json",
    "twilio_signature",
]

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "TwilioAuthT0kenValue1234567890ab"
MESSAGING_SERVICE_SID = "MG" + "fedcba9876543210" * 2
API_VERSION = "2010-04-01"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

# Twilio's own texts for the errors the tests script (https://www.twilio.com/docs/api/errors).
ERRORS: dict[int, tuple[int, str]] = {
    14107: (429, "SMS send rate limit exceeded"),
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    20503: (503, "Service Unavailable"),
    21211: (400, "Invalid 'To' Phone Number: {to}"),
    21408: (400, "Permission to send an SMS has not been enabled for the region indicated by "
                 "the 'To' number: {to}."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21608: (400, "The number {to} is unverified. Trial accounts cannot send messages to "
                 "unverified numbers; verify {to} at twilio.com/user/account/phone-numbers/"
                 "verified, or purchase a Twilio number to send messages to unverified numbers"),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21611: (400, "This 'From' number has exceeded the maximum number of queued messages"),
    21612: (400, "The 'To' phone number: {to}, is not currently reachable using the 'From' "
                 "phone number via SMS."),
    21614: (400, "'To' number {to} is not a valid mobile number"),
}  # fmt: skip


def twilio_error(
    code: int, status: int | None = None, message: str | None = None
) -> Callable[[Recorded], Reply]:
    """Twilio's error answer for ``code`` (its documented status and text unless given), for
    :meth:`FakeTwilio.reply_next`; ``{to}`` in the text becomes the request's ``To``."""
    known_status, known_text = ERRORS.get(code, (400, f"Error {code}"))
    text = message if message is not None else known_text
    body: dict[str, Any] = {
        "code": code,
        "message": text,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status or known_status,
    }
    if code == 20003:
        body["detail"] = "Your AccountSid or AuthToken was incorrect."

    def reply(request: Recorded) -> Reply:
        filled = dict(body, message=text.replace("{to}", request.form.get("To", "")))
        return Reply(status=int(filled["status"]), json=filled)

    return reply


def twilio_not_json(status: int = 201) -> Reply:
    """An answer whose body is not JSON (a proxy's error page; 201 leaves the outcome unknown)."""
    return Reply(status=status, text="<html><body>Bad gateway</body></html>")


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature`` of a form POST to ``url``, as Twilio computes it."""
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Created:
    """A message the fake accepted: its SID and the form it was created with."""

    sid: str
    form: dict[str, str]

    @property
    def status_callback(self) -> str | None:
        return self.form.get("StatusCallback")


class FakeTwilio(FakeServer):
    """Twilio's ``POST /2010-04-01/Accounts/{sid}/Messages.json`` on ``https://127.0.0.1:port``,
    recording each request and each message it accepted."""

    scheme = "https"

    def __init__(
        self, *, port: int = 0, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN
    ) -> None:
        super().__init__(port=port, ssl_context=_server_context())
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._created: dict[str, Created] = {}

    ca_file = property(lambda self: _ca_file(), doc="The PEM file of the test CA.")

    def routes(self) -> list[web.RouteDef]:
        return [web.post(f"/{API_VERSION}/Accounts/{{account}}/Messages.json", self.handle)]

    def default_reply(self, request: Recorded) -> Reply:
        """What Twilio answers: 401 for wrong credentials, 400 for a bad form, else 201."""
        if basic_auth(request) != (self.account_sid, self.auth_token) or (
            request.path.split("/")[3] != self.account_sid
        ):
            return _error_reply(request, 20003)
        form = request.form
        if not form.get("To"):
            return _error_reply(request, 21604)
        if not form.get("Body"):
            return _error_reply(request, 21602)
        if not form.get("MessagingServiceSid") and not form.get("From"):
            return _error_reply(request, 21603)
        if not _E164.match(form["To"]):
            return _error_reply(request, 21211)
        return Reply(status=201, json=self.accept(form))

    def accept(self, form: Mapping[str, str], sid: str | None = None) -> dict[str, Any]:
        """Record ``form`` as an accepted message; its Message resource, as Twilio returns it."""
        sid = sid or "SM" + uuid.uuid4().hex
        with self.lock:
            self._created[sid] = Created(sid, dict(form))
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid, "api_version": API_VERSION,
            "body": form.get("Body", ""), "date_created": now, "date_sent": None,
            "date_updated": now, "direction": "outbound-api", "error_code": None,
            "error_message": None, "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"), "num_media": "0",
            "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid,
            "status": "accepted" if form.get("MessagingServiceSid") else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"}, "to": form.get("To", ""),
            "uri": f"{uri}.json",
        }  # fmt: skip

    @property
    def sms(self) -> list[dict[str, str]]:
        """The form of every Messages.json request received, oldest first."""
        return [r.form for r in self.requests if r.path.endswith("/Messages.json")]

    @property
    def created(self) -> list[Created]:
        """Every message accepted (201), oldest first."""
        with self.lock:
            return list(self._created.values())

    def clear(self) -> None:
        super().clear()
        with self.lock:
            self._created.clear()

    def endpoint(self, timeout_seconds: float = 1) -> dict[str, Any]:
        """The ``sms.endpoints.twilio`` config that points the service at this fake."""
        return {
            "host": self.host, "protocol": "https", "ca_file": self.ca_file,
            "timeout_seconds": timeout_seconds,
        }  # fmt: skip

    # status callbacks, as Twilio posts them

    def status_callback(
        self,
        sid: str,
        status: str,
        *,
        error_code: int | None = None,
        url: str | None = None,
        auth_token: str | None = None,
        signed: bool = True,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[str, dict[str, str], dict[str, str]]:
        """The status callback Twilio would POST for message ``sid``: (url, form, headers).

        ``url`` defaults to the message's ``StatusCallback``; ``auth_token`` (default: the
        fake's) signs it, or nothing does with ``signed=False``; ``extra`` adds or overrides
        form fields (after signing, with ``signed`` set: to forge one).
        """
        with self.lock:
            created = self._created.get(sid)
        form = created.form if created is not None else {}
        target = url or (created.status_callback if created is not None else None)
        if not target:
            raise ValueError(f"no StatusCallback for {sid}: pass url=")
        params = {
            "ApiVersion": API_VERSION, "AccountSid": self.account_sid, "MessageSid": sid,
            "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
            "To": form.get("To", ""),
        }  # fmt: skip
        if form.get("MessagingServiceSid"):
            params["MessagingServiceSid"] = form["MessagingServiceSid"]
        if form.get("From"):
            params["From"] = form["From"]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        if status in ("delivered", "undelivered"):
            params["RawDlrDoneDate"] = "2612070428"  # YYMMDDhhmm, as carriers report it
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        if signed:
            token = auth_token if auth_token is not None else self.auth_token
            headers["X-Twilio-Signature"] = twilio_signature(token, target, params)
        params.update(extra or {})
        return target, params, headers

    async def send_status(self, sid: str, status: str, **options: Any) -> int:
        """POST the status callback for ``sid`` (see :meth:`status_callback`) from the fake's
        own thread, as Twilio would; the HTTP status the callee answered. Safe to await from
        the loop the service runs on."""
        url, form, headers = self.status_callback(sid, status, **options)
        assert self._loop is not None, "the fake is not started"
        future = asyncio.run_coroutine_threadsafe(_post(url, form, headers), self._loop)
        return await asyncio.wrap_future(future)

    def post_status(self, sid: str, status: str, **options: Any) -> int:
        """:meth:`send_status` for a caller without an event loop (a thread, a benchmark)."""
        url, form, headers = self.status_callback(sid, status, **options)
        assert self._loop is not None, "the fake is not started"
        return asyncio.run_coroutine_threadsafe(_post(url, form, headers), self._loop).result(30)


async def _post(url: str, form: Mapping[str, str], headers: Mapping[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=dict(form), headers=dict(headers), ssl=False) as response,
    ):
        await response.read()
        return response.status


def _error_reply(request: Recorded, code: int) -> Reply:
    return twilio_error(code)(request)


def logto_twilio_json(**overrides: Any) -> dict[str, Any]:
    """Logto's Twilio SMS connector JSON, as an admin pastes it, with test credentials."""
    data: dict[str, Any] = {
        "accountSID": ACCOUNT_SID,
        "authToken": AUTH_TOKEN,
        "fromMessagingServiceSID": MESSAGING_SERVICE_SID,
        "templates": [
            {"usageType": usage, "content": f"Acme {usage}: your code is {{{{code}}}}"}
            for usage in ("Register", "SignIn", "ForgotPassword", "Generic")
        ],
    }
    return data | overrides


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A started :class:`FakeTwilio`, stopped after the test."""
    with started(FakeTwilio) as server:
        yield server
