"""The ``sms`` configuration: Logto's Vonage and Aliyun JSON pasted as is, routes and countries.

Every problem is a ConfigError naming the exact field path, found at start-up.
"""

from __future__ import annotations

from typing import Any

import pytest

from otp_service.config import Config, parse_config
from otp_service.config.aliyun import AliyunTemplate
from otp_service.config.sms import Endpoint
from otp_service.errors import ConfigError
from otp_service.http.app import create_app

from .support.fakes.aliyun import logto_aliyun_json
from .support.fakes.vonage import logto_vonage_json

BOTH = {
    "provider": "vonage",
    "vonage": logto_vonage_json(),
    "aliyun": logto_aliyun_json(),
    "routes": [{"prefixes": ["+86"], "providers": ["aliyun", "vonage"]}],
}


def problems(sms: dict[str, Any]) -> dict[str, str]:
    """Parse a config with this ``sms`` section; the problems found, path -> text."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"sms": sms})
    found: dict[str, str] = {}
    for problem in caught.value.problems:
        found[problem.path] = f"{found.get(problem.path, '')}{problem.problem};"
    return found


def with_templates(data: dict[str, Any], templates: list[Any]) -> dict[str, Any]:
    return data | {"templates": templates}


def test_logto_vonage_json_accepted_as_pasted() -> None:
    """Logto's Vonage connector JSON is accepted field for field, templates included."""
    data = logto_vonage_json()
    data["templates"].append({"usageType": "MfaVerification", "content": "MFA: {{ code }}"})
    vonage = parse_config({"sms": {"provider": "vonage", "vonage": data}}).sms.vonage
    assert vonage is not None
    assert (vonage.api_key, vonage.api_secret, vonage.brand_name) == (
        "a1b2c3d4", "VonageS3cretValue", "Acme",
    )  # fmt: skip
    assert dict(vonage.templates)["MfaVerification"] == "MFA: {{ code }}"
    assert [usage for usage, _ in vonage.templates] == [
        "Register", "SignIn", "ForgotPassword", "Generic", "MfaVerification",
    ]  # fmt: skip


def test_logto_aliyun_json_accepted_as_pasted() -> None:
    """Logto's Aliyun JSON is accepted: string or {china, overseas} codes, type, strict flag."""
    data = logto_aliyun_json(strictPhoneRegionNumberCheck=True)
    aliyun = parse_config({"sms": {"provider": "aliyun", "aliyun": data}}).sms.aliyun
    assert aliyun is not None
    assert (aliyun.access_key_id, aliyun.sign_name) == ("LTAI5tTestKeyId", "阿克米")
    assert aliyun.strict_phone_region_number_check is True
    assert aliyun.template("SignIn") == AliyunTemplate("SignIn", "SMS_100001", "SMS_900001")
    assert aliyun.template("Register") == AliyunTemplate("Register", "SMS_100002", "SMS_100002")
    assert aliyun.template("BindMfa") == aliyun.template("Generic")


def test_routes_endpoints_and_countries_parsed() -> None:
    """Routes keep their order, endpoints their host, countries are upper-cased."""
    sms = BOTH | {
        "default_region": "cn",
        "endpoints": {
            "aliyun": {"host": "dysmsapi.ap-southeast-1.aliyuncs.com", "timeout_seconds": 3}
        },
        "allow_countries": ["cn", "FR"],
        "deny_countries": ["KP"],
        "max_segments": 2,
    }
    config = parse_config({"sms": sms}).sms
    assert config.route_for("+8613800138000").providers == ("aliyun", "vonage")
    assert config.route_for("+33612345678").providers == ("vonage",)
    assert config.endpoint("aliyun") == Endpoint(
        host="dysmsapi.ap-southeast-1.aliyuncs.com", protocol="https", timeout_seconds=3.0
    )
    assert config.endpoint("vonage") == Endpoint()
    assert config.default_region == "CN"
    assert config.allow_countries == {"CN", "FR"} and config.deny_countries == {"KP"}
    assert config.max_segments == 2


def test_secrets_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """apiSecret and accessKeySecret can come from ${VARS}; a missing one names the field."""
    monkeypatch.setenv("VONAGE_API_SECRET", "from-the-environment")
    sms = BOTH | {
        "vonage": logto_vonage_json(apiSecret="${VONAGE_API_SECRET}"),
        "aliyun": logto_aliyun_json(accessKeySecret="${ALIYUN_SECRET_NOT_SET}"),
    }
    assert set(problems(sms)) == {"sms.aliyun.accessKeySecret"}
    sms["aliyun"] = logto_aliyun_json()
    vonage = parse_config({"sms": sms}).sms.vonage
    assert vonage is not None and vonage.api_secret == "from-the-environment"


