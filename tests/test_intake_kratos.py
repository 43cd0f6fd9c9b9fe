"""The Ory Kratos intake: its authentication, its payloads (field for field as Kratos's
courier/http_channel.go httpDataModel and courier/template models build them, with the full
context and with Kratos's default body), and end to end."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from otp_service.config import parse_config
from otp_service.errors import ConfigError, RequestError
from otp_service.intake import kratos
from otp_service.message.templates import NO_GENERIC
from otp_service.metrics import usage_label

from .support.command import Service, http
from .support.fakes.vonage import FakeVonage, logto_vonage_json
from .support.processes import TEMPLATES
from .support.service import ClientFactory
from .support.smtp_server import RecordingSMTPServer

IDENTITY = {
    "id": "9f425a8d-7efc-4768-8f23-7647a74fdf13",
    "schema_id": "default",
    "state": "active",
    "traits": {"email": "ada@example.com", "phone": "+4915112345678",
               "name": {"first": "Ada", "last": "Lovelace"}, "language": "fr"},
    "metadata_public": None,
}  # fmt: skip


def full(template_type: str, message_type: str = "email", **data: Any) -> dict[str, Any]:
    """The whole context, as ``body: function(ctx) ctx`` sends it."""
    to = "ada@example.com" if message_type == "email" else "+4915112345678"
    template_data: dict[str, Any] = {
        "to": to, "identity": IDENTITY, "request_url": "https://auth.example.com/self-service/x",
        "transient_payload": {}, "expires_in_minutes": 15, **data,
    }  # fmt: skip
    body = {
        "recipient": to,
        "subject": "Login to your account" if message_type == "email" else "",
        "body": "Please login to your account by entering the following code:\n\n123456\n",
        "template_type": template_type,
        "template_data": template_data,
        "message_type": message_type,
        "request_headers": {"User-Agent": ["Mozilla/5.0"]},
    }
    if message_type == "email":
        body["html_body"] = "<p>Please login ...</p>"
    return body


def default_body(template_type: str, body: str, **codes: str) -> dict[str, Any]:
    """What Kratos's default body jsonnet sends: no login_code or registration_code."""
    return {
        "recipient": "+4915112345678", "template_type": template_type, "to": "+4915112345678",
        "recovery_code": None, "recovery_url": None, "verification_url": None,
        "verification_code": None, "subject": "", "body": body, **codes,
    }  # fmt: skip


# -- authentication


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_accepted() -> None:
    """``basic_auth: {user, password}`` as Kratos sends it (Go's SetBasicAuth)."""
    kratos.check_basic(_basic("kratos", "s3cr3t-password-123"), "kratos", "s3cr3t-password-123")


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer x", "Basic", "Basic !!!notbase64", _basic("kratos", "wrong"),
     _basic("other", "s3cr3t-password-123"), _basic("kratos", "s3cr3t-password-123x")],
)  # fmt: skip
def test_basic_auth_wrong_refused(header: str | None) -> None:
    """Anything but the configured user and password: 401 unauthorized."""
    with pytest.raises(RequestError) as caught:
        kratos.check_basic(header, "kratos", "s3cr3t-password-123")
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_api_key_header_accepted() -> None:
    """``api_key: {name, value, in: header}``: the value verbatim in that header."""
    headers = {"Authorization": "Bearer s3cr3t-token-123456"}
    kratos.check_api_key(headers, "Authorization", "Bearer s3cr3t-token-123456", "header")


def test_api_key_cookie_accepted() -> None:
    """``in: cookie``: Kratos adds it as a cookie of that name."""
    headers = {"Cookie": "other=1; otp_key=s3cr3t-token-123456"}
    kratos.check_api_key(headers, "otp_key", "s3cr3t-token-123456", "cookie")


@pytest.mark.parametrize(
    ("headers", "where"),
    [
        ({}, "header"),
        ({"X-Api-Key": "s3cr3t-token-12345"}, "header"),
        ({"Cookie": "X-Api-Key=s3cr3t-token-123456"}, "header"),  # a cookie is not the header
        ({"X-Api-Key": "s3cr3t-token-123456"}, "cookie"),  # the header is not the cookie
        ({"Cookie": "X-Api-Key=wrong"}, "cookie"),
        ({"Cookie": "\x00garbage=;;"}, "cookie"),
    ],
)
def test_api_key_wrong_refused(headers: dict[str, str], where: Any) -> None:
    """A missing or wrong key, or the key in the other place: 401 unauthorized."""
    with pytest.raises(RequestError) as caught:
        kratos.check_api_key(headers, "X-Api-Key", "s3cr3t-token-123456", where)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


