"""The Twilio provider: the real ``twilio`` SDK against an HTTPS fake of Twilio's Messages API.

Messages are composed by the real Composer from a Logto-shaped request and the provider is
configured from Logto's Twilio connector JSON through the real config parser, so what the fake
receives is what Twilio would receive.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from otp_service.config import TemplatesConfig, parse_config
from otp_service.config.sms import Endpoint
from otp_service.errors import (
    AccountRefusedError,
    OutcomeUnknownError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from otp_service.message.compose import Composer, Message, SendRequest
from otp_service.message.templates import TemplateLibrary
from otp_service.providers.twilio import TwilioProvider, base_url

from .support.fakes import DROP, Reply
from .support.fakes import twilio as twilio_fakes
from .support.fakes.twilio import (
    AUTH_TOKEN,
    FakeTwilio,
    logto_twilio_json,
    twilio_error,
    twilio_not_json,
)
from .support.fakes.vonage import basic_auth
from .support.ports import HOST, free_port

fake_twilio = twilio_fakes.fake_twilio

CODE = "482913"
TWILIO = logto_twilio_json()
FRANCE = "+33612345678"
CALLBACK = "https://otp.example.com/v1/receipts/twilio"


@functools.cache
def _library() -> TemplateLibrary:
    return TemplateLibrary(TemplatesConfig())


def compose(to: str, usage: str = "SignIn") -> Message:
    """The message the service builds for a Logto request (default region CN)."""
    config = parse_config({"sms": {"default_region": "CN"}}).sms
    request = SendRequest(to=to, type=usage, payload={"code": CODE, "locale": "en"})
    return Composer(_library(), config).compose("sms", request)


MakeTwilio = Callable[..., TwilioProvider]


@pytest.fixture
async def make_twilio(fake_twilio: FakeTwilio) -> AsyncIterator[MakeTwilio]:
    """Build TwilioProviders aimed at the fake (endpoint fields, Logto JSON fields and the
    status callback overridable); all closed after the test."""
    made: list[TwilioProvider] = []

    def make(
        endpoint: dict[str, Any] | None = None, status_callback: str | None = None, **json: Any
    ) -> TwilioProvider:
        data = logto_twilio_json(**json)
        config = parse_config({"sms": {"provider": "twilio", "twilio": data}}).sms.twilio
        assert config is not None
        where = Endpoint(**(fake_twilio.endpoint() | (endpoint or {})))
        made.append(TwilioProvider(config, where, 4, status_callback=status_callback))
        return made[-1]

    yield make
    for provider in made:
        await provider.close()


async def send_error(provider: TwilioProvider, message: Message) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.send(message)
    return caught.value


async def test_twilio_accepted_returns_provider_and_message_sid(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio
) -> None:
    """An accepted SMS reports provider "twilio" and Twilio's message SID; the request is
    Logto's: To in E.164, MessagingServiceSid, Body, RiskCheck, Basic auth with the SID."""
    result = await make_twilio().send(compose("+33 6 12 34 56 78"))
    [created] = fake_twilio.created
    assert (result.provider, result.status, result.provider_id) == ("twilio", "sent", created.sid)
    assert created.sid.startswith("SM")
    [request] = fake_twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{TWILIO['accountSID']}/Messages.json"
    assert basic_auth(request) == (TWILIO["accountSID"], TWILIO["authToken"])
    form = request.form
    assert form["To"] == FRANCE and form["MessagingServiceSid"] == TWILIO["fromMessagingServiceSID"]
    assert CODE in form["Body"]
    assert form["RiskCheck"] == "enable" and "StatusCallback" not in form and "From" not in form


@pytest.mark.parametrize(
    "typed", ["+33 6 12 34 56 78", "33612345678", "0033612345678", "+33 (0)6 12 34 56 78"]
)
async def test_twilio_to_is_e164_with_plus(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio, typed: str
) -> None:
    """Whatever the user typed, Twilio gets E.164 with its '+' (as Logto's connector sends)."""
    await make_twilio().send(compose(typed))
    assert [form["To"] for form in fake_twilio.sms] == [FRANCE]


async def test_twilio_chinese_text_arrives_intact(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio
) -> None:
    """A Chinese text is posted character for character (Twilio picks the encoding)."""
    message = compose("+8613800138000")
    message = Message(**{**message.__dict__, "text": f"您的验证码是 {CODE}"})
    await make_twilio().send(message)
    assert [form["Body"] for form in fake_twilio.sms] == [f"您的验证码是 {CODE}"]


