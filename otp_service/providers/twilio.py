"""The Twilio SMS provider (the ``twilio`` SDK), configured with Logto's Twilio JSON.

We send what Logto's connector sends: ``To`` (E.164 with ``+``), ``MessagingServiceSid``,
``Body`` (the rendered template) and ``RiskCheck``, plus ``StatusCallback`` when the service
has a public URL for delivery receipts. Wire format:
https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource
(``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded, HTTP Basic
``AccountSid:AuthToken``; 201 with the Message resource, whose ``sid`` we keep as the attempt's
provider id; errors are ``{"code", "message", "more_info", "status"}``:
https://www.twilio.com/docs/usage/twilios-response#response-formats-exceptions).

Why the SDK's async path (``create_async`` on its ``AsyncTwilioHttpClient``, aiohttp) rather
than its ``requests`` client on a thread pool (as Vonage's SDK once ran here): against the same
local fake, at 50 calls at once, the async client spent about a third of the CPU per message in
the SDK's process (0.7-1.0 ms against 2.0-2.6 ms, three runs) while messages per second were a
draw on a busy 2-CPU machine (161-311 against 177-238); once the CPU is the limit, CPU per
message is throughput, and no thread is held per call in flight (docs/sms.md, "Twilio";
``python -m bench --only sms`` measures both again). Its ``request`` is ours
(:class:`_Transport`): one ``aiohttp.ClientSession`` whose connector bounds connections, with the
endpoint's timeouts and CA, the credentials as a plain header, and never a replayed POST (the
SDK's retrying client, ``max_retries``, stays off: our dispatcher decides what is retried).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re

import aiohttp
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from ..config import Config
from ..config.sms import Endpoint
from ..config.twilio import DEFAULT_HOST, TwilioConfig
from ..errors import (
    AccountRefusedError,
    OutcomeUnknownError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from ..message.compose import Message
from ..store.inbox import Inbox
from .base import SendResult
from .http_session import EndpointSession

# At INFO the SDK logs each request's URL (the Account SID) and headers: keep it quiet.
logging.getLogger("twilio").setLevel(logging.WARNING)

NAME = "twilio"
# Twilio's error codes at message creation, with what they mean for the operator
# (https://www.twilio.com/docs/api/errors/<code>).
RATE_LIMITED = {
    20429: "too many requests",
    14107: "the account's message rate limit was exceeded",
}
TRANSIENT = {
    20500: "internal error at Twilio",
    20503: "Twilio is temporarily unavailable",
    21611: "the sender's queue of outgoing messages is full",
}
PERMANENT = {
    20003: "authentication failed: check accountSID and authToken",
    20404: "not found: check accountSID",
    21211: "invalid 'To' phone number",
    21408: "sending to this region is not enabled on the account (Geo permissions)",
    21602: "the message body is empty",
    21604: "the 'To' number is missing",
    21606: "the sender is not a message-capable Twilio number",
    21608: "trial account: the 'To' number is not verified",
    21610: "the recipient unsubscribed (replied STOP)",
    21612: "the 'To' number is not reachable by SMS",
    21614: "the 'To' number is not a mobile number",
    21617: "the message body is over 1600 characters",
}
# Refusals by this Twilio account alone (its Geo permissions, its trial status): nothing went
# out and another provider's account may deliver the message, so the route's next one is tried.
ACCOUNT_REFUSALS = {21408, 21608}
# Digits that may be a phone number in Twilio's text: kept out of what a caller reads.
_NUMBER = re.compile(r"\+?\d[\d ()-]{5,}\d")


def _masked(text: str) -> str:
    return _NUMBER.sub("***", text)


def classify_rest(status: int, code: int | None, text: str) -> ProviderError:
    """Our error for an error answer from Twilio (HTTP ``status``, Twilio ``code``)."""
    text = text.removeprefix("Unable to create record").removeprefix(":").strip()
    text = text or "no readable error body"
    code = code if code is not None and code != status else None
    meaning = RATE_LIMITED.get(code) or TRANSIENT.get(code) or PERMANENT.get(code) if code else None
    label = f"error {code}" if code else f"HTTP {status}"
    detail = f"{label} ({meaning}): {text}" if meaning else f"{label}: {text}"
    reason = f"{label}: {meaning or _masked(text)}"
    if code in RATE_LIMITED or status == 429:
        return RateLimitedError(NAME, detail[:240], reason=reason)
    if code in TRANSIENT or status >= 500:
        return TransientProviderError(NAME, detail[:240], reason=reason)
    if code in ACCOUNT_REFUSALS:
        return AccountRefusedError(NAME, detail[:240], reason=reason)
    return PermanentProviderError(NAME, detail[:240], reason=reason)


def classify(exc: BaseException) -> ProviderError:
    """Our error for a Twilio SDK or transport failure."""
    if isinstance(exc, TwilioRestException):
        return classify_rest(int(exc.status), exc.code, str(exc.msg))
    if isinstance(exc, TwilioServiceException):  # RFC 9457 answers of newer Twilio APIs
        return classify_rest(int(exc.status), exc.code, str(exc.detail or exc.title))
    if isinstance(exc, aiohttp.ClientSSLError):
        return PermanentProviderError(NAME, "TLS verification of the Twilio endpoint failed")
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return TransientProviderError(NAME, "could not connect")
    if isinstance(exc, TimeoutError):  # aiohttp's SocketTimeoutError, or the total timeout
        return OutcomeUnknownError(NAME, "no answer in time after the request was sent; not resent")
    if isinstance(exc, aiohttp.ClientError | ConnectionError):
        return OutcomeUnknownError(
            NAME,
            f"the connection failed after the request was sent ({type(exc).__name__}); not resent",
            reason="the connection dropped after the request was sent; not resent",
        )
    if isinstance(exc, ValueError):  # a 2xx whose body is not JSON
        return OutcomeUnknownError(NAME, "unreadable answer from Twilio; not resent")
    if isinstance(exc, TwilioException):
        return PermanentProviderError(NAME, f"{type(exc).__name__}: {str(exc)[:200]}")
    return PermanentProviderError(
        NAME, f"{type(exc).__name__}: {str(exc)[:200]}", reason="unexpected error from Twilio"
    )


def base_url(config: TwilioConfig, endpoint: Endpoint) -> str:
    """``https://api.twilio.com``, Logto's regional ``host``, or ``sms.endpoints.twilio``."""
    return f"{endpoint.protocol}://{endpoint.host or config.host or DEFAULT_HOST}"