# -- the payload


@pytest.mark.parametrize(
    ("template_type", "message_type", "data", "usage", "code"),
    [
        ("login_code_valid", "email", {"login_code": "123456"}, "SignIn", "123456"),
        ("login_code_valid", "sms", {"login_code": "123456"}, "SignIn", "123456"),
        ("registration_code_valid", "email",
         {"registration_code": "234567", "traits": IDENTITY["traits"]}, "Register", "234567"),
        ("verification_code_valid", "email",
         {"verification_code": "345678",
          "verification_url": "https://auth.example.com/self-service/verification?code=345678"},
         "BindNewIdentifier", "345678"),
        ("verification_code_valid", "sms", {"verification_code": "345678"},
         "BindNewIdentifier", "345678"),
        ("recovery_code_valid", "email", {"recovery_code": "456789"}, "ForgotPassword", "456789"),
        # Kratos tags the SMS recovery code verification_code (courier/template/sms/recovery_code.go)
        ("recovery_code_valid", "sms", {"verification_code": "456789"}, "ForgotPassword", "456789"),
    ],
)  # fmt: skip
def test_translate_code_types(
    template_type: str, message_type: Any, data: dict[str, Any], usage: str, code: str
) -> None:
    """Each ``*_valid`` code type: its usage type and its code from template_data."""
    got = kratos.translate(message_type, full(template_type, message_type, **data))
    assert (got.type, got.payload["code"], got.kind) == (usage, code, template_type)
    assert got.to == ("ada@example.com" if message_type == "email" else "+4915112345678")


@pytest.mark.parametrize(
    ("template_type", "key", "usage"),
    [("recovery_valid", "recovery_url", "ForgotPassword"),
     ("verification_valid", "verification_url", "BindNewIdentifier")],
)  # fmt: skip
def test_translate_link_types(template_type: str, key: str, usage: str) -> None:
    """The link strategy's messages: no code; Kratos's text (which holds the link) sent as is,
    or without a body the usage type's template with the link."""
    link = "https://auth.example.com/self-service/recovery?flow=1&token=abc"
    body = full(template_type, **{key: link})
    body.update(subject="Recover access to your account", body=f"Open this link:\n{link}\n")
    got = kratos.translate("email", body)
    assert (got.type, got.payload.get("code"), got.payload["link"]) == ("Message", None, link)
    assert (got.payload["subject"], got.payload["message"]) == (
        "Recover access to your account", f"Open this link:\n{link}")  # fmt: skip
    del body["body"]
    assert kratos.translate("email", body).type == usage


@pytest.mark.parametrize(
    ("template_type", "usage"),
    [("recovery_invalid", "UnknownAccount"), ("recovery_code_invalid", "UnknownAccount"),
     ("verification_invalid", "UnknownAccount"), ("verification_code_invalid", "UnknownAccount"),
     ("login_code_invalid", "UnknownAccount"),
     ("verifiable_address_changed", "EmailChanged"),
     ("authenticator_key_added", "MfaFactorEnrolled"), ("stub", "Message")],
)  # fmt: skip
def test_translate_notice_types(template_type: str, usage: str) -> None:
    """The ``*_invalid`` and notice types map to notice templates, without a code."""
    got = kratos.translate("email", full(template_type))
    assert (got.type, "code" in got.payload) == (usage, False)


def test_translate_address_changed_by_channel() -> None:
    """verifiable_address_changed is the PhoneChanged notice by SMS."""
    assert kratos.translate("sms", full("verifiable_address_changed", "sms")).type == "PhoneChanged"


def test_translate_unknown_type_refused() -> None:
    """A template_type we do not know: 422 naming it."""
    with pytest.raises(RequestError) as caught:
        kratos.translate("email", full("registration_duplicate"))
    assert (caught.value.status, caught.value.code) == (422, "unknown_template_type")
    assert "registration_duplicate" in caught.value.message