async def test_twilio_disable_risk_check_is_sent(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio
) -> None:
    """Logto's disableRiskCheck switch becomes RiskCheck=disable."""
    await make_twilio(disableRiskCheck=True).send(compose(FRANCE))
    assert [form["RiskCheck"] for form in fake_twilio.sms] == ["disable"]


async def test_twilio_status_callback_set_per_message(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio
) -> None:
    """With a receipts URL, every message carries it as StatusCallback."""
    provider = make_twilio(status_callback=CALLBACK)
    await provider.send(compose(FRANCE))
    await provider.send(compose("+33612345679"))
    assert [c.status_callback for c in fake_twilio.created] == [CALLBACK, CALLBACK]


def test_twilio_regional_host_from_logto_json_unless_endpoint_set() -> None:
    """Logto's host field picks the regional API; sms.endpoints.twilio.host wins over it."""
    data = logto_twilio_json(host="api.dublin.ie1.twilio.com")
    config = parse_config({"sms": {"provider": "twilio", "twilio": data}}).sms.twilio
    assert config is not None
    assert base_url(config, Endpoint()) == "https://api.dublin.ie1.twilio.com"
    assert base_url(config, Endpoint(host="127.0.0.1:9", protocol="http")) == "http://127.0.0.1:9"
    plain = parse_config({"sms": {"provider": "twilio", "twilio": TWILIO}}).sms.twilio
    assert plain is not None and base_url(plain, Endpoint()) == "https://api.twilio.com"