def test_secrets_not_in_repr() -> None:
    """Printing or logging the parsed config never shows apiSecret or accessKeySecret."""
    config = parse_config({"sms": BOTH})
    shown = repr(config) + str(config.sms)
    assert "VonageS3cretValue" not in shown and "AliyunS3cretValue" not in shown
    assert "a1b2c3d4" in shown  # the key id stays visible, to tell accounts apart


@pytest.mark.parametrize(
    ("provider", "field"),
    [
        ("vonage", "apiKey"),
        ("vonage", "apiSecret"),
        ("vonage", "brandName"),
        ("vonage", "templates"),
        ("aliyun", "accessKeyId"),
        ("aliyun", "accessKeySecret"),
        ("aliyun", "signName"),
        ("aliyun", "templates"),
    ],
)
def test_missing_connector_field_named(provider: str, field: str) -> None:
    """Each required field of the pasted connector JSON, when missing, is named by its path."""
    data = BOTH[provider].copy()
    del data[field]
    found = problems(BOTH | {provider: data})
    assert (
        set(found) == {f"sms.{provider}.{field}"}
        and "is required" in found[f"sms.{provider}.{field}"]
    )


@pytest.mark.parametrize(
    ("provider", "value"), [("vonage", ""), ("vonage", 12345), ("aliyun", "  "), ("aliyun", None)]
)
def test_empty_or_wrong_type_secret_named_without_value(provider: str, value: Any) -> None:
    """A blank or non-string secret is named by path; the message never repeats the value."""
    field = "apiSecret" if provider == "vonage" else "accessKeySecret"
    found = problems(BOTH | {provider: BOTH[provider] | {field: value}})
    assert set(found) == {f"sms.{provider}.{field}"}
    assert str(value).strip() == "" or str(value) not in found[f"sms.{provider}.{field}"]


@pytest.mark.parametrize("provider", ["vonage", "aliyun"])
def test_missing_required_usage_types_listed(provider: str) -> None:
    """As Logto does, templates must cover Register, SignIn, ForgotPassword and Generic."""
    data = BOTH[provider]
    kept = [t for t in data["templates"] if t["usageType"] in ("SignIn", "Register")]
    found = problems(BOTH | {provider: with_templates(data, kept)})
    assert set(found) == {f"sms.{provider}.templates"}
    assert "ForgotPassword, Generic" in found[f"sms.{provider}.templates"]


@pytest.mark.parametrize("provider", ["vonage", "aliyun"])
def test_empty_templates_refused(provider: str) -> None:
    """An empty templates array lacks every required usage type, as Logto's connector says."""
    found = problems(BOTH | {provider: with_templates(BOTH[provider], [])})
    assert set(found) == {f"sms.{provider}.templates"}


@pytest.mark.parametrize(
    "code",
    ["", 5, {"china": "SMS_1"}, {"china": "SMS_1", "overseas": ""}, ["SMS_1"], None],
    ids=["empty", "number", "no-overseas", "empty-overseas", "list", "missing"],
)
def test_bad_template_code_named(code: Any) -> None:
    """A templateCode that is neither a code nor {china, overseas} is named by its path."""
    data = logto_aliyun_json()
    templates = [t.copy() for t in data["templates"]]
    templates.append({"usageType": "BindMfa", "templateCode": code})
    if code is None:
        del templates[-1]["templateCode"]
    found = problems(BOTH | {"aliyun": with_templates(data, templates)})
    assert set(found) == {"sms.aliyun.templates[4].templateCode"}


def test_template_entry_problems_named() -> None:
    """A template that is not an object, or lacks usageType/content, is named by index."""
    data = logto_vonage_json()
    templates = [*data["templates"], "SignIn: {{code}}", {"usageType": "BindMfa"}, {"content": "x"}]
    found = problems(BOTH | {"vonage": with_templates(data, templates)})
    assert set(found) == {
        "sms.vonage.templates[4]",
        "sms.vonage.templates[5].content",
        "sms.vonage.templates[6].usageType",
    }


def test_unknown_connector_key_named() -> None:
    """A misspelt key in the pasted JSON is named (not silently ignored)."""
    found = problems(BOTH | {"vonage": BOTH["vonage"] | {"apiSecrett": "x"}})
    assert set(found) == {"sms.vonage.apiSecrett"}