def test_translate_default_body_sms_login_code_from_origin_line() -> None:
    """Kratos's default body drops login_code: read from the text's ``@domain #code`` line."""
    text = "Your login code is: 123456\n\nIt expires in 15 minutes.\n@auth.example.com #123456\n"
    got = kratos.translate("sms", default_body("login_code_valid", text))
    assert (got.to, got.type, got.payload["code"]) == ("+4915112345678", "SignIn", "123456")


def test_translate_default_body_email_registration_code_from_text() -> None:
    """... and from an email's plain text, where the code stands on its own line."""
    text = "Hi, please complete your account registration by entering the following code:\n\n" \
        "987654\n\nIt expires in 15 minutes.\n"  # fmt: skip
    body = default_body("registration_code_valid", text)
    body.update(recipient="ada@example.com", to="ada@example.com")
    assert kratos.translate("email", body).payload["code"] == "987654"


def test_translate_default_body_recovery_code_top_level() -> None:
    """The default body carries recovery_code at the top level."""
    body = default_body("recovery_code_valid", "", recovery_code="456789")
    assert kratos.translate("sms", body).payload["code"] == "456789"


def test_translate_code_type_without_code_refused() -> None:
    """A code type whose code is nowhere: 422 missing_code, not an empty message."""
    body = default_body("login_code_valid", "Welcome!")
    with pytest.raises(RequestError) as caught:
        kratos.translate("sms", body)
    assert (caught.value.status, caught.value.code) == (422, "missing_code")


def test_translate_language_from_traits() -> None:
    """The identity's traits.language feeds the locale chain; the name greets."""
    got = kratos.translate("email", full("login_code_valid", login_code="123456"))
    assert (got.payload["locale"], got.payload["user"]["name"]) == ("fr", "Ada Lovelace")


def test_translate_language_from_transient_payload_first() -> None:
    """A flow's transient_payload.locale (the UI's language now) wins over the traits."""
    body = full("login_code_valid", login_code="123456", transient_payload={"locale": "ja"})
    assert kratos.translate("email", body).payload["locale"] == "ja"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda b: b.pop("template_type"), "missing_field"),
        (lambda b: (b.pop("recipient"), b["template_data"].pop("to")), "missing_field"),
        (lambda b: b.update(template_data="x"), "invalid_request"),
    ],
)
def test_translate_wrong_shape_refused(change: Any, code: str) -> None:
    """A body that is not Kratos's shape: 400 with the field named."""
    body = full("login_code_valid", login_code="123456")
    change(body)
    with pytest.raises(RequestError) as caught:
        kratos.translate("email", body)
    assert (caught.value.status, caught.value.code) == (400, code)


def test_code_in_body_forms() -> None:
    """The origin-bound line wins over other numbers in the text."""
    assert kratos.code_in_body("Call 5551234 now\n@x.example #000042\n") == "000042"
    assert kratos.code_in_body("#654321\n") == "654321"
    assert kratos.code_in_body("Your code is 112233.") == "112233"
    assert kratos.code_in_body("") is None


# -- end to end, in process: authenticated as Kratos sends it, into the capture inbox

PASSWORD = "kratos-courier-password-123"
BASIC = {"Authorization": _basic("kratos", PASSWORD)}
CONFIG: dict[str, Any] = {"intakes": {"kratos": {"basic_auth": {"user": "kratos",
                                                               "password": PASSWORD}}}}  # fmt: skip
KEY_VALUE = "kratos-api-key-0123456789"


async def messages(client: Any) -> list[dict[str, Any]]:
    listing: dict[str, Any] = await (await client.get("/v1/messages")).json()
    return list(listing["messages"])


async def latest(client: Any, to: str) -> dict[str, Any]:
    response = await client.get("/v1/messages/latest", params={"to": to})
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def test_kratos_login_code_email_in_the_identitys_language(service: ClientFactory) -> None:
    """The whole context (``function(ctx) ctx``): the SignIn email in the identity's language
    (traits.language fr), greeting it, with Kratos's 15 minutes; source kratos."""
    client = await service(CONFIG)
    body = full("login_code_valid", login_code="123456")
    response = await client.post("/v1/hooks/kratos/email", json=body, headers=BASIC)
    answer = await response.json()
    assert (response.status, answer["status"]) == (200, "captured"), answer
    message = await latest(client, "ada@example.com")
    assert (message["type"], message["code"], message["locale"], message["source"]) == (
        "SignIn", "123456", "fr", "kratos")  # fmt: skip
    assert "Bonjour Ada Lovelace" in message["text"] and "15 minutes" in message["text"]