async def test_twilio_region_in_environment_does_not_move_the_endpoint(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TWILIO_REGION/TWILIO_EDGE in the environment do not rewrite the configured host."""
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    result = await make_twilio().send(compose(FRANCE))
    assert result.status == "sent" and len(fake_twilio.sms) == 1


@pytest.mark.parametrize(
    ("code", "kind", "meaning"),
    [
        (20429, RateLimitedError, "too many requests"),
        (14107, RateLimitedError, "rate limit"),
        (20500, TransientProviderError, "internal error"),
        (20503, TransientProviderError, "temporarily unavailable"),
        (21611, TransientProviderError, "queue"),
        (21211, PermanentProviderError, "invalid 'To' phone number"),
        (21408, AccountRefusedError, "region is not enabled"),
        (21608, AccountRefusedError, "trial account"),
        (21610, PermanentProviderError, "unsubscribed"),
        (21612, PermanentProviderError, "not reachable by SMS"),
        (21614, PermanentProviderError, "not a mobile number"),
    ],
)
async def test_twilio_error_code_classified_with_its_meaning(
    make_twilio: MakeTwilio,
    fake_twilio: FakeTwilio,
    code: int,
    kind: type[ProviderError],
    meaning: str,
) -> None:
    """Each Twilio error code is transient, rate limited, permanent or this account's refusal
    (the next provider may try) as it means; the caller's reason names the code and its meaning
    (never the number), the detail keeps Twilio's text."""
    fake_twilio.reply_next(twilio_error(code))
    error = await send_error(make_twilio(), compose(FRANCE))
    assert type(error) is kind and error.provider == "twilio"
    assert f"error {code}" in error.reason and meaning in error.reason
    assert "612345678" not in error.reason
    assert twilio_fakes.ERRORS[code][1].split("{")[0].strip() in error.detail
    assert len(fake_twilio.sms) == 1


async def test_twilio_unknown_4xx_code_is_permanent_with_twilio_text(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio
) -> None:
    """A code we do not list is permanent and keeps Twilio's own message (numbers masked)."""
    fake_twilio.reply_next(twilio_error(21999, 400, "Something odd about +33612345678"))
    error = await send_error(make_twilio(), compose(FRANCE))
    assert type(error) is PermanentProviderError
    assert error.reason == "error 21999: Something odd about ***"


async def test_twilio_wrong_auth_token_is_permanent_and_hides_it(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio
) -> None:
    """Credentials Twilio refuses (401, 20003) are permanent, name the fields, never the token."""
    error = await send_error(make_twilio(authToken="WrongTokenValue0000"), compose(FRANCE))
    assert type(error) is PermanentProviderError and error.status == 502
    assert "20003" in error.reason and "accountSID" in error.reason and "authToken" in error.reason
    assert "WrongTokenValue0000" not in str(error) + error.detail + error.reason


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_twilio_5xx_without_json_is_transient(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio, status: int
) -> None:
    """A gateway's 5xx page (not JSON) is transient: Twilio did not take the message."""
    fake_twilio.reply_next(twilio_not_json(status))
    error = await send_error(make_twilio(), compose(FRANCE))
    assert type(error) is TransientProviderError and f"HTTP {status}" in error.reason


async def test_twilio_201_without_json_is_outcome_unknown(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio
) -> None:
    """A 201 whose body is not JSON may have sent the SMS: outcome unknown, not resent."""
    fake_twilio.reply_next(twilio_not_json(201))
    error = await send_error(make_twilio(), compose(FRANCE))
    assert isinstance(error, OutcomeUnknownError) and "unreadable" in error.detail
    assert len(fake_twilio.sms) == 1


@pytest.mark.parametrize("warm", [False, True], ids=["new-connection", "pooled-connection"])
async def test_twilio_dropped_connection_is_outcome_unknown_and_not_resent(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio, warm: bool
) -> None:
    """A connection dropped after the POST is 'outcome unknown' and the POST is never replayed."""
    provider = make_twilio()
    if warm:  # a kept-alive connection takes the next POST
        await provider.send(compose(FRANCE))
    fake_twilio.reply_next(DROP)
    error = await send_error(provider, compose(FRANCE))
    assert isinstance(error, OutcomeUnknownError) and error.code == "provider_outcome_unknown"
    assert len(fake_twilio.sms) == (2 if warm else 1)


async def test_twilio_read_timeout_is_outcome_unknown_and_not_resent(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio
) -> None:
    """No answer within timeout_seconds is 'outcome unknown', after exactly one POST."""
    fake_twilio.reply_next(Reply(status=201, json={}, delay=3))
    error = await send_error(make_twilio({"timeout_seconds": 0.3}), compose(FRANCE))
    assert isinstance(error, OutcomeUnknownError) and "no answer in time" in error.detail
    assert len(fake_twilio.sms) == 1


async def test_twilio_connection_refused_is_transient(make_twilio: MakeTwilio) -> None:
    """Nothing listening at the endpoint is transient: the SMS surely did not leave."""
    error = await send_error(make_twilio({"host": f"{HOST}:{free_port()}"}), compose(FRANCE))
    assert type(error) is TransientProviderError and "connect" in error.detail


async def test_twilio_untrusted_certificate_is_permanent(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio
) -> None:
    """Without the test CA configured the certificate is refused: permanent, nothing posted."""
    error = await send_error(make_twilio({"ca_file": None}), compose(FRANCE))
    assert type(error) is PermanentProviderError and "TLS" in error.detail
    assert fake_twilio.sms == []


async def test_twilio_debug_logging_shows_neither_code_nor_token(
    make_twilio: MakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    """With everything at DEBUG, the SDK's logging leaks neither the code nor the auth token."""
    caplog.set_level(logging.DEBUG)
    provider = make_twilio()
    await provider.send(compose(FRANCE))
    credentials = base64.b64encode(f"{TWILIO['accountSID']}:{AUTH_TOKEN}".encode()).decode()
    assert CODE not in caplog.text and AUTH_TOKEN not in caplog.text
    assert credentials not in caplog.text


async def test_fake_status_callback_is_signed_as_twilio_signs(
    make_twilio: MakeTwilio, fake_twilio: FakeTwilio, aiohttp_server: Any
) -> None:
    """The fake posts a message's status to its StatusCallback with the fields Twilio sends and
    an X-Twilio-Signature the SDK's own validator accepts (and rejects once forged)."""
    received: list[tuple[str, dict[str, str], str]] = []

    async def receipt(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        received.append((str(request.url), form, request.headers.get("X-Twilio-Signature", "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/v1/receipts/twilio", receipt)
    server = await aiohttp_server(app)
    url = str(server.make_url("/v1/receipts/twilio"))
    result = await make_twilio(status_callback=url).send(compose(FRANCE))
    assert result.provider_id is not None
    sid = result.provider_id
    assert await fake_twilio.send_status(sid, "undelivered", error_code=30003) == 204
    assert await fake_twilio.send_status(sid, "delivered", signed=False) == 204
    forged = await fake_twilio.send_status(sid, "delivered", extra={"MessageSid": "SMother"})
    assert forged == 204
    from_thread = await asyncio.to_thread(fake_twilio.post_status, sid, "sent")
    assert from_thread == 204
    validator = RequestValidator(AUTH_TOKEN)
    (u1, f1, s1), (_, f2, s2), (u3, f3, s3), (u4, f4, s4) = received
    assert f1["MessageSid"] == f1["SmsSid"] == sid and f1["MessageStatus"] == "undelivered"
    assert f1["ErrorCode"] == "30003" and f1["To"] == FRANCE
    assert f1["AccountSid"] == TWILIO["accountSID"]
    assert validator.validate(u1, f1, s1) and s2 == "" and "ErrorCode" not in f2
    assert not validator.validate(u3, f3, s3)
    assert f4["MessageStatus"] == "sent" and validator.validate(u4, f4, s4)
