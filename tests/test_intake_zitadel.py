"""The ZITADEL intake: its signature, its payloads (field for field as ZITADEL's
internal/notification/types/user_phone.go and user_email.go build them), and end to end."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from otp_service.config import TemplatesConfig, parse_config
from otp_service.errors import ConfigError, RequestError
from otp_service.intake import zitadel
from otp_service.message.templates import TemplateLibrary

from .support.command import Service, http
from .support.fakes.vonage import FakeVonage, logto_vonage_json
from .support.processes import TEMPLATES
from .support.service import ClientFactory
from .support.smtp_server import RecordingSMTPServer

KEY = "my-zitadel-signing-key"
T = 1_700_000_000
# The self-computed vector of the research notes (HMAC-SHA256 over "<t>.<body>", key as UTF-8).
VECTOR_BODY = (
    b'{"contextInfo":{"eventType":"user.human.otp.sms.challenged","provider":{"id":"1",'
    b'"description":"otp-service"},"recipientPhoneNumber":"+41791234567"},"templateData":'
    b'{"text":"123456 is your one-time password"},"args":{"code":"123456","oTP":"123456"}}'
)
VECTOR_SIG = "03fdc4d5c8c2f940bd5aef855e11762eb204e5ce9a4cb0d521071c3113a3caee"


def sms_body(**context: Any) -> dict[str, Any]:
    """An HTTP SMS provider request as ZITADEL's generateSms builds it (session OTP challenge)."""
    return {
        "contextInfo": {
            "eventType": "session.otp.sms.challenged",
            "provider": {"id": "285181292935381355", "description": "otp-service"},
            "recipientPhoneNumber": "+41791234567",
            **context,
        },
        "templateData": {
            "title": "Verify One-Time Password",
            "preHeader": "Verify One-Time Password",
            "subject": "Verify One-Time Password",
            "greeting": "Hello Ada Lovelace,",
            "text": "Your one-time password is 482913. Use it within the next 5 minutes.",
            "primaryColor": "#5469d4",
            "backgroundColor": "#fafafa",
            "fontColor": "#000000",
            "fontFamily": "-apple-system, BlinkMacSystemFont, Segoe UI, Lato, Arial, sans-serif",
            "footerText": "",
        },
        "args": {
            "code": "482913",
            "oTP": "482913",
            "userID": "285181292935381355",
            "orgID": "285181292935381000",
            "userName": "ada",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "nickName": "",
            "displayName": "Ada Lovelace",
            "lastEmail": "ada@example.com",
            "verifiedEmail": "ada@example.com",
            "lastPhone": "+41791234567",
            "verifiedPhone": "+41791234567",
            "preferredLoginName": "ada@example.zitadel.cloud",
            "loginName": "ada@example.zitadel.cloud",
            "loginNames": ["ada@example.zitadel.cloud"],
            "changeDate": "2026-12-07T04:00:00Z",
            "creationDate": "2026-01-01T00:00:00Z",
            "domain": "example.zitadel.cloud",
            "expiry": 300000000000,
            "origin": "https://example.zitadel.cloud",
        },
    }


def email_body(event_type: str = "user.human.email.code.added") -> dict[str, Any]:
    """An HTTP email provider request as ZITADEL's generateEmail builds it (email verification)."""
    body = sms_body()
    context = body["contextInfo"]
    del context["recipientPhoneNumber"]
    context.update(eventType=event_type, recipientEmailAddress="ada@example.com")
    body["templateData"].update(
        title="Verify user",
        subject="Verify user",
        text="Please verify your email address. Code: 482913",
        url="https://example.zitadel.cloud/ui/login/mail/verification?userID=1&code=482913",
        buttonText="Verify",
        logoUrl="https://example.zitadel.cloud/assets/v1/logo.png",
    )
    del body["args"]["oTP"]
    return body


# -- the signature


def test_signature_research_vector_verifies() -> None:
    """The research notes' vector verifies, and our signer computes the same hex."""
    assert zitadel.sign(VECTOR_BODY, KEY, T) == VECTOR_SIG
    zitadel.verify_signature(f"t={T},v1={VECTOR_SIG}", VECTOR_BODY, [KEY], now=T)