async def test_kratos_default_body_sms_login_code(service: ClientFactory) -> None:
    """Kratos's default body (no login_code field): the code from the text's last line."""
    client = await service(CONFIG)
    text = "Your login code is: 654321\n\nIt expires in 15 minutes.\n@auth.example.com #654321\n"
    body = default_body("login_code_valid", text)
    response = await client.post("/v1/hooks/kratos/sms", json=body, headers=BASIC)
    assert response.status == 200, await response.text()
    message = await latest(client, "+4915112345678")
    assert (message["type"], message["code"]) == ("SignIn", "654321")
    assert "654321" in message["text"]


async def test_kratos_form_encoded_default_body(service: ClientFactory) -> None:
    """Content-Type application/x-www-form-urlencoded (Kratos form-encodes the jsonnet output)."""
    client = await service(CONFIG)
    form = {"recipient": "+4915112345678", "template_type": "recovery_code_valid",
            "to": "+4915112345678", "recovery_code": "246810", "subject": "",
            "body": "Your recovery code is: 246810\n"}  # fmt: skip
    response = await client.post("/v1/hooks/kratos/sms", data=form, headers=BASIC)
    assert response.status == 200, await response.text()
    message = await latest(client, "+4915112345678")
    assert (message["type"], message["code"]) == ("ForgotPassword", "246810")


async def test_kratos_api_key_in_cookie(service: ClientFactory) -> None:
    """``api_key`` with ``in: cookie``: the key in a cookie is accepted, in a header it is not."""
    config = {"intakes": {"kratos": {"api_key": {"name": "otp_key", "value": KEY_VALUE,
                                                 "in": "cookie"}}}}  # fmt: skip
    client = await service(config)
    body = full("verification_code_valid", "sms", verification_code="135790")
    as_header = await client.post("/v1/hooks/kratos/sms", json=body, headers={"otp_key": KEY_VALUE})
    assert as_header.status == 401
    as_cookie = await client.post(
        "/v1/hooks/kratos/sms", json=body, headers={"Cookie": f"otp_key={KEY_VALUE}"}
    )
    assert as_cookie.status == 200, await as_cookie.text()
    assert (await latest(client, "+4915112345678"))["code"] == "135790"


async def test_kratos_wrong_credentials_are_401_and_store_nothing(service: ClientFactory) -> None:
    """No or wrong credentials: 401 unauthorized, nothing captured, the password not echoed."""
    client = await service(CONFIG)
    body = full("login_code_valid", login_code="123456")
    for headers in ({}, {"Authorization": _basic("kratos", "wrong-password-0000000")},
                    {"Authorization": f"Bearer {PASSWORD}"}):  # fmt: skip
        response = await client.post("/v1/hooks/kratos/email", json=body, headers=headers)
        answer = await response.json()
        assert (response.status, answer["error"]["code"]) == (401, "unauthorized")
        assert PASSWORD not in json.dumps(answer)
    assert await messages(client) == []


async def test_kratos_resend_is_answered_as_the_first_and_sent_once(
    service: ClientFactory,
) -> None:
    """The courier's re-send of a message (same body): the first message's id, once."""
    client = await service(CONFIG)
    body = full("login_code_valid", login_code="123456")
    first = await (await client.post("/v1/hooks/kratos/email", json=body, headers=BASIC)).json()
    again = await client.post("/v1/hooks/kratos/email", json=body, headers=BASIC)
    answer = await again.json()
    assert (again.status, answer["id"], answer.get("duplicate")) == (200, first["id"], True)
    assert len(await messages(client)) == 1


