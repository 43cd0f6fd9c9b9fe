"""The Vonage SMS provider (the ``vonage`` SDK v4), configured with Logto's Vonage JSON.

The SDK is synchronous (``requests``): calls run on a bounded thread pool. It must never replay
a POST by itself (docs/providers.md, "Vonage"): its own RemoteDisconnected loop runs
``pool_maxsize`` times, so that option is 1 and our own adapter carries the real pool, with
urllib3 retries off. Wire format: https://developer.vonage.com/en/api/sms
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from concurrent.futures import ThreadPoolExecutor

import requests
from requests.adapters import HTTPAdapter
from urllib3 import Retry
from vonage import Auth, HttpClientOptions, Vonage
from vonage_http_client import errors as http_errors
from vonage_sms import PartialFailureError, SmsError, SmsMessage

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
from ..text.segments import analyse
from .base import SendResult

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
    if isinstance(exc, requests.exceptions.SSLError):
        return PermanentProviderError(NAME, "TLS verification of the Vonage endpoint failed")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return TransientProviderError(NAME, "timed out connecting")
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "RemoteDisconnected" in text or "Connection aborted" in text or "reset" in text:
            return OutcomeUnknownError(
                NAME, "the connection dropped after the request was sent; not resent"
            )
        return TransientProviderError(NAME, "could not connect")
    if isinstance(exc, requests.exceptions.Timeout):
        return OutcomeUnknownError(NAME, "no answer in time after the request was sent; not resent")
    if isinstance(exc, TypeError):  # the SDK's reaction to a 200 whose body is not JSON
        return OutcomeUnknownError(NAME, "unreadable answer from Vonage; not resent")
    return PermanentProviderError(
        NAME, f"{type(exc).__name__}: {str(exc)[:200]}", reason="unexpected error from Vonage"
    )


def vonage_number(e164: str) -> str:
    """Vonage wants E.164 digits without the plus."""
    return e164.lstrip("+")


class VonageProvider:
    """Sends SMS through Vonage's SMS API, off the event loop."""

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
        options = HttpClientOptions(
            rest_host=endpoint.host or DEFAULT_HOST,
            timeout=max(1, math.ceil(endpoint.timeout_seconds)),
            pool_maxsize=1,  # = one attempt in the SDK's own RemoteDisconnected retry loop
            max_retries=0,
        )
        # One client for SMS only: the SDK shares a headers dict across API families.
        self.client = Vonage(Auth(api_key=config.api_key, api_secret=config.api_secret), options)
        session: requests.Session = self.client.http_client._session
        session.mount(
            "https://",
            HTTPAdapter(
                pool_connections=1,
                pool_maxsize=concurrency,
                max_retries=Retry(total=0, connect=0, read=0, redirect=0, status=0),
            ),
        )
        if endpoint.ca_file:
            # REQUESTS_CA_BUNDLE would override Session.verify: stop reading the environment.
            session.trust_env = False
            session.verify = endpoint.ca_file
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vonage")

    def _send(self, message: Message) -> str | None:
        sms = SmsMessage(
            to=vonage_number(message.to),
            from_=self.config.brand_name,
            text=message.text,
            type="unicode" if analyse(message.text).unicode else "text",
            client_ref=message.id[:40],
            callback=self.callback,
        )
        response = self.client.sms.send(sms)
        return str(response.messages[0].message_id) if response.messages else None

    async def send(self, message: Message) -> SendResult:
        loop = asyncio.get_running_loop()
        try:
            provider_id = await loop.run_in_executor(self.executor, self._send, message)
        except Exception as exc:
            raise classify(exc) from exc
        return SendResult(self.name, "sent", provider_id)

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.client.http_client._session.close()
