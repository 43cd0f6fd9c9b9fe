"""The Vonage SMS provider (the ``vonage`` SDK v4), configured with Logto's Vonage JSON.

The SDK builds the message (``SmsMessage``: its fields, their wire names) and reads the answer
(``HttpClient._parse_response``: the HTTP status to its errors; ``Sms``'s checks of each part's
``status``: ``SmsError``, ``PartialFailureError``; ``SmsResponse``); the POST itself goes out on
our ``aiohttp`` session (:class:`~.http_session.EndpointSession`), on the event loop, as for
Twilio. The SDK's own transport is synchronous ``requests``, which we ran on a thread pool: at 50
SMS at once into the local fake the service spent 1.5 ms of CPU per SMS on the core that also
serves HTTP and managed 609-635 SMS/s (the bare SDK on 50 threads: 842-926); through ``aiohttp``
0.77 ms and 1,255-1,316 SMS/s (``python -m bench --only sms --before a0e80fd``, and three
alternated rounds). The SDK's transport also replays a POST by itself (docs/providers.md,
"Vonage"); ours sends one POST per call, and a lost answer is an unknown outcome, never resent.
Wire format: https://developer.vonage.com/en/api/sms
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import aiohttp
from requests import Response
from requests.structures import CaseInsensitiveDict
from vonage import Auth, HttpClientOptions, Vonage
from vonage_http_client import errors as http_errors
from vonage_sms import PartialFailureError, SmsError, SmsMessage, SmsResponse

from ..config import Config
from ..config.sms import Endpoint
from ..config.vonage import VonageConfig
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
from ..text.segments import analyse
from .base import SendResult
from .http_session import EndpointSession

# At DEBUG the SDK logs each request's form (the text, so the code) and its headers (the
# credentials): never let those records through, whatever the service's own log level.
logging.getLogger("vonage").setLevel(logging.WARNING)

NAME = "vonage"
DEFAULT_HOST = "rest.nexmo.com"
# https://developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms#sms-api-error-codes
_TRANSIENT_STATUS = {"1": "throttled", "5": "internal error at Vonage"}
# Refusals by this Vonage account alone (8: suspended, 9: no credit left, 29: a demo account's
# destination not on its list): another provider's account may deliver, so the next is tried.
_ACCOUNT_STATUS = {"8", "9", "29"}
_STATUS = re.compile(r"error code (\d+): ?(.*)", re.S)


def classify(exc: Exception) -> ProviderError:
    """Our error for a Vonage SDK or transport failure."""
    if isinstance(exc, PartialFailureError):  # a multi-part SMS (a subclass of SmsError)
        parts = (getattr(exc, "response", None) or {}).get("messages", [])
        if any(str(part.get("status")) == "0" for part in parts):
            return PermanentProviderError(
                NAME, "only some parts of the SMS were accepted; not resent"
            )
        first = parts[0] if parts else {}
        exc = SmsError(f"error code {first.get('status', '?')}: {first.get('error-text', '')}")
    if isinstance(exc, SmsError):
        match = _STATUS.search(str(exc))
        status, text = (match.group(1), match.group(2).strip()) if match else ("?", str(exc))
        detail = f"status {status}: {text[:200]}"
        if status == "1":
            return RateLimitedError(NAME, detail)
        if status in _TRANSIENT_STATUS:
            return TransientProviderError(NAME, detail)
        if status in _ACCOUNT_STATUS:
            return AccountRefusedError(NAME, detail)
        return PermanentProviderError(NAME, detail)
    if isinstance(exc, http_errors.AuthenticationError | http_errors.ForbiddenError):
        return PermanentProviderError(NAME, "authentication failed: check apiKey and apiSecret")
    if isinstance(exc, http_errors.RateLimitedError):
        retry = exc.response.headers.get("Retry-After", "") if exc.response is not None else ""
        return RateLimitedError(
            NAME, "HTTP 429", retry_after=float(retry) if retry.isdigit() else None
        )
    if isinstance(exc, http_errors.ServerError):
        return TransientProviderError(NAME, "HTTP 5xx from Vonage")
    if isinstance(exc, http_errors.HttpRequestError):
        code = exc.response.status_code if exc.response is not None else 0
        if code >= 500:
            return TransientProviderError(NAME, f"HTTP {code} from Vonage")
        return PermanentProviderError(NAME, f"HTTP {code} from Vonage")
    if isinstance(exc, aiohttp.ClientSSLError):
        return PermanentProviderError(NAME, "TLS verification of the Vonage endpoint failed")
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return TransientProviderError(NAME, "could not connect")
    if isinstance(exc, TimeoutError):  # aiohttp's SocketTimeoutError
        return OutcomeUnknownError(NAME, "no answer in time after the request was sent; not resent")
    if isinstance(exc, aiohttp.ClientError | ConnectionError):
        return OutcomeUnknownError(
            NAME, "the connection dropped after the request was sent; not resent"
        )
    if isinstance(exc, TypeError):  # the SDK's reaction to a 200 whose body is not JSON
        return OutcomeUnknownError(NAME, "unreadable answer from Vonage; not resent")
    return PermanentProviderError(
        NAME, f"{type(exc).__name__}: {str(exc)[:200]}", reason="unexpected error from Vonage"
    )


def vonage_number(e164: str) -> str:
    """Vonage wants E.164 digits without the plus."""
    return e164.lstrip("+")


class VonageProvider:
    """Sends SMS through Vonage's SMS API: the SDK's message and answer, our session."""

    name = NAME

    def __init__(
        self,
        config: VonageConfig,
        endpoint: Endpoint,
        concurrency: int = 16,
        callback: str | None = None,
    ) -> None:
        self.config = config
        # The delivery receipt URL of each message (the SMS API takes at most 100 characters;
        # a longer one is left to the dashboard's setting).
        self.callback = callback if callback is not None and len(callback) <= 100 else None
        host = endpoint.host or DEFAULT_HOST
        # One client for SMS only: its HTTP client reads our answers, its Sms checks them.
        self.client = Vonage(
            Auth(api_key=config.api_key, api_secret=config.api_secret),
            HttpClientOptions(rest_host=host),
        )
        http = self.client.http_client
        self.url = f"{endpoint.protocol}://{host}/sms/json"
        # What the SDK sends with an SMS (Sms: Basic auth, as no signature secret is given).
        self.headers = {
            "User-Agent": http.user_agent,
            "Accept": "application/json",
            "Authorization": http.auth.create_basic_auth_string(),
        }
        self.slots = asyncio.Semaphore(concurrency)
        self.session = EndpointSession(endpoint, concurrency)

    def _form(self, message: Message) -> dict[str, str]:
        """The form the SDK would post: its ``SmsMessage``, by wire name, None left out."""
        sms = SmsMessage(
            to=vonage_number(message.to),
            from_=self.config.brand_name,
            text=message.text,
            type="unicode" if analyse(message.text).unicode else "text",
            client_ref=message.id[:40],
            callback=self.callback,
        )
        return {k: str(v) for k, v in sms.model_dump(by_alias=True).items() if v is not None}

    def _read(self, status: int, headers: Any, body: bytes) -> str | None:
        """The SDK's reading of an answer: its errors raised, else the message id."""
        response = Response()
        response.status_code, response._content, response.url = status, body, self.url
        response.headers = CaseInsensitiveDict(headers)
        response.encoding = "utf-8"
        answer = self.client.http_client._parse_response(response)
        if int(answer["message-count"]) > 1:  # a None answer (not JSON): TypeError
            self.client.sms._check_for_partial_failure(answer)
        else:
            self.client.sms._check_for_error(answer)
        messages = SmsResponse(**answer).messages
        return str(messages[0].message_id) if messages else None

    async def send(self, message: Message) -> SendResult:
        try:
            form = self._form(message)
            async with (
                self.slots,
                self.session.get().post(self.url, data=form, headers=self.headers) as answer,
            ):
                status, headers, body = answer.status, answer.headers, await answer.read()
            provider_id = self._read(status, headers, body)
        except Exception as exc:
            raise classify(exc) from exc
        return SendResult(self.name, "sent", provider_id)

    async def close(self) -> None:
        await self.session.close()


def build(config: Config, inbox: Inbox) -> VonageProvider:
    """The provider of its registry entry, from ``sms.vonage`` (imported when configured)."""
    vonage = config.sms.section(VonageConfig)
    assert vonage is not None  # guaranteed by config validation
    callback = config.server.receipt_url(NAME)
    return VonageProvider(
        vonage, config.sms.endpoint(NAME), config.sms.calls_at_once(NAME), callback
    )
