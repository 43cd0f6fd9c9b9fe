"""The Vonage and Aliyun providers: the real SDKs against HTTP fakes of each provider's API.

Messages are composed by the real Composer from a Logto-shaped request, and the providers are
configured from the Logto connector JSON through the real config parser, so what the fakes
receive is what Vonage and Aliyun would receive.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

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
from otp_service.providers.aliyun import AliyunProvider
from otp_service.providers.vonage import VonageProvider

from .support.fakes import DROP, Reply, started
from .support.fakes import aliyun as aliyun_fakes
from .support.fakes import vonage as vonage_fakes
from .support.fakes.aliyun import (
    FakeAliyun,
    aliyun_business,
    aliyun_error,
    aliyun_slow,
    aliyun_throttled,
    logto_aliyun_json,
)
from .support.fakes.vonage import (
    FakeVonage,
    basic_auth,
    logto_vonage_json,
    vonage_http,
    vonage_not_json,
    vonage_status,
)
from .support.ports import free_port

fake_vonage = vonage_fakes.fake_vonage
fake_aliyun = aliyun_fakes.fake_aliyun

CODE = "482913"
VONAGE = logto_vonage_json()
ALIYUN = logto_aliyun_json()


@functools.cache
def _library() -> TemplateLibrary:
    return TemplateLibrary(TemplatesConfig())


def compose(
    to: str, usage: str = "SignIn", payload: dict[str, Any] | None = None, **sms: Any
) -> Message:
    """The message the service builds for a Logto request (default region CN)."""
    config = parse_config({"sms": {"default_region": "CN", **sms}}).sms
    request = SendRequest(to=to, type=usage, payload=payload or {"code": CODE, "locale": "en"})
    return Composer(_library(), config).compose("sms", request)


MakeVonage = Callable[..., VonageProvider]
MakeAliyun = Callable[..., AliyunProvider]


@pytest.fixture
async def make_vonage(fake_vonage: FakeVonage) -> AsyncIterator[MakeVonage]:
    """Build VonageProviders aimed at the fake (endpoint fields overridable); all closed after."""
    made: list[VonageProvider] = []

    def make(**endpoint: Any) -> VonageProvider:
        config = parse_config({"sms": {"provider": "vonage", "vonage": VONAGE}}).sms.vonage
        assert config is not None
        made.append(VonageProvider(config, Endpoint(**(fake_vonage.endpoint() | endpoint))))
        return made[-1]

    yield make
    for provider in made:
        await provider.close()


@pytest.fixture
async def make_aliyun(fake_aliyun: FakeAliyun) -> AsyncIterator[MakeAliyun]:
    """Build AliyunProviders aimed at the fake, from Logto's Aliyun JSON (overridable); all
    closed after."""
    made: list[AliyunProvider] = []

    def make(endpoint: dict[str, Any] | None = None, **json_overrides: Any) -> AliyunProvider:
        data = logto_aliyun_json(**json_overrides)
        config = parse_config({"sms": {"provider": "aliyun", "aliyun": data}}).sms.aliyun
        assert config is not None
        endpoint = fake_aliyun.endpoint() | (endpoint or {})
        made.append(AliyunProvider(config, Endpoint(**endpoint)))
        return made[-1]

    yield make
    for provider in made:
        await provider.close()


async def send_error(provider: VonageProvider | AliyunProvider, message: Message) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider.send(message)
    return caught.value


# Vonage


async def test_vonage_accepted_returns_provider_and_message_id(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """An accepted SMS reports provider "vonage" and Vonage's message-id; from/auth are Logto's."""
    fake_vonage.reply_next(
        lambda r: Reply(json={"message-count": "1", "messages": [
            {"to": r.form["to"], "message-id": "1A00000012345678", "status": "0",
             "remaining-balance": "9.96", "message-price": "0.0333", "network": "20810"}]})
    )  # fmt: skip
    message = compose("+33 6 12 34 56 78")
    result = await make_vonage().send(message)
    assert (result.provider, result.status, result.provider_id) == (
        "vonage", "sent", "1A00000012345678",
    )  # fmt: skip
    [request] = fake_vonage.requests
    assert request.method == "POST" and request.path == "/sms/json"
    assert request.form["from"] == "Acme" and request.form["to"] == "33612345678"
    assert basic_auth(request) == ("a1b2c3d4", "VonageS3cretValue")
    assert CODE in request.form["text"]


async def test_vonage_calls_share_one_kept_alive_connection(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """SMS after SMS go over one TLS connection, each POSTed once."""
    provider = make_vonage()
    for number in ("+33612345678", "+33612345679", "+33612345670"):
        await provider.send(compose(number))
    peers = {request.peer for request in fake_vonage.requests}
    assert len(fake_vonage.sms) == 3 and len(peers) == 1 and None not in peers


async def test_vonage_chinese_text_sent_as_unicode_intact(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """A Chinese code message goes with type=unicode and arrives character for character."""
    message = compose("+8613800138000", payload={"code": CODE, "locale": "zh-CN"})
    assert "验证码" in message.text
    await make_vonage().send(message)
    [form] = fake_vonage.sms
    assert form["type"] == "unicode" and form["text"] == message.text


async def test_vonage_gsm_text_sent_as_text(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """A GSM-7 message goes with type=text (160 characters per SMS, not 70), unchanged."""
    message = compose("+33612345678", payload={"code": CODE, "locale": "en"})
    await make_vonage().send(message)
    [form] = fake_vonage.sms
    assert form["type"] == "text" and form["text"] == message.text and CODE in form["text"]


@pytest.mark.parametrize(
    ("typed", "wire"),
    [
        ("+33 6 12 34 56 78", "33612345678"),
        ("8613800138000", "8613800138000"),
        ("13800138000", "8613800138000"),  # national, read with default_region CN
        ("0085291234567", "85291234567"),
        ("+1 (202) 555-0143", "12025550143"),
    ],
)
async def test_vonage_to_is_e164_digits_without_plus(
    make_vonage: MakeVonage, fake_vonage: FakeVonage, typed: str, wire: str
) -> None:
    """Whatever the user typed, Vonage gets the E.164 digits without '+'."""
    await make_vonage().send(compose(typed))
    assert [form["to"] for form in fake_vonage.sms] == [wire]


async def test_vonage_status_1_is_rate_limited(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """Vonage's status 1 (throttled) is a transient 429 provider_rate_limited."""
    fake_vonage.reply_next(vonage_status("1"))
    error = await send_error(make_vonage(), compose("+33612345678"))
    assert isinstance(error, RateLimitedError) and error.transient
    assert (error.status, error.code, error.provider) == (429, "provider_rate_limited", "vonage")


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        ("2", "Missing to param", PermanentProviderError),
        ("9", "Quota Exceeded - rejected", AccountRefusedError),
    ],
)
async def test_vonage_refusal_is_permanent_with_vonage_text(
    make_vonage: MakeVonage,
    fake_vonage: FakeVonage,
    status: str,
    text: str,
    kind: type[PermanentProviderError],
) -> None:
    """Statuses 2 and 9 are permanent 502s that keep Vonage's status and error text; 9 (no
    credit) is this account's refusal, which lets the next provider try."""
    fake_vonage.reply_next(vonage_status(status, text))
    error = await send_error(make_vonage(), compose("+33612345678"))
    assert type(error) is kind and not error.transient
    assert error.failover == (kind is AccountRefusedError)
    assert error.status == 502 and error.code == "provider_rejected"
    assert f"status {status}" in error.message and text in error.message


