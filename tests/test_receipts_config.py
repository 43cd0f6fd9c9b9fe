"""The settings of delivery receipts: server.public_url, the providers' receipt secrets, the
capture simulation's pattern, and what check-config warns about."""

from __future__ import annotations

from typing import Any

import pytest

from otp_service.config import parse_config
from otp_service.config.checks import warnings
from otp_service.errors import ConfigError

from .support.fakes.aliyun import logto_aliyun_json
from .support.fakes.twilio import logto_twilio_json
from .support.fakes.vonage import logto_vonage_json


def problems(data: dict[str, Any]) -> dict[str, str]:
    """Each problem's path and text, for a config that must be refused."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return {p.path: p.problem for p in caught.value.problems}


@pytest.mark.parametrize(
    "url",
    ["otp.example.com", "ftp://otp.example.com", "https://", "https://x.example?a=1", "/v1"],
)
def test_public_url_must_be_an_absolute_http_url(url: str) -> None:
    """server.public_url is refused unless it is an absolute http(s) URL without a query."""
    assert "absolute http(s) URL" in problems({"server": {"public_url": url}})["server.public_url"]


def test_public_url_kept_without_a_trailing_slash() -> None:
    """A trailing slash is dropped, so receipt URLs never hold a double slash."""
    config = parse_config({"server": {"public_url": "https://otp.example.com/base/"}})
    assert config.server.public_url == "https://otp.example.com/base"


def test_report_token_and_signature_settings_are_checked() -> None:
    """A short reportToken, an unknown signatureMethod and a broken capture pattern are each
    refused with their path."""
    found = problems(
        {
            "sms": {
                "provider": "vonage",
                "vonage": logto_vonage_json(signatureMethod="sha384"),
                "aliyun": logto_aliyun_json(reportToken="short"),
            },
            "capture": {"sms_undelivered": "(unclosed"},
        }
    )
    assert "16" in found["sms.aliyun.reportToken"]
    assert "sms.vonage.signatureMethod" in found
    assert "regular expression" in found["capture.sms_undelivered"]


def test_check_config_warns_about_receipts_that_cannot_arrive_or_be_trusted() -> None:
    """Vonage and Twilio without server.public_url, and Vonage without signatureSecret, are
    warnings; with both set, none about receipts."""
    sms = {
        "routes": [{"providers": ["twilio", "vonage"]}],
        "provider": "vonage",
        "vonage": logto_vonage_json(),
        "twilio": logto_twilio_json(),
    }
    found = {p.path: p.problem for p in warnings(parse_config({"sms": sms}))}
    assert found["server.public_url"].startswith("is not set: vonage and twilio cannot")
    assert "unsigned" in found["sms.vonage"]
    sms["vonage"] = logto_vonage_json(signatureSecret="VonageSignatureSecret123")
    config = parse_config({"sms": sms, "server": {"public_url": "https://otp.example.com"}})
    paths = {p.path for p in warnings(config)}
    assert not paths & {"server.public_url", "sms.vonage"}, paths