async def test_kratos_refusals_have_codes(service: ClientFactory) -> None:
    """Unknown template type, a code type without a code, an SMS posted to the email route:
    each refused with its code, nothing captured."""
    client = await service(CONFIG)
    cases = [
        ("email", full("registration_duplicate"), 422, "unknown_template_type"),
        ("sms", default_body("login_code_valid", "Welcome"), 422, "missing_code"),
        ("email", full("login_code_valid", "sms", login_code="1"), 400, "wrong_channel"),
    ]
    for channel, body, status, code in cases:
        response = await client.post(f"/v1/hooks/kratos/{channel}", json=body, headers=BASIC)
        answer = await response.json()
        assert (response.status, answer["error"]["code"]) == (status, code), body
    assert await messages(client) == []


async def test_kratos_invalid_notice_is_the_unknown_account_email(service: ClientFactory) -> None:
    """recovery_code_invalid: the UnknownAccount notice, no code, in the identity-less default
    language."""
    client = await service(CONFIG)
    body = full("recovery_code_invalid")
    body["template_data"].pop("identity")
    response = await client.post("/v1/hooks/kratos/email", json=body, headers=BASIC)
    assert response.status == 200, await response.text()
    message = await latest(client, "ada@example.com")
    assert (message["type"], message["code"]) == ("UnknownAccount", None)
    assert "no account uses it" in message["text"]


async def test_kratos_routes_404_until_configured(service: ClientFactory) -> None:
    """Without intakes.kratos both routes answer 404."""
    client = await service({})
    for channel in ("email", "sms"):
        response = await client.post(f"/v1/hooks/kratos/{channel}", json={}, headers=BASIC)
        assert response.status == 404


# -- end to end through the real service process: SMTP sink and the Vonage fake


def post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One blocking JSON POST, as Kratos's courier makes it."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_kratos_lands_in_the_inbox_of_a_real_process(
    tmp_path: Path, services: list[Service]
) -> None:
    """``otp-service serve`` in capture mode (its defaults) with intakes.kratos: a login code
    email (whole context) and a recovery code SMS (``verification_code``) are read back with
    ``latest?to=``, with their code and source."""
    service = Service(tmp_path, CONFIG)
    services.append(service)
    sends = (
        ("email", full("login_code_valid", login_code="123456")),
        ("sms", full("recovery_code_valid", "sms", verification_code="456789")),
    )
    for channel, body in sends:
        status, answer = post(f"{service.base}/v1/hooks/kratos/{channel}", body, BASIC)
        assert status == 200, answer
    for to, code in (("ada@example.com", "123456"), ("%2B4915112345678", "456789")):
        status, _, data = http("GET", f"{service.base}/v1/messages/latest?to={to}")
        message = json.loads(data)
        assert (status, message["code"], message["source"]) == (200, code, "kratos")