@pytest.mark.parametrize(
    "header",
    [
        f"t={T},v1={'0' * 64},v1={VECTOR_SIG}",  # several v1: any one may match
        f"v1={VECTOR_SIG},t={T}",  # order does not matter
        f"t={T},v0=abc,v1=nothex,v1={VECTOR_SIG}",  # unknown keys ignored, non-hex v1 skipped
        f" t={T}, v1={VECTOR_SIG}",  # spaces after the commas
    ],
)
def test_signature_accepted_forms_verify(header: str) -> None:
    """Every header ZITADEL's own parser accepts verifies."""
    zitadel.verify_signature(header, VECTOR_BODY, [KEY], now=T)


def test_signature_any_configured_key_verifies() -> None:
    """Several signing keys (a rotation): the one that signed is found."""
    zitadel.verify_signature(f"t={T},v1={VECTOR_SIG}", VECTOR_BODY, ["old-key", KEY], now=T)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        (f"t={T},v1={'0' * 64}", "invalid_signature"),
        (f"t={T}", "invalid_signature"),
        (f"v1={VECTOR_SIG}", "invalid_signature"),
        (f"t={T},v1={VECTOR_SIG}=", "invalid_signature"),
        (f"t=soon,v1={VECTOR_SIG}", "invalid_signature"),
        (f"t={T}v1={VECTOR_SIG}", "invalid_signature"),
        (f"t={T - 301},v1={zitadel.sign(VECTOR_BODY, KEY, T - 301)}", "stale_signature"),
        (f"t={T + 301},v1={zitadel.sign(VECTOR_BODY, KEY, T + 301)}", "stale_signature"),
    ],
)
def test_signature_bad_or_stale_refused(header: str | None, code: str) -> None:
    """A missing, malformed, wrong or stale signature is 401 with a stable code."""
    with pytest.raises(RequestError) as caught:
        zitadel.verify_signature(header, VECTOR_BODY, [KEY], now=T)
    assert (caught.value.status, caught.value.code) == (401, code)


def test_signature_other_body_refused() -> None:
    """A signature over other bytes (one character changed) does not verify."""
    with pytest.raises(RequestError, match="does not match"):
        zitadel.verify_signature(
            f"t={T},v1={VECTOR_SIG}", VECTOR_BODY.replace(b"123456", b"123457"), [KEY], now=T
        )
    with pytest.raises(RequestError, match="does not match"):
        zitadel.verify_signature(f"t={T},v1={VECTOR_SIG}", VECTOR_BODY + b" ", [KEY], now=T)


def test_signature_within_five_minutes_verifies() -> None:
    """ZITADEL's tolerance is 300 s; our clock may be that far either side."""
    for skew in (-300, 300):
        zitadel.verify_signature(f"t={T},v1={VECTOR_SIG}", VECTOR_BODY, [KEY], now=T + skew)


# -- the payload


def test_translate_sms_relays_zitadels_text() -> None:
    """SMS: the phone number from contextInfo, the code from args, ZITADEL's text as is."""
    got = zitadel.translate("sms", sms_body())
    assert (got.to, got.type, got.kind) == ("+41791234567", "Message",
                                                  "session.otp.sms.challenged")  # fmt: skip
    text = "Your one-time password is 482913. Use it within the next 5 minutes."
    assert got.payload["message"] == text
    assert (got.ttl, got.payload["ttl_minutes"]) == (300, 5)  # args.expiry: nanoseconds
    assert got.payload["code"] == "482913"
    assert got.payload["user"]["name"] == "Ada Lovelace"
    assert got.payload["zitadel"]["greeting"] == "Hello Ada Lovelace,"


def test_translate_sms_relay_off_uses_templates() -> None:
    """With the relay off the SMS is ours: no text, the usage type's template renders."""
    got = zitadel.translate("sms", sms_body(), relay_sms_text=False)
    assert (got.type, "message" in got.payload) == ("MfaVerification", False)


def test_translate_email_offers_template_data() -> None:
    """Email: the address from contextInfo, templateData's pieces, its url as the link, its logo
    as the email's."""
    got = zitadel.translate("email", email_body())
    assert (got.to, got.type, "message" in got.payload) == ("ada@example.com",
                                                             "BindNewIdentifier", False)  # fmt: skip
    assert got.payload["code"] == "482913"
    assert got.payload["link"].startswith("https://example.zitadel.cloud/ui/login/mail/")
    assert got.payload["zitadel"]["buttonText"] == "Verify"
    assert got.payload["zitadel"]["primaryColor"] == "#5469d4"
    assert got.payload["application"]["branding"]["logoUrl"].endswith("/logo.png")


def test_translate_code_from_otp_arg() -> None:
    """A body with only ``oTP`` (how ZITADEL lower-cases its OTP arg) still has its code."""
    body = sms_body()
    del body["args"]["code"]
    assert zitadel.translate("sms", body).payload["code"] == "482913"


