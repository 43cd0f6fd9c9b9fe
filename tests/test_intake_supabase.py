"""Supabase Auth's Send Email and Send SMS hooks (intakes.supabase): Standard Webhooks
signatures, every email_action_type, the answers Auth understands, replays."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from standardwebhooks import Webhook

from otp_service.config import parse_config
from otp_service.config.supabase import whsec_key
from otp_service.errors import ConfigError
from otp_service.http.app import SERVICES
from otp_service.intake.supabase import EMAIL_TYPES, signature, verify

from .support import supabase as sb
from .support.service import ClientFactory
from .support.smtp_server import ServerFactory

CONFIG: dict[str, Any] = {"intakes": {"supabase": {"secrets": [sb.SECRET]}}}
EMAIL = "/v1/hooks/supabase/email"
SMS = "/v1/hooks/supabase/sms"


async def post(client: Any, path: str, body: dict[str, Any], **sign: Any) -> tuple[int, Any, Any]:
    raw = sb.go_json(body)
    response = await client.post(path, data=raw, headers=sb.sign(raw, **sign))
    return response.status, await response.json(), response.headers


async def inbox(client: Any) -> list[dict[str, Any]]:
    listing: dict[str, Any] = await (await client.get("/v1/messages")).json()
    messages: list[dict[str, Any]] = listing["messages"]
    return messages


# -- the signature scheme


def test_supabase_signature_matches_the_official_test_vector() -> None:
    """Our signer gives the Standard Webhooks test vector's signature, and the verifier accepts
    it at its timestamp."""
    key = whsec_key(sb.VECTOR_SECRET)
    given = signature(key, sb.VECTOR_ID, str(sb.VECTOR_TIMESTAMP), sb.VECTOR_PAYLOAD)
    assert given == sb.VECTOR_SIGNATURE
    headers = {
        "webhook-id": sb.VECTOR_ID,
        "webhook-timestamp": str(sb.VECTOR_TIMESTAMP),
        "webhook-signature": sb.VECTOR_SIGNATURE,
    }
    verify([key], headers, sb.VECTOR_PAYLOAD, sb.VECTOR_TIMESTAMP + 10)


def test_supabase_signature_agrees_with_the_reference_library() -> None:
    """The standardwebhooks package signs the test vector as we do, and its verifier accepts a
    signature we made (the same scheme both ways)."""
    when = datetime.fromtimestamp(sb.VECTOR_TIMESTAMP, UTC)
    library = Webhook(sb.VECTOR_SECRET)
    assert library.sign(sb.VECTOR_ID, when, sb.VECTOR_PAYLOAD) == sb.VECTOR_SIGNATURE
    now = int(time.time())
    ours = signature(whsec_key(sb.SECRET), "msg_1", str(now), b'{"a":1}')
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": ours}
    assert library.verify(b'{"a":1}', headers) == {"a": 1}


def test_supabase_signature_headers_with_several_signatures() -> None:
    """A header with several signatures (space- or ``", "``-separated, other versions mixed in)
    is accepted when one matches; one with only wrong or other-version ones is refused."""
    key = whsec_key(sb.VECTOR_SECRET)
    wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    v2 = "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    base = {"webhook-id": sb.VECTOR_ID, "webhook-timestamp": str(sb.VECTOR_TIMESTAMP)}
    now = sb.VECTOR_TIMESTAMP
    for header in (
        f"{wrong} {sb.VECTOR_SIGNATURE}",
        f"{v2} {wrong} {sb.VECTOR_SIGNATURE}",
        f"{wrong}, {sb.VECTOR_SIGNATURE}",
        f"{sb.VECTOR_SIGNATURE},",
    ):
        verify([key], base | {"webhook-signature": header}, sb.VECTOR_PAYLOAD, now)
    for header in (wrong, f"{v2} {wrong}", "v1,", "garbage"):
        with pytest.raises(Exception, match="no webhook-signature matches"):
            verify([key], base | {"webhook-signature": header}, sb.VECTOR_PAYLOAD, now)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("whsec_short", "not a Standard Webhooks secret"),
        ("v1,whsec_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", "not a Standard Webhooks secret"),
        ("v1a,whpk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw:whsk_x", "asymmetric"),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not a Standard Webhooks secret"),
    ],
)
def test_supabase_malformed_secret_is_a_config_error_with_the_fix(
    secret: str, problem: str
) -> None:
    """A secret not in Supabase's ``v1,whsec_<base64>`` form is refused at start-up, naming
    the field and the fix, without echoing the secret."""
    with pytest.raises(ConfigError) as info:
        parse_config({"intakes": {"supabase": {"secrets": [secret]}}})
    [found] = info.value.problems
    assert found.path == "intakes.supabase.secrets[0]"
    assert problem in found.problem
    assert "v1,whsec_" in found.fix
    assert secret not in str(info.value)


def test_supabase_secrets_are_required_and_read_from_supabase_form() -> None:
    """An empty section is an error; ``a|b`` (Supabase's own env form) is two secrets; the
    secrets never appear in the config's repr."""
    with pytest.raises(ConfigError, match=r"intakes\.supabase\.secrets: is required"):
        parse_config({"intakes": {"supabase": {}}})
    config = parse_config({"intakes": {"supabase": {"secrets": f"{sb.SECRET}|{sb.OLD_SECRET}"}}})
    assert config.intakes.supabase is not None
    assert config.intakes.supabase.secrets == (sb.SECRET, sb.OLD_SECRET)
    assert "whsec_" not in repr(config)


# -- the email hook


async def test_supabase_signup_email_is_captured_with_code_and_link(
    service: ClientFactory,
) -> None:
    """A signed signup hook is answered 200 ``{}`` as JSON, and the message is the Register
    template with the code and the confirmation link Supabase itself would build."""
    client = await service(CONFIG)
    body = sb.email_body("signup", token="305805", token_hash="pkce_abc123")
    status, answer, headers = await post(client, EMAIL, body)
    assert (status, answer) == (200, {})
    assert headers["Content-Type"].startswith("application/json")
    [message] = await inbox(client)
    assert message["type"] == "Register" and message["source"] == "supabase"
    assert message["to"] == "ada@example.com" and message["code"] == "305805"
    link = urlsplit(message["link"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{sb.SITE_URL}/verify"
    assert parse_qs(link.query) == {
        "token": ["pkce_abc123"],
        "type": ["signup"],
        "redirect_to": ["http://localhost:3000/welcome?a=1&b=2"],
    }


@pytest.mark.parametrize("action", [a for a in EMAIL_TYPES if a != "email_change"])
async def test_supabase_every_email_action_type_is_rendered(
    service: ClientFactory, action: str
) -> None:
    """Every email_action_type becomes its usage type's message; the notifications carry no
    code."""
    client = await service(CONFIG)
    usage, has_code, _ = EMAIL_TYPES[action]
    extra = {"provider": "github", "factor_type": "totp", "old_phone": "15550000000"}
    token = "481516" if has_code else ""
    status, answer, _ = await post(client, EMAIL, sb.email_body(action, token=token, **extra))
    assert (status, answer) == (200, {}), action
    [message] = await inbox(client)
    assert message["type"] == usage
    assert message["code"] == (token or None)
    assert message["subject"] and "{{" not in message["text"]
    if action == "identity_linked_notification":
        assert "github" in message["text"]


async def test_supabase_secure_email_change_sends_both_messages(service: ClientFactory) -> None:
    """With secure email change, the current address gets ``token`` (link: token_hash_new) and
    the new one ``token_new`` (link: token_hash), each with its template."""
    client = await service(CONFIG)
    account = sb.user("old@example.com", new_email="new@example.com")
    body = sb.email_body(
        "email_change", account=account, token="111111", token_hash="hash_for_new",
        token_new="222222", token_hash_new="hash_for_current",
    )  # fmt: skip
    status, answer, _ = await post(client, EMAIL, body)
    assert (status, answer) == (200, {})
    by_to = {m["to"]: m for m in await inbox(client)}
    current, new = by_to["old@example.com"], by_to["new@example.com"]
    assert (current["type"], current["code"]) == ("EmailChangeCurrent", "111111")
    assert (new["type"], new["code"]) == ("EmailChangeNew", "222222")
    assert parse_qs(urlsplit(current["link"]).query)["token"] == ["hash_for_current"]
    assert parse_qs(urlsplit(new["link"]).query)["token"] == ["hash_for_new"]
    assert "new@example.com" in current["text"]


async def test_supabase_email_change_without_secure_change_sends_one(
    service: ClientFactory,
) -> None:
    """Without secure email change only the new address gets a message, with ``token``."""
    client = await service(CONFIG)
    account = sb.user("old@example.com", new_email="new@example.com")
    body = sb.email_body("email_change", account=account, token="333333")
    await post(client, EMAIL, body)
    [message] = await inbox(client)
    assert (message["to"], message["code"], message["type"]) == (
        "new@example.com", "333333", "EmailChangeNew",
    )  # fmt: skip


async def test_supabase_email_changed_notification_goes_to_the_old_address(
    service: ClientFactory,
) -> None:
    """As Supabase's own mailer does, the email-changed notice is sent to the old address."""
    client = await service(CONFIG)
    body = sb.email_body(
        "email_changed_notification", token="", old_email="was@example.com",
        account=sb.user("now@example.com"),
    )  # fmt: skip
    await post(client, EMAIL, body)
    [message] = await inbox(client)
    assert message["to"] == "was@example.com" and message["type"] == "EmailChanged"
    assert "now@example.com" in message["text"]


async def test_supabase_user_metadata_locale_picks_the_language(service: ClientFactory) -> None:
    """``user.user_metadata.locale`` feeds the locale chain: a French user gets French."""
    client = await service(CONFIG)
    account = sb.user(metadata={"locale": "fr-FR", "full_name": "Ada Lovelace"})
    await post(client, EMAIL, sb.email_body("recovery", account=account))
    [message] = await inbox(client)
    assert message["locale"] == "fr" and message["type"] == "ForgotPassword"
    assert "Ada Lovelace" in message["text"]


async def test_supabase_unknown_action_type_is_refused_naming_it(service: ClientFactory) -> None:
    """An email_action_type we do not know is refused as Auth's error object (422) with a code
    and a message naming the type; nothing is sent."""
    client = await service(CONFIG)
    status, answer, _ = await post(client, EMAIL, sb.email_body("carrier_pigeon"))
    assert status == 200
    error = answer["error"]
    assert error["http_code"] == 422 and error["code"] == "unknown_email_action_type"
    assert "carrier_pigeon" in error["message"]
    assert await inbox(client) == []
    metrics = await (await client.get("/metrics")).text()
    counted = (
        'otp_intake_requests_total{channel="email",intake="supabase",status="422",type="none"}'
    )
    assert f"{counted} 1.0" in metrics


# -- the SMS hook


async def test_supabase_sms_goes_to_the_number_without_plus(service: ClientFactory) -> None:
    """``sms.otp`` to ``sms.phone`` (digits without ``+``) is captured to the E.164 number with
    the Generic text; an MFA challenge gets the MfaVerification text."""
    client = await service(CONFIG)
    status, answer, _ = await post(client, SMS, sb.sms_body("561166", "14155552671"))
    assert (status, answer) == (200, {})
    status, _, _ = await post(client, SMS, sb.sms_body("772211", "4915112345678", sms_type="mfa"))
    assert status == 200
    by_to = {m["to"]: m for m in await inbox(client)}
    assert by_to["+14155552671"]["code"] == "561166"
    assert by_to["+14155552671"]["type"] == "Generic"
    assert by_to["+4915112345678"]["type"] == "MfaVerification"
    assert by_to["+4915112345678"]["source"] == "supabase"


# -- signatures and replays through the service


async def test_supabase_rotation_accepts_old_and_new_secrets(service: ClientFactory) -> None:
    """During a rotation Auth signs with both secrets (``", "``-joined); a service that knows
    only one of them accepts, and a service with both accepts a request signed by either."""
    client = await service({"intakes": {"supabase": {"secrets": [sb.OLD_SECRET, sb.SECRET]}}})
    for secrets in ([sb.SECRET], [sb.OLD_SECRET], [sb.OLD_SECRET, sb.SECRET]):
        status, answer, _ = await post(client, EMAIL, sb.email_body("magiclink"), secrets=secrets)
        assert (status, answer) == (200, {}), secrets


async def test_supabase_bad_signatures_are_401_and_store_nothing(service: ClientFactory) -> None:
    """A wrong secret, a stale or future timestamp, a tampered body, missing headers: each is
    401 with its stable code, and nothing is captured."""
    client = await service(CONFIG)
    body = sb.go_json(sb.email_body("signup"))
    now = time.time()
    cases = [
        (body, sb.sign(body, [sb.OLD_SECRET]), "invalid_signature"),
        (body, sb.sign(body, timestamp=now - 301), "stale_signature"),
        (body, sb.sign(body, timestamp=now + 301), "stale_signature"),
        (body.replace(b"305805", b"999999"), sb.sign(body), "invalid_signature"),
        (body, sb.sign(body) | {"webhook-timestamp": "17e8"}, "invalid_signature"),
        (body, {"Content-Type": "application/json"}, "missing_signature"),
    ]
    for raw, headers, code in cases:
        response = await client.post(EMAIL, data=raw, headers=headers)
        answer = await response.json()
        assert (response.status, answer["error"]["code"]) == (401, code)
        assert "whsec" not in str(answer)
    assert await inbox(client) == []


async def test_supabase_retry_with_same_uuid_is_answered_once(service: ClientFactory) -> None:
    """Auth's retry (a new webhook-id and signature, the same metadata.uuid and body) and a
    replay of the very same request are answered 200 and captured once."""
    client = await service(CONFIG)
    raw = sb.go_json(sb.email_body("magiclink"))
    first = sb.sign(raw)
    for headers in (first, sb.sign(raw), first):
        response = await client.post(EMAIL, data=raw, headers=headers)
        assert (response.status, await response.json()) == (200, {})
    assert len(await inbox(client)) == 1


async def test_supabase_rate_limit_is_auths_error_object(service: ClientFactory) -> None:
    """Over an abuse limit the answer is Auth's error object with http_code 429 and our code,
    so Auth answers its client 429 with our message."""
    config = CONFIG | {"limits": {"enabled": True, "per_recipient": {"count": 1}}}
    client = await service(config)
    await post(client, EMAIL, sb.email_body("magiclink", token="100001"))
    status, answer, _ = await post(client, EMAIL, sb.email_body("magiclink", token="100002"))
    assert status == 200
    assert answer["error"]["http_code"] == 429 and answer["error"]["code"] == "rate_limited"
    assert answer["error"]["message"]


async def test_supabase_draining_is_503_with_retry_after(service: ClientFactory) -> None:
    """While the service drains, a hook is 503 with Retry-After (Auth retries at once: another
    replica takes it)."""
    client = await service(CONFIG)
    client.server.app[SERVICES].outbox.accepting = False  # what SIGTERM does first
    status, answer, headers = await post(client, EMAIL, sb.email_body("signup"))
    assert status == 503 and int(headers["Retry-After"]) >= 1
    assert answer["error"]["code"] == "shutting_down"


async def test_supabase_malformed_bodies_are_refused(service: ClientFactory) -> None:
    """A signed body without what the hook needs is Auth's error object with a 400 code."""
    client = await service(CONFIG)
    cases: list[tuple[str, dict[str, Any], str]] = [
        (EMAIL, {"user": sb.user(), "email_data": {}}, "missing_field"),
        (EMAIL, {"user": sb.user(), "email_data": "x"}, "invalid_request"),
        (EMAIL, sb.email_body("signup", token=""), "missing_field"),
        (EMAIL, {"user": sb.user(email=""), **{"email_data": {"email_action_type": "signup",
                                                              "token": "1"}}}, "missing_field"),
        (SMS, {"user": sb.user(), "sms": {"phone": "14155552671"}}, "missing_field"),
        (SMS, sb.sms_body(phone="12"), "invalid_phone"),
    ]  # fmt: skip
    for path, body, code in cases:
        status, answer, _ = await post(client, path, body)
        assert status == 200, body
        assert answer["error"]["code"] == code, body
        assert answer["error"]["http_code"] == 400
    assert await inbox(client) == []


async def test_supabase_notice_never_renders_a_connector_generic(
    service: ClientFactory, smtp_servers: ServerFactory
) -> None:
    """With Logto's SMTP connector JSON (whose Generic says "Your code is ..."), a notice
    without a code uses its own bundled template, and a magic link the connector's SignIn."""
    server = smtp_servers()
    templates = [
        {"usageType": usage, "contentType": "text/plain", "subject": f"Acme {usage}",
         "content": "Your code is {{code}}."}
        for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
    ]  # fmt: skip
    smtp = {"host": "127.0.0.1", "port": server.port, "fromEmail": "no-reply@acme.example",
            "templates": templates}  # fmt: skip
    client = await service(CONFIG | {"email": {"provider": "smtp", "smtp": smtp}})
    notice = sb.email_body("password_changed_notification", token="")
    assert (await post(client, EMAIL, notice))[:2] == (200, {})
    assert (await post(client, EMAIL, sb.email_body("magiclink", token="161803")))[0] == 200
    by_subject = {
        m.message["Subject"]: m.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        for m in server.messages
    }
    assert by_subject["Acme SignIn"].strip() == "Your code is 161803."
    [notice_text] = [text for subject, text in by_subject.items() if subject != "Acme SignIn"]
    assert "password" in notice_text and "Your code is" not in notice_text


async def test_supabase_provider_refusal_is_a_502_without_its_details(
    service: ClientFactory, smtp_servers: ServerFactory
) -> None:
    """An SMTP server that refuses the recipient for good is Auth's error object with
    http_code 502 and our code, and a plain message for the end user (no provider reply)."""
    server = smtp_servers()
    server.reply_next("RCPT", "550 5.1.1 mailbox unavailable: internal-relay-7")
    smtp = {"host": "127.0.0.1", "port": server.port, "fromEmail": "no-reply@acme.example",
            "templates": []}  # fmt: skip
    client = await service(CONFIG | {"email": {"provider": "smtp", "smtp": smtp}})
    status, answer, _ = await post(client, EMAIL, sb.email_body("magiclink"))
    assert status == 200
    error = answer["error"]
    assert error["http_code"] == 502 and error["code"]
    assert "internal-relay-7" not in error["message"]


async def test_supabase_metadata_ip_is_counted_per_ip(service: ClientFactory) -> None:
    """``metadata.ip_address`` (the end user's address as Auth saw it) is what
    ``limits.per_ip`` counts: a second address from the same user is refused."""
    limits = {"enabled": True, "per_recipient": False, "per_ip": {"count": 1}}
    client = await service(CONFIG | {"limits": limits})
    first = sb.email_body("magiclink", account=sb.user("one@example.com"))
    second = sb.email_body("magiclink", account=sb.user("two@example.com"))
    other = sb.email_body("magiclink", account=sb.user("three@example.com"))
    other["metadata"]["ip_address"] = "198.51.100.9"
    assert (await post(client, EMAIL, first))[:2] == (200, {})
    _, answer, _ = await post(client, EMAIL, second)
    assert answer["error"]["http_code"] == 429
    assert (await post(client, EMAIL, other))[:2] == (200, {})


def test_supabase_verify_url_must_be_an_http_url() -> None:
    """``verify_url`` must be an http(s) URL without a query (the link's own query follows)."""
    for bad in ("ftp://x.example/verify", "https://x.example/verify?x=1", "verify"):
        with pytest.raises(ConfigError, match="verify_url"):
            parse_config({"intakes": {"supabase": {"secrets": [sb.SECRET], "verify_url": bad}}})
    config = parse_config(
        {"intakes": {"supabase": {"secrets": [sb.SECRET], "verify_url": "https://a.example/v"}}}
    )
    assert config.intakes.supabase is not None
    assert config.intakes.supabase.verify_url == "https://a.example/v"


async def test_supabase_verify_url_is_the_links_base(service: ClientFactory) -> None:
    """With ``verify_url`` (a self-hosted Auth behind a gateway) links start there."""
    url = "https://db.example.com/auth/v1/verify"
    client = await service({"intakes": {"supabase": {"secrets": [sb.SECRET], "verify_url": url}}})
    await post(client, EMAIL, sb.email_body("recovery", token_hash="pkce_r"))
    [message] = await inbox(client)
    assert message["link"].startswith(f"{url}?token=pkce_r&type=recovery&redirect_to=")