@pytest.mark.parametrize("provider", ["vonage", "aliyun"])
def test_route_provider_without_its_json_named(provider: str) -> None:
    """A route (or sms.provider) naming a provider whose JSON is absent points at sms.<name>."""
    sms = {k: v for k, v in BOTH.items() if k != provider}
    found = problems(sms)
    assert set(found) == {f"sms.{provider}"} and "is required" in found[f"sms.{provider}"]


def test_route_naming_unknown_provider_named() -> None:
    """A route naming a provider that does not exist is named at its providers list."""
    found = problems(BOTH | {"routes": [{"prefixes": ["+44"], "providers": ["plivo"]}]})
    assert "sms.routes[0].providers" in found and "'plivo'" in found["sms.routes[0].providers"]


def test_route_naming_unknown_provider_reported_once() -> None:
    """An unknown provider name is one problem, not also a request to paste its JSON."""
    found = problems(BOTH | {"routes": [{"prefixes": ["+44"], "providers": ["plivo"]}]})
    assert set(found) == {"sms.routes[0].providers"}


@pytest.mark.parametrize(
    "route",
    [
        {"prefixes": ["86"], "providers": ["aliyun"]},
        {"prefixes": ["+86 1"], "providers": ["aliyun"]},
        {"prefixes": ["+"], "providers": ["aliyun"]},
        {"prefixes": [86], "providers": ["aliyun"]},
        {"prefixes": "+86", "providers": ["aliyun"]},
    ],
)
def test_bad_route_prefix_named(route: dict[str, Any]) -> None:
    """A prefix that is not '+digits' (or prefixes that are not a list) is named."""
    found = problems(BOTH | {"routes": [{"providers": ["vonage"]}, route]})
    assert set(found) == {"sms.routes[1].prefixes"}


def test_route_without_providers_named() -> None:
    """A route must list at least one provider."""
    found = problems(BOTH | {"routes": [{"prefixes": ["+86"], "providers": []}]})
    assert set(found) == {"sms.routes[0].providers"}


@pytest.mark.parametrize(
    ("key", "codes", "path"),
    [
        ("allow_countries", ["CN", "China"], "sms.allow_countries[1]"),
        ("allow_countries", ["XX"], "sms.allow_countries[0]"),
        ("deny_countries", ["FR", 33], "sms.deny_countries[1]"),
        ("deny_countries", ["EU"], "sms.deny_countries[0]"),
    ],
)
def test_bad_country_code_named(key: str, codes: list[Any], path: str) -> None:
    """A country that is not an ISO 3166 code is named by its index."""
    found = problems(BOTH | {key: codes})
    assert set(found) == {path} and "country code" in found[path]


@pytest.mark.parametrize(
    ("sms", "path"),
    [
        ({"default_region": "China"}, "sms.default_region"),
        ({"provider": "plivo"}, "sms.provider"),
        ({"max_segments": 0}, "sms.max_segments"),
        ({"endpoints": {"aliyun": {"host": "https://dysmsapi.aliyuncs.com"}}}, "sms.endpoints.aliyun.host"),
        ({"endpoints": {"vonage": {"protocol": "ftp"}}}, "sms.endpoints.vonage.protocol"),
        ({"aliyun": logto_aliyun_json(strictPhoneRegionNumberCheck="yes")},
         "sms.aliyun.strictPhoneRegionNumberCheck"),
    ],
)  # fmt: skip
def test_other_sms_settings_named(sms: dict[str, Any], path: str) -> None:
    """Bad region, provider, segment limit, endpoint or strict flag: each is named by path."""
    assert set(problems(BOTH | sms)) == {path}


def test_every_problem_reported_at_once() -> None:
    """All problems of the sms section come in one ConfigError, for one round of fixes."""
    sms = BOTH | {
        "vonage": logto_vonage_json(apiKey=""),
        "aliyun": logto_aliyun_json(signName=None),
        "routes": [{"prefixes": ["86"], "providers": ["aliyun"]}],
        "allow_countries": ["ZZ"],
    }
    assert set(problems(sms)) == {
        "sms.vonage.apiKey",
        "sms.aliyun.signName",
        "sms.routes[0].prefixes",
        "sms.allow_countries[0]",
    }


def test_broken_vonage_template_fails_at_start_up() -> None:
    """A Vonage template that does not compile stops the service at start-up, naming the entry."""
    data = logto_vonage_json()
    data["templates"][1]["content"] = "Your code is {{ code }"
    config: Config = parse_config({"sms": {"provider": "vonage", "vonage": data}})
    with pytest.raises(ConfigError) as caught:
        create_app(config)
    assert [p.path for p in caught.value.problems] == ["sms.vonage.templates[1]"]