def test_translate_pascal_case_template_data() -> None:
    """Releases whose templateData had no JSON tags sent Title, Text ...: read the same."""
    body = sms_body()
    body["templateData"] = {"Text": "Code 482913", "ButtonText": "Go"}
    got = zitadel.translate("sms", body)
    assert (got.payload["message"], got.payload["zitadel"]["buttonText"]) == ("Code 482913", "Go")


@pytest.mark.parametrize(
    ("event_type", "usage"),
    [
        ("user.human.initialization.code.added", "Register"),
        ("user.human.invite.code.added", "Invite"),
        ("user.human.phone.code.added", "BindNewIdentifier"),
        ("user.human.password.code.added", "ForgotPassword"),
        ("user.human.mfa.otp.email.code.added", "MfaVerification"),
        ("session.otp.email.challenged", "MfaVerification"),
        ("user.human.future.thing.added", "Generic"),  # unknown, with a code
    ],
)
def test_translate_event_type_maps_usage(event_type: str, usage: str) -> None:
    """Each event type ZITADEL's notifier sends maps to a usage type; an unknown one with a
    code is Generic."""
    assert zitadel.translate("email", email_body(event_type)).type == usage


def test_translate_unknown_event_without_code_refused() -> None:
    """An event type we do not know and no code: 422 naming the type."""
    body = email_body("user.human.future.thing.added")
    del body["args"]["code"]
    with pytest.raises(RequestError) as caught:
        zitadel.translate("email", body)
    assert (caught.value.status, caught.value.code) == (422, "unknown_event_type")
    assert "user.human.future.thing.added" in caught.value.message


def test_translate_notice_sends_zitadels_text() -> None:
    """Password changed: a notice without a code, sent as ZITADEL wrote it (its language), with
    its subject; a link not in the text is added under it."""
    body = email_body("user.human.password.changed")
    del body["args"]["code"]
    body["templateData"].update(subject="Password of user has changed",
                                text="The password of your user has changed.")  # fmt: skip
    got = zitadel.translate("email", body)
    assert (got.type, "code" in got.payload) == ("Message", False)
    assert got.payload["subject"] == "Password of user has changed"
    assert got.payload["message"].startswith("The password of your user has changed.\n\nhttps://")


def test_translate_notice_without_text_refused() -> None:
    """A notice we relay needs ZITADEL's text: 400 naming templateData.text."""
    body = email_body("user.domain.claimed")
    body["templateData"].pop("text")
    with pytest.raises(RequestError, match=r"templateData\.text"):
        zitadel.translate("email", body)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda b: b["contextInfo"].pop("recipientPhoneNumber"), "missing_field"),
        (lambda b: b["contextInfo"].pop("eventType"), "missing_field"),
        (lambda b: b.update(contextInfo=[]), "invalid_request"),
        (lambda b: b["args"].update(code=["1"]), "invalid_request"),
        (lambda b: b["contextInfo"].update(recipientPhoneNumber=41), "invalid_request"),
        (lambda b: b["args"].update(code="1\r\nBcc: x"), "invalid_request"),
        (lambda b: b["args"].update(code="9" * 65), "invalid_request"),
    ],
)
def test_translate_wrong_shape_refused(change: Any, code: str) -> None:
    """A body that is not ZITADEL's shape: 400 with the field named."""
    body = sms_body()
    change(body)
    with pytest.raises(RequestError) as caught:
        zitadel.translate("sms", body)
    assert (caught.value.status, caught.value.code) == (400, code)


def test_translate_sms_route_needs_phone_number() -> None:
    """An email body sent to the SMS route has no recipientPhoneNumber: 400."""
    with pytest.raises(RequestError, match="recipientPhoneNumber"):
        zitadel.translate("sms", email_body())


def test_translate_language_hint_when_named() -> None:
    """A preferredLanguage arg (ZITADEL's arg naming, were it sent) feeds the locale chain."""
    body = sms_body()
    body["args"]["preferredLanguage"] = "fr"
    assert zitadel.translate("sms", body).payload["locale"] == "fr"
    body["args"]["preferredLanguage"] = "<script>"
    assert "locale" not in zitadel.translate("sms", body).payload