@pytest.mark.slow
def test_kratos_process_delivers_once_to_smtp_and_vonage(
    tmp_path: Path, services: list[Service], smtp_server: RecordingSMTPServer
) -> None:
    """``otp-service serve`` with intakes.kratos (basic auth): a login code email (whole
    context) reaches the SMTP server, a recovery code SMS (default body, code tagged
    verification_code in template_data) reaches the Vonage fake; the courier's re-sends are
    answered as the first, and wrong credentials deliver nothing."""
    smtp_server.start()
    with FakeVonage() as vonage:
        config = {
            "email": {"provider": "smtp", "smtp": {
                "host": "127.0.0.1", "port": smtp_server.port,
                "fromEmail": "Acme <no-reply@acme.example>", "templates": TEMPLATES}},
            "sms": {"provider": "vonage", "vonage": logto_vonage_json(),
                    "endpoints": {"vonage": vonage.endpoint(timeout_seconds=10)}},
            "limits": {"enabled": False},
            "intakes": CONFIG["intakes"],
        }  # fmt: skip
        service = Service(tmp_path, config)
        services.append(service)
        email = full("login_code_valid", login_code="123456")
        sms = full("recovery_code_valid", "sms", verification_code="456789")
        sends = (("email", email), ("sms", sms))
        status, answer = post(f"{service.base}/v1/hooks/kratos/email", email, {})
        assert (status, answer["error"]["code"]) == (401, "unauthorized")
        first = {}
        for channel, body in sends:
            status, answer = post(f"{service.base}/v1/hooks/kratos/{channel}", body, BASIC)
            assert status in (200, 202), answer
            first[channel] = answer["id"]
        deadline = time.monotonic() + 15
        while not (len(vonage.sms) == 1 and len(smtp_server.messages) == 1):
            assert time.monotonic() < deadline, "timed out waiting for delivery"
            time.sleep(0.05)
        for channel, body in sends:
            status, answer = post(f"{service.base}/v1/hooks/kratos/{channel}", body, BASIC)
            assert (status < 300, answer["id"], answer["duplicate"]) == (
                True, first[channel], True)  # fmt: skip
        assert len(vonage.sms) == 1 and "456789" in vonage.sms[0]["text"]
        assert len(smtp_server.messages) == 1
        mail = smtp_server.messages[0]
        assert mail.rcpt_tos == ["ada@example.com"]
        assert "123456" in mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_replay_key_is_the_code_not_the_wording() -> None:
    """A re-send with other headers around the same code is the same message; another code is
    not; a notice is named by its body."""
    first = full("login_code_valid", login_code="123456")
    resent = full("login_code_valid", login_code="123456")
    resent["request_headers"] = {"User-Agent": ["other"]}
    other = full("login_code_valid", login_code="654321")

    def key(body: dict[str, Any]) -> str | bytes:
        return kratos.translate("email", body).replay_key(json.dumps(body).encode())

    assert key(first) == key(resent) != key(other)
    notice = full("recovery_invalid")
    assert key(notice) == key(json.loads(json.dumps(notice))) != key(full("verification_invalid"))


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({}, "intakes.kratos: sets no credentials"),
        ({"basic_auth": {"user": "kratos", "password": PASSWORD},
          "api_key": {"name": "X-Api-Key", "value": KEY_VALUE}}, "sets both basic_auth and api_key"),
        ({"basic_auth": {"user": "kratos", "password": "short"}},
         "intakes.kratos.basic_auth.password: must be at least 16 characters"),
        ({"basic_auth": {"password": PASSWORD}}, "intakes.kratos.basic_auth.user: is required"),
        ({"api_key": {"name": "X-Api-Key", "value": KEY_VALUE, "in": "query"}},
         "intakes.kratos.api_key.in: must be one of header, cookie"),
        ({"api_key": {"value": KEY_VALUE}}, "intakes.kratos.api_key.name: is required"),
    ],
)  # fmt: skip
def test_config_kratos_section_checked(section: dict[str, Any], problem: str) -> None:
    """check-config: exactly one credential, long secrets, header or cookie; never echoed."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"intakes": {"kratos": section}})
    assert problem in str(caught.value)
    assert PASSWORD not in str(caught.value) and KEY_VALUE not in str(caught.value)


def test_config_kratos_secret_never_in_repr() -> None:
    """The password is read and kept out of the config's repr."""
    config = parse_config(CONFIG)
    assert config.intakes.kratos is not None and config.intakes.kratos.basic_auth is not None
    assert config.intakes.kratos.basic_auth.password == PASSWORD
    assert PASSWORD not in repr(config)


async def test_kratos_requests_are_counted_by_intake(service: ClientFactory) -> None:
    """``otp_intake_requests_total`` labels Kratos's requests with intake kratos."""
    client = await service(CONFIG)
    body = full("login_code_valid", login_code="123456")
    await client.post("/v1/hooks/kratos/email", json=body, headers=BASIC)
    await client.post("/v1/hooks/kratos/email", json=body, headers={})
    text = await (await client.get("/metrics")).text()
    assert 'channel="email",intake="kratos",status="200",type="SignIn"} 1.0' in text
    assert 'channel="email",intake="kratos",status="401",type="none"} 1.0' in text
    # a *_invalid notice is counted under its own usage type, not "other"
    await client.post("/v1/hooks/kratos/email", json=full("recovery_invalid"), headers=BASIC)
    text = await (await client.get("/metrics")).text()
    assert 'channel="email",intake="kratos",status="200",type="UnknownAccount"} 1.0' in text


def test_every_hook_usage_type_has_its_own_metric_label() -> None:
    """The hooks' usage types (those that skip the Generic steps) are labelled by name, never
    folded into ``other``."""
    assert {usage_label(t) for t in NO_GENERIC} == set(NO_GENERIC)
