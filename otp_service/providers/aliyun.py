"""The Aliyun SMS provider (``alibabacloud-dysmsapi20170525``), with Logto's Aliyun JSON.

The text lives at Aliyun under a template code; we send ``PhoneNumbers``, ``SignName``,
``TemplateCode`` and ``TemplateParam`` (the payload without ``locale``, as Logto does).
Business errors come back as HTTP 200 with ``Code != "OK"``. The SDK's own retries sleep with a
blocking ``time.sleep``: they stay off, our dispatcher decides.
API: https://help.aliyun.com/document_detail/419273.html

The SDK's async transport (darabonba's ``DaraCore.async_do_action``) opens a new
``aiohttp.ClientSession`` and connector for every call, and over https builds a new SSL context
loading the whole CA bundle: every SMS paid a TCP (and TLS) handshake and its teardown, on the
event loop that also serves HTTP. The SDK builds and signs the request, parses the answer and
raises its errors; the request itself is sent by :class:`_Pool`, one session per provider with
keep-alive connections, bounded like the calls (``sms.aliyun_concurrency``). The SDK offers no
seam for it, so :class:`_PooledCore` takes the SDK's name ``DaraCore`` in
``alibabacloud_tea_openapi.client`` and hands the calls our :meth:`AliyunProvider._ask` makes to
that provider's pool (a context variable); any other call keeps the SDK's own transport.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import certifi
from alibabacloud_dysmsapi20170525 import models as sms_models
from alibabacloud_dysmsapi20170525.client import Client
from alibabacloud_tea_openapi import client as openapi_client
from alibabacloud_tea_openapi import exceptions as api_errors
from alibabacloud_tea_openapi import utils_models as open_api_models
from darabonba.core import DaraCore
from darabonba.exceptions import RetryError
from darabonba.request import DaraRequest
from darabonba.response import DaraResponse
from darabonba.runtime import RuntimeOptions
from Tea.exceptions import TeaException, UnretryableException

from ..config import Config
from ..config.aliyun import AliyunConfig
from ..config.sms import Endpoint
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
from ..store.receipts import Receipt
from .aliyun_receipts import from_query, query_request
from .base import SendResult
from .http_session import EndpointSession

# darabonba logs every request line (TemplateParam, so the code) at DEBUG to its own stderr
# handler as soon as the environment has DEBUG set: keep that logger quiet.
logging.getLogger("darabonba-core").setLevel(logging.WARNING)

NAME = "aliyun"
DEFAULT_HOST = "dysmsapi.aliyuncs.com"
# Logto's test for a mainland China number, applied to the number as the user typed it.
_CHINA = re.compile(r"^(?:\+86|0086|86)?1\d{10}$")
_CHINA_STRICT = re.compile(r"^(?:\+86|0086|86)1\d{10}$")
_RATE_LIMIT_CODES = {"isv.BUSINESS_LIMIT_CONTROL", "Throttling", "Throttling.User"}
# Codes that a later attempt may clear (Aliyun's own hiccups).
_TRANSIENT_CODES = {"isp.SYSTEM_ERROR", "isp.RAM_PERMISSION_DENY", "ServiceUnavailable"}
# Refusals by this Aliyun account alone (no balance, service suspended for it, the daily or
# monthly cap set in its console): another provider's account may deliver, so the next is tried.
_ACCOUNT_CODES = {
    "isv.AMOUNT_NOT_ENOUGH",
    "isv.OUT_OF_SERVICE",
    "isv.DAY_LIMIT_CONTROL",
    "isv.MONTH_LIMIT_CONTROL",
}


def is_mainland(message: Message, strict: bool) -> bool:
    """Whether Aliyun's China template and number format apply, as Logto decides it."""
    raw = re.sub(r"[\s()-]", "", message.raw_to or message.to)
    return bool((_CHINA_STRICT if strict else _CHINA).match(raw)) and message.to.startswith("+86")


def aliyun_number(message: Message, mainland: bool) -> str:
    """Mainland numbers without the country prefix; others with it, without the plus."""
    return message.to[3:] if mainland else message.to.lstrip("+")