def test_replay_key_is_the_code_not_the_wording() -> None:
    """A retry re-rendered around the same code is the same request; another code, recipient
    or event is not; a message without a code is named by its body."""
    first, retry, other = sms_body(), sms_body(), sms_body()
    retry["templateData"]["text"] += " "
    retry["args"]["changeDate"] = "2026-12-07T04:05:00Z"
    other["args"].update(code="111111", oTP="111111")

    def key(body: dict[str, Any]) -> str | bytes:
        channel: Any = "sms" if "recipientPhoneNumber" in body["contextInfo"] else "email"
        return zitadel.translate(channel, body).replay_key(json.dumps(body).encode())

    assert key(first) == key(retry) != key(other)
    notice = email_body("user.human.password.changed")
    del notice["args"]["code"]
    changed = json.loads(json.dumps(notice))
    changed["templateData"]["text"] = "other"
    assert key(notice) != key(changed) and key(notice) == key(json.loads(json.dumps(notice)))


# -- end to end, in process: signed as ZITADEL signs, into the capture inbox

CONFIG: dict[str, Any] = {"intakes": {"zitadel": {"signing_keys": [KEY]}}}


def signed(body: dict[str, Any], key: str = KEY, at: float | None = None) -> dict[str, Any]:
    """``data`` and headers for a POST as ZITADEL's webhook channel makes it."""
    raw = json.dumps(body, separators=(",", ":")).encode()  # Go's encoding/json: compact
    t = int(time.time() if at is None else at)
    header = f"t={t},v1={zitadel.sign(raw, key, t)}"
    return {"data": raw, "headers": {"Content-Type": "application/json",
                                     zitadel.SIGNATURE_HEADER: header}}  # fmt: skip


async def messages(client: Any) -> list[dict[str, Any]]:
    listing: dict[str, Any] = await (await client.get("/v1/messages")).json()
    return list(listing["messages"])


async def latest(client: Any, to: str) -> dict[str, Any]:
    response = await client.get("/v1/messages/latest", params={"to": to})
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def test_zitadel_sms_is_captured_with_zitadels_text(service: ClientFactory) -> None:
    """An HTTP SMS provider request: 200, captured with ZITADEL's text, its code, source
    zitadel; ``latest?to=`` finds it."""
    client = await service(CONFIG)
    response = await client.post("/v1/hooks/zitadel/sms", **signed(sms_body()))
    answer = await response.json()
    assert (response.status, answer["status"]) == (200, "captured"), answer
    message = await latest(client, "+41791234567")
    assert message["text"] == "Your one-time password is 482913. Use it within the next 5 minutes."
    assert (message["code"], message["source"]) == ("482913", "zitadel")


async def test_zitadel_sms_with_templates_renders_ours(service: ClientFactory) -> None:
    """``sms_text: templates``: the MfaVerification template, in the default language."""
    config = {"intakes": {"zitadel": {"signing_keys": [KEY], "sms_text": "templates"}}}
    client = await service(config)
    response = await client.post("/v1/hooks/zitadel/sms", **signed(sms_body()))
    assert response.status == 200, await response.text()
    message = await latest(client, "+41791234567")
    assert message["type"] == "MfaVerification"
    assert "482913" in message["text"] and "two-step" in message["text"]
    assert "5 minutes" in message["text"]  # ZITADEL's expiry, not our default lifetime


async def test_zitadel_email_is_rendered_with_our_templates(service: ClientFactory) -> None:
    """An HTTP email provider request: our BindNewIdentifier email with the code, greeting
    ZITADEL's user, ZITADEL's logo at the top."""
    client = await service(CONFIG)
    response = await client.post("/v1/hooks/zitadel/email", **signed(email_body()))
    assert response.status == 200, await response.text()
    message = await latest(client, "ada@example.com")
    assert (message["type"], message["code"], message["source"]) == (
        "BindNewIdentifier", "482913", "zitadel")  # fmt: skip
    assert "Hello Ada Lovelace" in message["text"]
    assert 'src="https://example.zitadel.cloud/assets/v1/logo.png"' in message["html"]


async def test_zitadel_bad_or_stale_signature_is_401_and_stores_nothing(
    service: ClientFactory,
) -> None:
    """No header, a wrong key, a stale or a future timestamp, a body changed after signing:
    401 with a stable code, nothing captured."""
    client = await service(CONFIG)
    body = sms_body()
    unsigned = {"data": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}
    tampered = signed(body)
    tampered["data"] = tampered["data"].replace(b"482913", b"000000")
    cases = [
        (unsigned, "missing_signature"),
        (signed(body, key="another-signing-key-123"), "invalid_signature"),
        (signed(body, at=time.time() - 600), "stale_signature"),
        (signed(body, at=time.time() + 600), "stale_signature"),
        (tampered, "invalid_signature"),
    ]
    for request, code in cases:
        response = await client.post("/v1/hooks/zitadel/sms", **request)
        answer = await response.json()
        assert (response.status, answer["error"]["code"]) == (401, code)
        assert KEY not in json.dumps(answer)
    assert await messages(client) == []


