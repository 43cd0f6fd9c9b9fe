"""The ``sms.twilio`` configuration: Logto's Twilio connector JSON pasted as is.

Every problem is a ConfigError naming the exact field path, found at start-up, and
``check-config`` reports them all; the auth token is a secret nobody prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otp_service.config import parse_config
from otp_service.config.checks import warnings
from otp_service.errors import ConfigError

from .support.command import run
from .support.fakes.twilio import AUTH_TOKEN, logto_twilio_json
from .support.fakes.vonage import logto_vonage_json


def problems(sms: dict[str, Any]) -> dict[str, str]:
    """Parse a config with this ``sms`` section; the problems found, path -> text."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"sms": sms})
    return {p.path: p.problem for p in caught.value.problems}


def test_logto_twilio_json_accepted_as_pasted() -> None:
    """Logto's Twilio JSON is accepted field for field, its optional host and switch included."""
    data = logto_twilio_json(host="API.Dublin.IE1.twilio.com", disableRiskCheck=True)
    data["templates"].append({"usageType": "MfaVerification", "content": "MFA: {{ code }}"})
    twilio = parse_config({"sms": {"provider": "twilio", "twilio": data}}).sms.twilio
    assert twilio is not None
    assert (twilio.account_sid, twilio.auth_token, twilio.messaging_service_sid) == (
        data["accountSID"], AUTH_TOKEN, data["fromMessagingServiceSID"],
    )  # fmt: skip
    assert twilio.host == "api.dublin.ie1.twilio.com" and twilio.disable_risk_check is True
    assert dict(twilio.templates)["MfaVerification"] == "MFA: {{ code }}"
    assert AUTH_TOKEN not in repr(twilio)


def test_twilio_json_missing_fields_each_named() -> None:
    """Each missing or empty field of the connector JSON is its own problem, with its path."""
    found = problems({"provider": "twilio", "twilio": {"accountSID": "", "templates": []}})
    assert {
        "sms.twilio.accountSID", "sms.twilio.authToken", "sms.twilio.fromMessagingServiceSID",
        "sms.twilio.templates",
    } <= set(found)  # fmt: skip
    assert "Register" in found["sms.twilio.templates"]


@pytest.mark.parametrize(
    "host", ["https://api.twilio.com", "api.twilio.com:443", "evil.example.com", "api.twilio.co"]
)
def test_twilio_host_must_be_a_twilio_api_host(host: str) -> None:
    """Logto's host field takes a Twilio API host name only (no scheme, port or other domain)."""
    found = problems({"provider": "twilio", "twilio": logto_twilio_json(host=host)})
    assert list(found) == ["sms.twilio.host"]


def test_twilio_json_misspelt_key_named() -> None:
    """A misspelt key of the pasted JSON is named with the likely fix, not silently ignored."""
    data = logto_twilio_json()
    data["fromMessagingServiceSid"] = data.pop("fromMessagingServiceSID")
    found = problems({"provider": "twilio", "twilio": data})
    assert "sms.twilio.fromMessagingServiceSid" in found


def test_route_to_twilio_without_its_json_named() -> None:
    """A route naming twilio while sms.twilio is absent points at sms.twilio."""
    sms = {"provider": "vonage", "vonage": logto_vonage_json(),
           "routes": [{"prefixes": ["+1"], "providers": ["twilio", "vonage"]}]}  # fmt: skip
    found = problems(sms)
    assert list(found) == ["sms.twilio"] and "is required" in found["sms.twilio"]


def test_twilio_endpoint_and_concurrency_configurable() -> None:
    """sms.endpoints.twilio points the provider elsewhere; sms.twilio_concurrency bounds calls."""
    config = parse_config({"sms": {
        "provider": "twilio", "twilio": logto_twilio_json(), "twilio_concurrency": 8,
        "endpoints": {"twilio": {"host": "127.0.0.1:8443", "protocol": "http"}},
    }}).sms  # fmt: skip
    assert config.endpoint("twilio").host == "127.0.0.1:8443"
    assert config.calls_at_once("twilio") == 8


def test_twilio_texts_unused_beside_vonage_texts_is_a_warning() -> None:
    """With Vonage's and Twilio's JSON both carrying texts, the SMS text comes from Vonage's
    (it is written before routing): check-config warns that Twilio's templates are unused."""
    sms = {"provider": "vonage", "vonage": logto_vonage_json(), "twilio": logto_twilio_json(),
           "routes": [{"prefixes": ["+1"], "providers": ["twilio", "vonage"]}]}  # fmt: skip
    [warning] = warnings(parse_config({"sms": sms}))
    assert warning.path == "sms.twilio.templates" and "sms.vonage.templates" in warning.problem
    alone = {"provider": "twilio", "twilio": logto_twilio_json()}
    assert warnings(parse_config({"sms": alone})) == []


@pytest.mark.slow
def test_check_config_accepts_twilio_json_and_hides_token(tmp_path: Path) -> None:
    """check-config passes Logto's pasted Twilio JSON and never prints its auth token."""
    path = tmp_path / "twilio.json"
    path.write_text(json.dumps({"sms": {"provider": "twilio", "twilio": logto_twilio_json()}}))
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "twilio" in result.stdout and AUTH_TOKEN not in result.stdout + result.stderr


@pytest.mark.slow
def test_check_config_lists_every_twilio_problem(tmp_path: Path) -> None:
    """check-config lists each problem of a broken Twilio section with its path and a fix."""
    broken = logto_twilio_json(host="https://api.twilio.com", disableRiskCheck="yes")
    del broken["authToken"]
    path = tmp_path / "twilio.json"
    path.write_text(json.dumps({"sms": {"provider": "twilio", "twilio": broken}}))
    result = run("check-config", str(path))
    assert result.returncode == 1
    for field in ("sms.twilio.authToken", "sms.twilio.host", "sms.twilio.disableRiskCheck"):
        assert f"- {field}:" in result.stderr, field
    assert result.stderr.count("fix:") >= 3