def _answered_status(exc: BaseException | None) -> int | None:
    """The HTTP status Aliyun answered with, when the SDK failed reading the answer (an HTML
    error page is not JSON, and the SDK's RuntimeError then drops the status). The SDK keeps
    the response in a local of the frame that raised: read it from the traceback."""
    tb = exc.__traceback__ if exc is not None else None
    while tb is not None:
        response = tb.tb_frame.f_locals.get("_response")
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        tb = tb.tb_next
    return None


def classify(exc: Exception) -> ProviderError:
    """Our error for an Aliyun SDK or transport failure."""
    if isinstance(exc, api_errors.ThrottlingException):
        after = exc.retry_after / 1000 if exc.retry_after else None
        return RateLimitedError(NAME, f"throttled: {exc.code}", retry_after=after)
    if isinstance(exc, api_errors.ServerException):
        return TransientProviderError(NAME, f"server error {exc.code}: {exc.message}"[:240])
    if isinstance(exc, api_errors.ClientException):
        if exc.code in _RATE_LIMIT_CODES or getattr(exc, "status_code", None) == 429:
            return RateLimitedError(NAME, f"throttled: {exc.code}")
        if exc.code in _ACCOUNT_CODES:
            return AccountRefusedError(NAME, f"{exc.code}: {exc.message}"[:240])
        return PermanentProviderError(NAME, f"{exc.code}: {exc.message}"[:240])
    if isinstance(exc, UnretryableException):
        inner = getattr(exc, "inner_exception", None)
        # darabonba re-raises aiohttp's OSErrors (refused, TLS, timeouts) as RetryError(str(e)):
        # the original exception survives only as its __context__.
        if isinstance(inner, RetryError) and inner.__context__ is not None:
            inner = inner.__context__
        if isinstance(inner, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            return PermanentProviderError(NAME, "TLS verification of the Aliyun endpoint failed")
        if isinstance(inner, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return TransientProviderError(NAME, "could not connect")
        status = _answered_status(inner)
        if status is not None and status >= 500:  # a gateway's HTML error page: not handled
            return TransientProviderError(NAME, f"HTTP {status} from Aliyun (not JSON)")
        if status == 429:
            return RateLimitedError(NAME, "HTTP 429 from Aliyun (not JSON)")
        return OutcomeUnknownError(
            NAME,
            f"no usable answer after the request was sent ({type(inner).__name__}); not resent",
            reason="no usable answer after the request was sent; not resent",
        )
    if isinstance(exc, TeaException):
        return PermanentProviderError(NAME, f"{exc.code}: {exc.message}"[:240])
    return PermanentProviderError(
        NAME, f"{type(exc).__name__}: {str(exc)[:200]}", reason="unexpected error from Aliyun"
    )


def _business_error(code: str, text: str) -> ProviderError:
    detail = f"{code}: {text}"[:240]
    if code in _RATE_LIMIT_CODES:
        return RateLimitedError(NAME, detail)
    if code in _TRANSIENT_CODES:
        return TransientProviderError(NAME, detail)
    if code in _ACCOUNT_CODES:
        return AccountRefusedError(NAME, detail)
    return PermanentProviderError(NAME, detail)


class _Pool:
    """A provider's keep-alive connections (over https without ``ca_file``, the system's CAs and
    certifi's, as the SDK trusts), with the proxy the SDK would take from the environment."""

    def __init__(self, endpoint: Endpoint, concurrency: int) -> None:
        self.session = EndpointSession(endpoint, concurrency, certifi.where())
        https = endpoint.protocol == "https"
        names = ("HTTPS_PROXY", "https_proxy") if https else ("HTTP_PROXY", "http_proxy")
        self.proxy = next((os.environ[n] for n in names if os.environ.get(n)), None)

    async def send(self, request: DaraRequest) -> DaraResponse:
        """What ``DaraCore.async_do_action`` does, on this pool: the answer read whole, an
        ``OSError`` (refused, TLS, timeouts) raised as the SDK's ``RetryError``."""
        body = request.body
        data = body.encode() if isinstance(body, str) else body or b""
        response = DaraResponse()
        try:
            async with self.session.get().request(
                request.method, DaraCore.compose_url(request), data=data,
                headers=request.headers, proxy=self.proxy,
            ) as answer:  # fmt: skip
                response.body = await answer.read()
                response.headers = {k.lower(): v for k, v in answer.headers.items()}
                response.status_code = answer.status
                response.status_message = answer.reason
                response.response = answer
        except OSError as exc:
            raise RetryError(str(exc)) from exc
        return response

    async def close(self) -> None:
        await self.session.close()


_POOL: contextvars.ContextVar[_Pool | None] = contextvars.ContextVar("aliyun_pool", default=None)


class _PooledCore(DaraCore):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's ``DaraCore``, sending the calls made under :data:`_POOL` through that pool."""

    @staticmethod
    async def async_do_action(
        request: DaraRequest, runtime_option: dict[str, Any] | None = None
    ) -> DaraResponse:
        pool = _POOL.get()
        body = request.body
        if pool is None or not (body is None or isinstance(body, bytes | str)):
            return await DaraCore.async_do_action(request, runtime_option)
        return await pool.send(request)


openapi_client.DaraCore = _PooledCore


class AliyunProvider:
    """Sends SMS through Aliyun's SendSms; one SDK client and one connection pool for the
    service's life."""

    name = NAME

    def __init__(self, config: AliyunConfig, endpoint: Endpoint, concurrency: int = 32) -> None:
        self.config = config
        # Calls at once, each on a connection of the pool's (which keeps as many).
        self.slots = asyncio.Semaphore(concurrency)
        self.pool = _Pool(endpoint, concurrency)
        timeout_ms = int(endpoint.timeout_seconds * 1000)
        self.client = Client(
            open_api_models.Config(
                access_key_id=config.access_key_id,
                access_key_secret=config.access_key_secret,
                endpoint=endpoint.host or DEFAULT_HOST,
                protocol=endpoint.protocol,
                read_timeout=timeout_ms,
                connect_timeout=timeout_ms,
            )
        )
        self.runtime = RuntimeOptions(
            autoretry=False, max_attempts=1, read_timeout=timeout_ms, connect_timeout=timeout_ms,
            ca=endpoint.ca_file,
        )  # fmt: skip

    async def send(self, message: Message) -> SendResult:
        template = self.config.template(message.type) or self.config.template("Generic")
        if template is None:
            raise PermanentProviderError(NAME, f"no templateCode for {message.type} or Generic")
        mainland = is_mainland(message, self.config.strict_phone_region_number_check)
        request = sms_models.SendSmsRequest(
            phone_numbers=aliyun_number(message, mainland),
            sign_name=self.config.sign_name,
            template_code=template.china if mainland else template.overseas,
            template_param=json.dumps(dict(message.params), ensure_ascii=False),
        )
        body = await self._ask(self.client.send_sms_with_options_async, request)
        return SendResult(self.name, "sent", body.biz_id)

    async def query_receipt(self, provider_id: str, to: str, sent_at: float) -> Receipt | None:
        """Ask QuerySendDetails about one message; None while Aliyun has no record of it.
        Raises a ProviderError, as :meth:`send` does."""
        request = query_request(provider_id, to, sent_at)
        body = await self._ask(self.client.query_send_details_with_options_async, request)
        return from_query(provider_id, to, body)

    async def _ask(
        self, call: Callable[[Any, RuntimeOptions], Awaitable[Any]], request: Any
    ) -> Any:
        """One API call under the account's slots: the body of an ``OK`` answer, else the
        :class:`ProviderError` the failure or the business code means."""
        token = _POOL.set(self.pool)
        try:
            async with self.slots:
                response = await call(request, self.runtime)
        except Exception as exc:
            raise classify(exc) from exc
        finally:
            _POOL.reset(token)
        body = response.body
        if body is None or body.code != "OK":
            code = body.code if body is not None else "empty"
            raise _business_error(str(code), str(body.message if body is not None else ""))
        return body

    async def close(self) -> None:
        await self.pool.close()


def build(config: Config, inbox: Inbox) -> AliyunProvider:
    """The provider of its registry entry, from ``sms.aliyun`` (imported when configured)."""
    aliyun = config.sms.section(AliyunConfig)
    assert aliyun is not None  # guaranteed by config validation
    return AliyunProvider(aliyun, config.sms.endpoint(NAME), config.sms.calls_at_once(NAME))