async def test_zitadel_retry_is_answered_as_the_first_and_sent_once(
    service: ClientFactory,
) -> None:
    """ZITADEL's retry (same body, signed again later): the first message's id, once."""
    client = await service(CONFIG)
    first = await (await client.post("/v1/hooks/zitadel/sms", **signed(sms_body()))).json()
    again = await client.post("/v1/hooks/zitadel/sms", **signed(sms_body(), at=time.time() + 2))
    answer = await again.json()
    assert (again.status, answer["id"], answer.get("duplicate")) == (200, first["id"], True)
    assert len(await messages(client)) == 1


async def test_zitadel_unknown_event_without_code_is_422(service: ClientFactory) -> None:
    """An event type we do not know, without a code: 422 naming it, nothing captured."""
    client = await service(CONFIG)
    body = email_body("user.human.future.thing.added")
    del body["args"]["code"]
    response = await client.post("/v1/hooks/zitadel/email", **signed(body))
    answer = await response.json()
    assert (response.status, answer["error"]["code"]) == (422, "unknown_event_type")
    assert "user.human.future.thing.added" in answer["error"]["message"]
    assert await messages(client) == []


async def test_zitadel_password_changed_notice_is_zitadels_text(service: ClientFactory) -> None:
    """A notice: ZITADEL's subject and text in our layout (in the user's language, as ZITADEL
    wrote it)."""
    client = await service(CONFIG)
    body = email_body("user.human.password.changed")
    del body["args"]["code"]
    body["templateData"].update(subject="Passwort geändert", text="Dein Passwort wurde geändert.")
    del body["templateData"]["url"]
    response = await client.post("/v1/hooks/zitadel/email", **signed(body))
    assert response.status == 200, await response.text()
    message = await latest(client, "ada@example.com")
    assert (message["subject"], message["text"].strip()) == (
        "Passwort geändert", "Dein Passwort wurde geändert.")  # fmt: skip


async def test_zitadel_signed_but_broken_bodies_are_400(service: ClientFactory) -> None:
    """A correctly signed body that is not JSON, or not ZITADEL's shape: 400 with its code
    (the signature is checked on the raw bytes first), nothing captured."""
    client = await service(CONFIG)
    cases = [(b"{", "invalid_json"), (b"[1]", "invalid_request"),
             (json.dumps({"contextInfo": {"eventType": "x"}}).encode(), "missing_field")]  # fmt: skip
    for raw, code in cases:
        t = int(time.time())
        headers = {"Content-Type": "application/json",
                   zitadel.SIGNATURE_HEADER: f"t={t},v1={zitadel.sign(raw, KEY, t)}"}  # fmt: skip
        response = await client.post("/v1/hooks/zitadel/sms", data=raw, headers=headers)
        answer = await response.json()
        assert (response.status, answer["error"]["code"]) == (400, code), raw
    assert await messages(client) == []


async def test_zitadel_routes_404_until_configured(service: ClientFactory) -> None:
    """Without intakes.zitadel both routes answer 404."""
    client = await service({})
    for channel in ("email", "sms"):
        response = await client.post(f"/v1/hooks/zitadel/{channel}", **signed(sms_body()))
        assert response.status == 404


# -- end to end through the real service process: SMTP sink and the Vonage fake


def smtp_and_vonage(smtp_port: int, vonage: FakeVonage) -> dict[str, Any]:
    """Email over SMTP to the recording server, SMS through Vonage (its real SDK) to the fake:
    Logto's connector JSON for both, pasted as is."""
    return {
        "email": {"provider": "smtp", "smtp": {
            "host": "127.0.0.1", "port": smtp_port, "fromEmail": "Acme <no-reply@acme.example>",
            "templates": TEMPLATES}},
        "sms": {"provider": "vonage", "vonage": logto_vonage_json(),
                "endpoints": {"vonage": vonage.endpoint(timeout_seconds=10)}},
        "limits": {"enabled": False},
    }  # fmt: skip