async def test_vonage_401_is_permanent_and_hides_secret(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """Bad credentials are a permanent error that names the fields, never the secret's value."""
    fake_vonage.reply_next(vonage_http(401))
    error = await send_error(make_vonage(), compose("+33612345678"))
    assert type(error) is PermanentProviderError
    assert "apiKey" in error.message and "apiSecret" in error.message
    assert VONAGE["apiSecret"] not in str(error) and VONAGE["apiSecret"] not in error.detail


async def test_vonage_429_is_rate_limited_with_retry_after(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """HTTP 429 is provider_rate_limited and keeps the Retry-After seconds."""
    fake_vonage.reply_next(vonage_http(429, retry_after="7"))
    error = await send_error(make_vonage(), compose("+33612345678"))
    assert isinstance(error, RateLimitedError) and error.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_vonage_5xx_is_transient(
    make_vonage: MakeVonage, fake_vonage: FakeVonage, status: int
) -> None:
    """A 5xx from Vonage is a transient 503 (a later attempt or another provider may work)."""
    fake_vonage.reply_next(vonage_http(status))
    error = await send_error(make_vonage(), compose("+33612345678"))
    assert type(error) is TransientProviderError and error.status == 503


@pytest.mark.parametrize("warm", [False, True], ids=["new-connection", "pooled-connection"])
async def test_vonage_dropped_connection_is_outcome_unknown_and_not_resent(
    make_vonage: MakeVonage, fake_vonage: FakeVonage, warm: bool
) -> None:
    """A connection dropped after the POST is 'outcome unknown' and the POST is never replayed."""
    provider = make_vonage()
    if warm:  # a kept-alive connection takes the next POST
        await provider.send(compose("+33612345678"))
    fake_vonage.reply_next(DROP)
    error = await send_error(provider, compose("+33612345678"))
    assert isinstance(error, OutcomeUnknownError) and not error.transient
    assert error.code == "provider_outcome_unknown"
    assert len(fake_vonage.sms) == (2 if warm else 1)  # exactly one POST for this message


async def test_vonage_read_timeout_is_outcome_unknown_and_not_resent(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """No answer within timeout_seconds is 'outcome unknown', after exactly one POST."""
    fake_vonage.reply_next(Reply(json={}, delay=5))
    error = await send_error(make_vonage(timeout_seconds=1), compose("+33612345678"))
    assert isinstance(error, OutcomeUnknownError)
    assert len(fake_vonage.sms) == 1


async def test_vonage_non_json_answer_is_outcome_unknown(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """A 200 whose body is not JSON cannot say whether the SMS left: outcome unknown."""
    fake_vonage.reply_next(vonage_not_json())
    error = await send_error(make_vonage(), compose("+33612345678"))
    assert isinstance(error, OutcomeUnknownError) and "unreadable" in error.message


async def test_vonage_connection_refused_is_transient(make_vonage: MakeVonage) -> None:
    """Nothing listening at the endpoint is transient: the SMS surely did not leave."""
    error = await send_error(make_vonage(host=f"127.0.0.1:{free_port()}"), compose("+33612345678"))
    assert type(error) is TransientProviderError and "connect" in error.message


async def test_vonage_untrusted_certificate_is_permanent(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """Without the test CA configured the certificate is refused: permanent, nothing posted."""
    error = await send_error(make_vonage(ca_file=None), compose("+33612345678"))
    assert type(error) is PermanentProviderError and "TLS" in error.message
    assert fake_vonage.sms == []


# Aliyun


async def test_aliyun_accepted_returns_provider_and_biz_id(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """An accepted SMS reports provider "aliyun" and Aliyun's BizId; SendSms is signed with the key."""
    fake_aliyun.reply_next(
        Reply(json={"Code": "OK", "Message": "OK", "RequestId": "F655A8D5-B967-440B-8683",
                    "BizId": "900619746936498440^0"})
    )  # fmt: skip
    result = await make_aliyun().send(compose("+8613800138000"))
    assert (result.provider, result.status, result.provider_id) == (
        "aliyun", "sent", "900619746936498440^0",
    )  # fmt: skip
    [request] = fake_aliyun.requests
    assert request.method == "POST" and request.path == "/" and request.body == b""
    assert request.header("x-acs-action") == "SendSms"
    assert request.header("x-acs-version") == "2017-05-25"
    authorization = request.header("Authorization") or ""
    assert authorization.startswith("ACS3-HMAC-SHA256 Credential=LTAI5tTestKeyId,")
    assert ALIYUN["accessKeySecret"] not in json.dumps(request.headers) + str(request.query)
    assert request.query["SignName"] == "阿克米"


async def test_aliyun_calls_share_one_kept_alive_connection(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """SMS after SMS go over one connection (the SDK alone opens and closes one per call)."""
    provider = make_aliyun()
    for number in ("+8613800138000", "+8613800138001", "+8613800138002"):
        await provider.send(compose(number))
    peers = {request.peer for request in fake_aliyun.requests}
    assert len(fake_aliyun.sms) == 3 and len(peers) == 1 and None not in peers


async def test_aliyun_sdk_called_outside_the_provider_keeps_its_own_transport(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """The provider's pool serves only its own calls: the SDK used directly in the same process
    still sends (on a connection of its own), and the provider's next SMS reuses its pool."""
    from alibabacloud_dysmsapi20170525 import models as sms_models
    from alibabacloud_dysmsapi20170525.client import Client
    from alibabacloud_tea_openapi import utils_models as open_api_models
    from darabonba.runtime import RuntimeOptions

    provider = make_aliyun()
    await provider.send(compose("+8613800138000"))
    client = Client(
        open_api_models.Config(
            access_key_id="LTAI5tOtherKey", access_key_secret="other", endpoint=fake_aliyun.host,
            protocol="http",
        )
    )  # fmt: skip
    request = sms_models.SendSmsRequest(
        phone_numbers="13800138001", sign_name="x", template_code="SMS_1", template_param="{}"
    )
    answer = await client.send_sms_with_options_async(request, RuntimeOptions(autoretry=False))
    await provider.send(compose("+8613800138002"))
    assert answer.body.code == "OK"
    first, direct, last = fake_aliyun.requests
    assert first.peer == last.peer != direct.peer


@pytest.fixture
def fake_aliyun_tls() -> Iterator[FakeAliyun]:
    """A :class:`FakeAliyun` on https, with the test CA's certificate."""
    with started(lambda: FakeAliyun(tls=True)) as server:
        yield server


async def test_aliyun_over_https_trusts_the_endpoint_ca_file(
    fake_aliyun_tls: FakeAliyun,
) -> None:
    """Over https the endpoint's ca_file is trusted (one connection for two SMS); without it
    the test CA's certificate is refused: permanent, nothing posted."""
    config = parse_config({"sms": {"provider": "aliyun", "aliyun": ALIYUN}}).sms.aliyun
    assert config is not None
    trusting = AliyunProvider(config, Endpoint(**fake_aliyun_tls.endpoint()))
    untrusting = AliyunProvider(config, Endpoint(**fake_aliyun_tls.endpoint() | {"ca_file": None}))
    try:
        await trusting.send(compose("+8613800138000"))
        await trusting.send(compose("+8613800138001"))
        assert len({request.peer for request in fake_aliyun_tls.requests}) == 1
        error = await send_error(untrusting, compose("+8613800138002"))
    finally:
        await trusting.close()
        await untrusting.close()
    assert type(error) is PermanentProviderError and "TLS" in error.message
    assert len(fake_aliyun_tls.sms) == 2


@pytest.mark.parametrize(
    "typed", ["+8613800138000", "8613800138000", "0086 138 0013 8000", "13800138000"]
)
async def test_aliyun_mainland_number_without_prefix_and_china_template(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun, typed: str
) -> None:
    """Mainland numbers go without +86 and with the template's china code."""
    await make_aliyun().send(compose(typed))
    [query] = fake_aliyun.sms
    assert query["PhoneNumbers"] == "13800138000"
    assert query["TemplateCode"] == "SMS_100001"


@pytest.mark.parametrize(
    ("typed", "wire"), [("+85291234567", "85291234567"), ("+33 6 12 34 56 78", "33612345678")]
)
async def test_aliyun_overseas_number_with_prefix_and_overseas_template(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun, typed: str, wire: str
) -> None:
    """Other numbers keep their country code (no '+') and use the overseas code."""
    await make_aliyun().send(compose(typed))
    [query] = fake_aliyun.sms
    assert query["PhoneNumbers"] == wire and query["TemplateCode"] == "SMS_900001"


async def test_aliyun_single_template_code_serves_every_region(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """A templateCode given as one string is used for mainland and overseas numbers alike."""
    provider = make_aliyun()
    await provider.send(compose("+8613800138000", "Register"))
    await provider.send(compose("+85291234567", "Register"))
    assert [q["TemplateCode"] for q in fake_aliyun.sms] == ["SMS_100002", "SMS_100002"]


@pytest.mark.parametrize(
    ("typed", "strict", "template", "wire"),
    [
        ("13800138000", False, "SMS_100001", "13800138000"),
        ("13800138000", True, "SMS_900001", "8613800138000"),
        ("8613800138000", True, "SMS_100001", "13800138000"),
        ("+8613800138000", True, "SMS_100001", "13800138000"),
    ],
)
async def test_aliyun_strict_region_check_needs_typed_country_prefix(
    make_aliyun: MakeAliyun,
    fake_aliyun: FakeAliyun,
    typed: str,
    strict: bool,
    template: str,
    wire: str,
) -> None:
    """As in Logto, strictPhoneRegionNumberCheck counts a number as mainland only if typed with 86."""
    provider = make_aliyun(strictPhoneRegionNumberCheck=strict)
    await provider.send(compose(typed))
    [query] = fake_aliyun.sms
    assert (query["TemplateCode"], query["PhoneNumbers"]) == (template, wire)


async def test_aliyun_template_param_is_payload_without_locale(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """TemplateParam is the JSON of Logto's payload minus locale, non-ASCII intact."""
    payload = {"code": CODE, "locale": "zh-CN", "uiLocales": "zh-CN en",
               "application": {"name": "商店"}, "somethingNew": [1, None]}  # fmt: skip
    await make_aliyun().send(compose("+8613800138000", payload=payload))
    [query] = fake_aliyun.sms
    assert json.loads(query["TemplateParam"]) == {k: v for k, v in payload.items() if k != "locale"}
    assert "商店" in query["TemplateParam"]


async def test_aliyun_unknown_usage_type_uses_generic_code(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """A type without its own template (MfaVerification) is sent with Generic's code."""
    provider = make_aliyun()
    await provider.send(compose("+8613800138000", "MfaVerification"))
    await provider.send(compose("+85291234567", "MfaVerification"))
    assert [q["TemplateCode"] for q in fake_aliyun.sms] == ["SMS_100000", "SMS_900000"]


async def test_aliyun_business_limit_control_is_rate_limited(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """isv.BUSINESS_LIMIT_CONTROL (HTTP 200) is a transient 429 provider_rate_limited."""
    fake_aliyun.reply_next(aliyun_business("isv.BUSINESS_LIMIT_CONTROL"))
    error = await send_error(make_aliyun(), compose("+8613800138000"))
    assert isinstance(error, RateLimitedError) and error.provider == "aliyun"
    assert "isv.BUSINESS_LIMIT_CONTROL" in error.message


async def test_aliyun_other_business_error_is_permanent_with_aliyun_text(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """Another business Code is permanent and keeps Aliyun's code and message."""
    fake_aliyun.reply_next(aliyun_business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号"))
    error = await send_error(make_aliyun(), compose("+8613800138000"))
    assert type(error) is PermanentProviderError
    assert "isv.MOBILE_NUMBER_ILLEGAL" in error.message and "非法手机号" in error.message


async def test_aliyun_client_error_is_permanent_and_hides_secret(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """A 4xx (unknown AccessKey) is permanent, names Aliyun's code, never the secret."""
    fake_aliyun.reply_next(
        aliyun_error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    )
    error = await send_error(make_aliyun(), compose("+8613800138000"))
    assert type(error) is PermanentProviderError and error.status == 502
    assert "InvalidAccessKeyId.NotFound" in error.message
    assert ALIYUN["accessKeySecret"] not in str(error)


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "ServiceUnavailable")])
async def test_aliyun_5xx_is_transient(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun, status: int, code: str
) -> None:
    """A 5xx from Aliyun is transient (503)."""
    fake_aliyun.reply_next(aliyun_error(status, code, "The request processing has failed."))
    error = await send_error(make_aliyun(), compose("+8613800138000"))
    assert type(error) is TransientProviderError and error.status == 503 and code in error.message


async def test_aliyun_throttling_header_is_rate_limited_with_retry_after(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """An answer with x-acs-retry-after (ms) is provider_rate_limited with that delay in seconds."""
    fake_aliyun.reply_next(aliyun_throttled(3000))
    error = await send_error(make_aliyun(), compose("+8613800138000"))
    assert isinstance(error, RateLimitedError) and error.retry_after == 3.0


async def test_aliyun_timeout_is_outcome_unknown_and_not_resent(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """No answer within timeout_seconds is 'outcome unknown', after exactly one request."""
    fake_aliyun.reply_next(aliyun_slow(3))
    provider = make_aliyun(endpoint={"timeout_seconds": 0.3})
    error = await send_error(provider, compose("+8613800138000"))
    assert isinstance(error, OutcomeUnknownError) and error.code == "provider_outcome_unknown"
    assert len(fake_aliyun.sms) == 1


async def test_aliyun_dropped_connection_is_outcome_unknown_and_not_resent(
    make_aliyun: MakeAliyun, fake_aliyun: FakeAliyun
) -> None:
    """A connection dropped after the request is 'outcome unknown', never replayed."""
    fake_aliyun.reply_next(DROP)
    error = await send_error(make_aliyun(), compose("+8613800138000"))
    assert isinstance(error, OutcomeUnknownError)
    assert len(fake_aliyun.sms) == 1


async def test_aliyun_connection_refused_is_transient(make_aliyun: MakeAliyun) -> None:
    """Nothing listening at the endpoint is transient: the SMS surely did not leave."""
    provider = make_aliyun(endpoint={"host": f"127.0.0.1:{free_port()}"})
    error = await send_error(provider, compose("+8613800138000"))
    assert type(error) is TransientProviderError and "connect" in error.message


# Secrets in logs


async def test_vonage_debug_logging_shows_neither_code_nor_secret(
    make_vonage: MakeVonage, caplog: pytest.LogCaptureFixture
) -> None:
    """With everything at DEBUG, the SDK's request logging leaks neither the code nor apiSecret."""
    caplog.set_level(logging.DEBUG)
    provider = make_vonage()
    await provider.send(compose("+33 6 12 34 56 78"))
    await provider.send(compose("+33 6 12 34 56 79"))  # the second request reuses the headers
    secret_basic = base64.b64encode(b"a1b2c3d4:VonageS3cretValue").decode()
    assert CODE not in caplog.text and "VonageS3cretValue" not in caplog.text
    assert secret_basic not in caplog.text


async def test_aliyun_debug_environment_does_not_print_the_code(
    make_aliyun: MakeAliyun, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEBUG=1 in the environment makes darabonba print requests; the code stays out of them."""
    monkeypatch.setenv("DEBUG", "1")
    await make_aliyun().send(compose("+8613800138000"))
    out, err = capfd.readouterr()
    assert CODE not in out + err


async def test_vonage_multipart_all_throttled_is_rate_limited_not_lost(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """A two-part SMS throttled on every part is a rate limit (retried or failed over), not a 502."""
    throttled = {"status": "1", "error-text": "Throughput Rate Exceeded"}
    fake_vonage.reply_next(Reply(json={"message-count": "2", "messages": [throttled, throttled]}))
    error = await send_error(make_vonage(), compose("+33612345678"))
    assert isinstance(error, RateLimitedError) and error.transient


async def test_vonage_multipart_partly_sent_is_not_resent(
    make_vonage: MakeVonage, fake_vonage: FakeVonage
) -> None:
    """A two-part SMS with one part accepted is permanent: resending would duplicate that part."""
    sent = {"to": "33612345678", "message-id": "1", "status": "0"}
    failed = {"status": "1", "error-text": "Throughput Rate Exceeded"}
    fake_vonage.reply_next(Reply(json={"message-count": "2", "messages": [sent, failed]}))
    error = await send_error(make_vonage(), compose("+33612345678"))
    assert isinstance(error, PermanentProviderError) and "some parts" in error.detail