class _Transport(AsyncTwilioHttpClient):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's async HTTP client, on our own ``aiohttp`` session.

    The SDK builds the request (URL, form, headers), parses the answer and raises its errors;
    this sends it: the Basic credentials as a header (the SDK's ``aiohttp.BasicAuth`` is
    deprecated since aiohttp 3.14), the endpoint's timeouts and CA, a bounded pool, one POST per
    call (no retry of any kind), and no request logging (the SDK's logs headers at INFO).
    """

    def __init__(self, endpoint: Endpoint, concurrency: int) -> None:
        super().__init__(pool_connections=False)  # a session belongs to a running loop: later
        self.pool = EndpointSession(endpoint, concurrency)

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the SDK passes None: ours are set)
        allow_redirects: bool = False,
    ) -> Response:
        headers = dict(headers or {})
        if auth is not None:
            pair = f"{auth[0]}:{auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        async with self.pool.get().request(
            method.upper(), url, params=params, data=data, headers=headers,
            allow_redirects=allow_redirects,
        ) as response:  # fmt: skip
            return Response(response.status, await response.text(), response.headers)

    async def close(self) -> None:
        await self.pool.close()


class TwilioProvider:
    """Sends SMS through Twilio's Messages API with the SDK's async client.

    ``status_callback``: the URL Twilio posts each message's status to (the service's
    ``/v1/receipts/twilio``), sent as ``StatusCallback`` with every message; None sends none
    and the Messaging Service's own callback setting applies.
    """

    name = NAME

    def __init__(
        self,
        config: TwilioConfig,
        endpoint: Endpoint,
        concurrency: int = 32,
        *,
        status_callback: str | None = None,
    ) -> None:
        self.config = config
        self.status_callback = status_callback
        self.slots = asyncio.Semaphore(concurrency)
        self.http = _Transport(endpoint, concurrency)
        self.client = Client(
            config.account_sid, config.auth_token, account_sid=config.account_sid,
            http_client=self.http,
        )  # fmt: skip
        # TWILIO_EDGE / TWILIO_REGION in the environment would rewrite the host: ours decides.
        self.client.edge = self.client.region = None
        self.client.api.base_url = base_url(config, endpoint)
        self.messages = self.client.api.v2010.accounts(config.account_sid).messages

    async def send(self, message: Message) -> SendResult:
        try:
            async with self.slots:
                created = await self.messages.create_async(
                    to=message.to,
                    messaging_service_sid=self.config.messaging_service_sid,
                    body=message.text,
                    risk_check="disable" if self.config.disable_risk_check else "enable",
                    status_callback=self.status_callback or values.unset,
                )
        except Exception as exc:
            raise classify(exc) from exc
        return SendResult(self.name, "sent", created.sid)

    async def close(self) -> None:
        await self.http.close()


def build(config: Config, inbox: Inbox) -> TwilioProvider:
    """The provider of its registry entry, from ``sms.twilio`` (imported when configured)."""
    twilio = config.sms.section(TwilioConfig)
    assert twilio is not None  # guaranteed by config validation
    # Where Twilio posts each message's status: no StatusCallback without server.public_url.
    return TwilioProvider(
        twilio,
        config.sms.endpoint(NAME),
        config.sms.calls_at_once(NAME),
        status_callback=config.server.receipt_url(NAME),
    )