def post_raw(url: str, data: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """One blocking POST of ``data`` as is (signed bytes must arrive unchanged)."""
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(condition: Any, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_zitadel_process_delivers_once_to_smtp_and_vonage(
    tmp_path: Path, services: list[Service], smtp_server: RecordingSMTPServer
) -> None:
    """``otp-service serve`` with intakes.zitadel: ZITADEL's signed SMS reaches the Vonage fake
    with ZITADEL's text, its signed email reaches the SMTP server with the code; ZITADEL's
    retries of both are answered as the first and nothing is sent twice."""
    smtp_server.start()
    with FakeVonage() as vonage:
        config = smtp_and_vonage(smtp_server.port, vonage)
        config["intakes"] = CONFIG["intakes"]
        service = Service(tmp_path, config)
        services.append(service)
        answers = {}
        for channel, body in (("sms", sms_body()), ("email", email_body())):
            request = signed(body)
            status, answer = post_raw(
                f"{service.base}/v1/hooks/zitadel/{channel}", request["data"], request["headers"]
            )
            assert status in (200, 202), answer
            answers[channel] = answer["id"]
        wait_until(lambda: len(vonage.sms) == 1 and len(smtp_server.messages) == 1, "delivery")
        for channel, body in (("sms", sms_body()), ("email", email_body())):
            request = signed(body, at=time.time() + 1)  # a retry: same body, signed again
            status, answer = post_raw(
                f"{service.base}/v1/hooks/zitadel/{channel}", request["data"], request["headers"]
            )
            assert (status < 300, answer["id"], answer["duplicate"]) == (
                True, answers[channel], True)  # fmt: skip
        text = "Your one-time password is 482913. Use it within the next 5 minutes."
        assert [sms["text"] for sms in vonage.sms] == [text]
        mail = smtp_server.messages[0]
        assert mail.rcpt_tos == ["ada@example.com"]
        assert "482913" in mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


@pytest.mark.slow
def test_zitadel_lands_in_the_inbox_of_a_real_process(
    tmp_path: Path, services: list[Service]
) -> None:
    """``otp-service serve`` in capture mode (its defaults) with intakes.zitadel: ZITADEL's
    signed SMS and email are read back with ``latest?to=``, with their code and source."""
    service = Service(tmp_path, CONFIG)
    services.append(service)
    for channel, body in (("sms", sms_body()), ("email", email_body())):
        request = signed(body)
        status, answer = post_raw(
            f"{service.base}/v1/hooks/zitadel/{channel}", request["data"], request["headers"]
        )
        assert status == 200, answer
    for to in ("%2B41791234567", "ada@example.com"):
        status, _, data = http("GET", f"{service.base}/v1/messages/latest?to={to}")
        message = json.loads(data)
        assert (status, message["code"], message["source"]) == (200, "482913", "zitadel")


def test_relayed_text_never_becomes_a_connectors_generic_template() -> None:
    """A Logto connector's Generic SMS template (every Vonage config has one) must not replace
    ZITADEL's text: the Message type falls back to nothing but its own templates."""
    library = TemplateLibrary(TemplatesConfig(), connector_sms=[("Generic", "Acme: {{ code }}")])
    payload = {"message": "ZITADEL: 482913", "code": "482913"}
    assert library.render_sms("Message", payload).text == "ZITADEL: 482913"
    assert library.render_sms("SignIn", payload).text == "Acme: 482913"


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({}, "intakes.zitadel.signing_keys: is required"),
        ({"signing_keys": []}, "intakes.zitadel.signing_keys: is required"),
        ({"signing_keys": ["short"]}, "intakes.zitadel.signing_keys[0]: must be a string of at"),
        ({"signing_keys": [KEY], "sms_text": "ours"}, "intakes.zitadel.sms_text: must be one of"),
        ({"signing_keys": [KEY], "signingKey": KEY}, "intakes.zitadel.signingKey: is not a known"),
    ],
)
def test_config_zitadel_section_checked(section: dict[str, Any], problem: str) -> None:
    """check-config names the field and never echoes a key."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"intakes": {"zitadel": section}})
    assert problem in str(caught.value)
    assert KEY not in str(caught.value) or "signingKey" in problem


def test_config_zitadel_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``${ENV}`` keys, one string or a list; the key is never in the config's repr."""
    monkeypatch.setenv("ZITADEL_SMS_SIGNING_KEY", KEY)
    config = parse_config({"intakes": {"zitadel": {"signing_keys": "${ZITADEL_SMS_SIGNING_KEY}"}}})
    assert config.intakes.zitadel is not None
    assert config.intakes.zitadel.signing_keys == (KEY,)
    assert KEY not in repr(config)
