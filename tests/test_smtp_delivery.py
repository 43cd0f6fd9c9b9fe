"""SMTP delivery against a real local SMTP server: wire format, TLS, AUTH, failures, pooling.

Every test drives the real provider (``SmtpProvider``), the real ``Dispatcher`` or the whole
aiohttp app against :class:`smtp_server.RecordingSMTPServer` and asserts on what the server
received, or on the error a caller (Logto) would see.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from otp_service.config import parse_config
from otp_service.delivery.outcome import Outcome
from otp_service.errors import PermanentProviderError, TransientProviderError
from otp_service.message.compose import Message, parse_request
from otp_service.providers.base import SendResult
from otp_service.providers.smtp import SmtpProvider
from otp_service.services import Services, build_services

from .support.ports import free_port
from .support.service import ClientFactory
from .support.signin import signin
from .support.smtp_server import DROP, ServerFactory, ca_pem

CODE = "482913"
FROM_DOMAIN = "acme.example"
TO = "ana@example.com"
EHLO_NAME = "otp.test.example"
USER, PASSWORD = "otp-mailer", "pw-Secr3t-5f2a9c"
TOKEN = "ya29.test-access-token-7c1e"
TEMPLATES = [
    {
        "usageType": "SignIn",
        "contentType": "text/plain",
        "subject": "Your Acme sign-in code",
        "content": "Your sign-in code is {{code}}.",
    },
    {
        "usageType": "Register",
        "contentType": "text/html",
        "subject": "Vérifiez votre adresse — 验证码",
        "content": "<p>Bienvenue ! Votre code : <b>{{code}}</b></p>",
    },
    {
        "usageType": "ForgotPassword",
        "contentType": "text/plain",
        "subject": "Reset your password",
        "content": "Your reset code is {{code}}.",
    },
    {
        "usageType": "Generic",
        "contentType": "text/plain",
        "subject": "Your Acme code",
        "content": "Your code is {{code}}.",
    },
]


@pytest.fixture(autouse=True)
async def settle_connections(smtp_servers: ServerFactory) -> AsyncIterator[None]:
    """After the test and its clients are closed, let TLS shutdowns finish before the loop ends.

    Closing a TLS connection completes a few loop iterations later (close_notify both ways);
    a loop closed before that leaves the socket to the garbage collector (ResourceWarning).
    """
    yield
    await wait_until(smtp_servers.idle)
    await asyncio.sleep(0.02)


def smtp_json(port: int, **overrides: Any) -> dict[str, Any]:
    """A Logto SMTP connector JSON for a local server, with short timeouts."""
    data: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "fromEmail": f"Acme <no-reply@{FROM_DOMAIN}>",
        "templates": TEMPLATES,
        "name": EHLO_NAME,
        "connectionTimeout": 2000,
        "greetingTimeout": 2000,
        "socketTimeout": 2000,
    }
    data.update(overrides)
    return data


def make_config(smtp: dict[str, Any], **pool: Any) -> dict[str, Any]:
    """The service config: email through ``smtp``, a quick retry, a short overall timeout."""
    return {
        "email": {"provider": "smtp", "smtp": smtp, "pool": pool or {"size": 4}},
        "delivery": {"retry_delay_seconds": 0.01, "timeout_seconds": 5, "wait_seconds": 10},
        "templates": {"bundled": False},  # the connector's templates suffice; compiling is slow
    }


def tls_json(**tls: Any) -> dict[str, Any]:
    return {"tls": {"ca": ca_pem(), **tls}}


def login_json() -> dict[str, Any]:
    return {"auth": {"user": USER, "pass": PASSWORD}}


class Mailer:
    """The service's real wiring (composer, dispatcher, SMTP provider) for one config."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.services: Services = build_services(parse_config(config))
        self.started = False

    @property
    def provider(self) -> SmtpProvider:
        provider = self.services.dispatcher.email
        assert isinstance(provider, SmtpProvider)
        return provider

    def compose(self, to: str = TO, usage: str = "SignIn", code: str = CODE) -> Message:
        request = parse_request({"to": to, "type": usage, "payload": {"code": code}})
        return self.services.composer.compose("email", request)

    async def send(self, to: str = TO, usage: str = "SignIn") -> tuple[Message, SendResult]:
        """One attempt through the provider alone (no retry)."""
        message = self.compose(to, usage)
        return message, await self.provider.send(message)

    async def deliver(self, to: str = TO, usage: str = "SignIn") -> tuple[Message, Outcome]:
        """Through the outbox: stored first, transient failures retried with backoff."""
        if not self.started:
            await self.services.start()
            self.started = True
        message = self.compose(to, usage)
        return message, await self.services.outbox.submit(
            message, expires_at=time.time() + 600, idempotency_key=None, dedupe_key=None
        )


@pytest.fixture
async def mailer() -> AsyncIterator[Callable[..., Mailer]]:
    """A factory of :class:`Mailer`: ``mailer(smtp_json, **pool)``; all closed afterwards."""
    made: list[Mailer] = []

    def make(smtp: dict[str, Any], **pool: Any) -> Mailer:
        made.append(Mailer(make_config(smtp, **pool)))
        return made[-1]

    yield make
    for item in made:
        await (item.services.stop() if item.started else item.services.close())


PostEmail = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any], str]]]


@pytest.fixture
def post_email(service: ClientFactory) -> Callable[[dict[str, Any]], Awaitable[PostEmail]]:
    """Start the real app for a config; returns a function that POSTs /v1/email."""

    async def start(config: dict[str, Any]) -> PostEmail:
        client = await service(config)

        async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
            response = await client.post("/v1/email", json=body)
            text = await response.text()
            return response.status, await response.json(), text

        return post

    return start


# 1. Plain delivery: envelope, headers and body on the wire


async def test_send_plain_template_arrives_with_correct_headers(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A plain-text sign-in email reaches the server with the envelope and headers Logto expects."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port, replyTo="Acme Support <help@acme.example>"))

    before = datetime.now(UTC).replace(microsecond=0)
    message, result = await sender.send()

    assert result.status == "sent" and result.provider == "smtp"
    [received] = server.messages
    assert received.mail_from == f"no-reply@{FROM_DOMAIN}"
    assert received.rcpt_tos == [TO]
    mail = received.message
    assert mail["From"] == f"Acme <no-reply@{FROM_DOMAIN}>"
    assert mail["To"] == TO
    assert mail["Reply-To"] == "Acme Support <help@acme.example>"
    assert mail["Subject"] == "Your Acme sign-in code"
    sent_at = parsedate_to_datetime(mail["Date"])
    assert before - timedelta(seconds=1) <= sent_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert mail["Message-ID"] == f"<{message.id}@{FROM_DOMAIN}>"
    assert result.provider_id is None  # "250 OK" names no queue id
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content().strip() == f"Your sign-in code is {CODE}."
    assert server.connections[0].ehlo == [EHLO_NAME]


async def test_send_result_carries_the_servers_queue_id(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """The queue id in the reply to DATA (Postfix: "queued as ...") is the provider's id of
    the message, so support can find it in the relay's log."""
    server = smtp_servers()
    server.reply_next("DATA", "250 2.0.0 Ok: queued as 4XyzQ9Lm2")
    sender = mailer(smtp_json(server.port))
    _, result = await sender.send()
    assert result.status == "sent" and result.provider_id == "4XyzQ9Lm2"
    assert len(server.messages) == 1


async def test_send_non_ascii_subject_and_display_name_are_rfc2047_encoded(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """Accented and CJK subject/display name travel as RFC 2047 words and decode back intact."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port, fromEmail=f"Équipe Acme <no-reply@{FROM_DOMAIN}>"))

    await sender.send(usage="Register")

    [received] = server.messages
    headers = received.header_block
    headers.decode("ascii")  # nothing but ASCII in the header section on the wire
    assert b"=?utf-8?" in headers.lower()
    mail = received.message
    assert mail["Subject"] == "Vérifiez votre adresse — 验证码"
    assert mail["From"].addresses[0].display_name == "Équipe Acme"
    assert mail["From"].addresses[0].addr_spec == f"no-reply@{FROM_DOMAIN}"


async def test_send_html_template_is_multipart_alternative_text_first(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """An HTML template goes out as multipart/alternative: text/plain first, then text/html."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port))

    await sender.send(usage="Register")

    mail = server.messages[0].message
    assert mail.get_content_type() == "multipart/alternative"
    parts = list(mail.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert CODE in parts[0].get_content() and "<b>" not in parts[0].get_content()
    assert f"<b>{CODE}</b>" in parts[1].get_content()


async def test_send_custom_headers_appear_on_the_message(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """customHeaders from the connector JSON are added, a list value as repeated headers."""
    server = smtp_servers()
    headers = {"X-Campaign": "otp-signin", "X-Tag": ["auth", "transactional"]}
    sender = mailer(smtp_json(server.port, customHeaders=headers))

    await sender.send()

    mail = server.messages[0].message
    assert mail["X-Campaign"] == "otp-signin"
    assert mail.get_all("X-Tag") == ["auth", "transactional"]


async def test_send_code_mail_is_marked_auto_submitted_with_each_header_once(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A code mail tells autoresponders it is machine-sent (RFC 3834's Auto-Submitted and
    Exchange's X-Auto-Response-Suppress), carries each header a mail administrator expects once,
    and no Precedence: bulk; a connector template has no language, so no Content-Language."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port))

    message, _ = await sender.send()

    mail = server.messages[0].message
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Auto-Submitted"):
        assert len(mail.get_all(name, [])) == 1, name
    assert mail["MIME-Version"] == "1.0"
    assert mail["Message-ID"] == f"<{message.id}@{FROM_DOMAIN}>"
    assert mail["Precedence"] is None and mail["Content-Language"] is None


async def test_send_content_language_is_the_language_of_the_template_used(
    smtp_servers: ServerFactory, tmp_path: Path
) -> None:
    """Content-Language names the language of the template the mail was written from: fr for a
    fr-CA request answered by the French template, the default language when none matches."""
    for tag, subject, text in (("fr", "Votre code", "Votre code : {{code}}"), ("en", "Your code", "Code: {{code}}")):  # fmt: skip
        (tmp_path / "email" / tag).mkdir(parents=True)
        (tmp_path / "email" / tag / "SignIn.subject").write_text(subject, encoding="utf-8")
        (tmp_path / "email" / tag / "SignIn.txt").write_text(text, encoding="utf-8")
    server = smtp_servers()
    config = make_config(smtp_json(server.port, templates=[]))
    config["templates"] = {"directory": str(tmp_path), "bundled": False, "default_locale": "en"}
    sender = Mailer(config)
    try:
        for locale in ("fr-CA", "de"):
            request = parse_request({"to": TO, "type": "SignIn", "payload": {"code": CODE, "locale": locale}})  # fmt: skip
            await sender.provider.send(sender.services.composer.compose("email", request))
    finally:
        await sender.services.close()

    french, fallback = (received.message for received in server.messages)
    assert french["Content-Language"] == "fr" and french["Subject"] == "Votre code"
    assert fallback["Content-Language"] == "en" and fallback["Subject"] == "Your code"


async def test_send_custom_header_replaces_an_automatic_one(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """An operator's customHeaders entry of the same name (any case) replaces the automatic
    X-Auto-Response-Suppress instead of doubling it; the others stay."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port, customHeaders={"x-auto-response-suppress": "All"}))

    await sender.send()

    mail = server.messages[0].message
    assert mail.get_all("X-Auto-Response-Suppress") == ["All"]
    assert mail["Auto-Submitted"] == "auto-generated"


async def test_send_body_lines_starting_with_dot_arrive_intact(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """Body lines that start with "." (even a lone ".") are not lost or cut short in transit."""
    server = smtp_servers()
    templates = [dict(t) for t in TEMPLATES]
    templates[0]["content"] = "Your code:\n.\n..{{code}}\n.end"
    sender = mailer(smtp_json(server.port, templates=templates))

    await sender.send()

    body = server.messages[0].message.get_content().replace("\r\n", "\n")
    assert body.splitlines() == ["Your code:", ".", f"..{CODE}", ".end"]


async def test_send_template_send_from_sets_from_and_message_id_domain(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A template's sendFrom overrides From, the envelope sender and the Message-ID domain."""
    server = smtp_servers()
    templates = [dict(t) for t in TEMPLATES]
    templates[0]["sendFrom"] = "Acme Login <login@auth.acme.example>"
    sender = mailer(smtp_json(server.port, templates=templates))

    message, _ = await sender.send()

    [received] = server.messages
    assert received.mail_from == "login@auth.acme.example"
    assert received.message["From"] == "Acme Login <login@auth.acme.example>"
    assert received.message["Message-ID"] == f"<{message.id}@auth.acme.example>"


async def test_http_email_request_is_delivered_over_smtp(
    smtp_servers: ServerFactory, post_email: Callable[[dict[str, Any]], Awaitable[PostEmail]]
) -> None:
    """POST /v1/email answers 200 "sent" and the code arrives under the answered message id."""
    server = smtp_servers()
    post = await post_email(make_config(smtp_json(server.port)))

    status, body, _ = await post(signin())

    assert status == 200
    assert body["status"] == "sent" and body["provider"] == "smtp"
    [received] = server.messages
    assert received.message["Message-ID"] == f"<{body['id']}@{FROM_DOMAIN}>"
    assert CODE in received.message.get_content()


# 2. SMTPUTF8


async def test_send_utf8_local_part_uses_smtputf8_when_offered(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """josé@example.com is delivered with MAIL ... SMTPUTF8 when the server offers it."""
    server = smtp_servers(smtputf8=True)
    sender = mailer(smtp_json(server.port))

    await sender.send(to="josé@example.com")

    [received] = server.messages
    assert received.rcpt_tos == ["josé@example.com"]
    assert "SMTPUTF8" in received.mail_options
    assert received.message["To"] == "josé@example.com"


async def test_send_utf8_local_part_refused_permanently_without_smtputf8(
    smtp_servers: ServerFactory,
    mailer: Callable[..., Mailer],
    post_email: Callable[[dict[str, Any]], Awaitable[PostEmail]],
) -> None:
    """Without SMTPUTF8 a non-ASCII address fails for good (502), and nothing is sent."""
    server = smtp_servers(smtputf8=False)
    sender = mailer(smtp_json(server.port))

    with pytest.raises(PermanentProviderError, match="SMTPUTF8"):
        await sender.send(to="josé@example.com")

    post = await post_email(make_config(smtp_json(server.port)))
    status, body, _ = await post(signin(to="josé@example.com"))
    assert status == 502
    assert body["error"]["code"] == "provider_rejected"
    assert "SMTPUTF8" in body["error"]["message"]
    assert server.attempts("MAIL") == 0 and server.messages == []


# 3. TLS: STARTTLS, implicit TLS, certificate checks


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_starttls_with_pasted_ca_authenticates_after_upgrade(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer], mechanism: str
) -> None:
    """With tls.ca pasted, the client upgrades with STARTTLS and only then sends AUTH."""
    server = smtp_servers(
        require_starttls=True, user=USER, password=PASSWORD, auth_mechanisms=(mechanism,)
    )
    sender = mailer(smtp_json(server.port, **login_json(), **tls_json()))

    await sender.send()

    [connection] = server.connections
    assert connection.commands[:4] == ["EHLO", "STARTTLS", "EHLO", f"AUTH {mechanism}"]
    assert connection.commands[4:] == ["MAIL", "RCPT", "DATA"]
    [received] = server.messages
    assert received.tls and received.user == USER


async def test_starttls_without_ca_fails_permanently_on_certificate(
    smtp_servers: ServerFactory,
    mailer: Callable[..., Mailer],
    post_email: Callable[[dict[str, Any]], Awaitable[PostEmail]],
) -> None:
    """An untrusted STARTTLS certificate is a clear permanent error and no password is sent."""
    server = smtp_servers(starttls=True, user=USER, password=PASSWORD)
    sender = mailer(smtp_json(server.port, **login_json()))

    with pytest.raises(PermanentProviderError) as caught:
        await sender.send()

    assert "certificate verification failed" in caught.value.detail
    assert not isinstance(caught.value, ssl.SSLError)
    post = await post_email(make_config(smtp_json(server.port, **login_json())))
    status, body, _ = await post(signin())
    assert status == 502
    assert body["error"]["code"] == "provider_rejected"
    assert "certificate verification failed" in body["error"]["message"]
    assert server.auth_attempts == [] and server.messages == []


async def test_starttls_with_wrong_servername_fails_permanently(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """servername is the name checked in the certificate: a name it lacks is refused."""
    server = smtp_servers(starttls=True)
    sender = mailer(smtp_json(server.port, servername="smtp.other.example", **tls_json()))

    with pytest.raises(PermanentProviderError, match="certificate verification failed"):
        await sender.send()
    assert server.messages == []


async def test_starttls_reject_unauthorized_false_delivers_without_ca(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """tls.rejectUnauthorized: false accepts the untrusted certificate and still encrypts."""
    server = smtp_servers(require_starttls=True, user=USER, password=PASSWORD)
    sender = mailer(smtp_json(server.port, **login_json(), tls={"rejectUnauthorized": False}))

    await sender.send()

    [received] = server.messages
    assert received.tls and received.user == USER


async def test_require_tls_without_starttls_offered_fails_permanently(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """requireTLS against a server without STARTTLS fails for good before any mail is sent."""
    server = smtp_servers(starttls=False)
    sender = mailer(smtp_json(server.port, requireTLS=True))

    with pytest.raises(PermanentProviderError, match="STARTTLS"):
        await sender.send()
    assert server.attempts("MAIL") == 0 and server.messages == []


async def test_ignore_tls_skips_offered_starttls(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """ignoreTLS: true sends in clear text even though the server offers STARTTLS."""
    server = smtp_servers(starttls=True)
    sender = mailer(smtp_json(server.port, ignoreTLS=True))

    await sender.send()

    [received] = server.messages
    assert not received.tls
    assert "STARTTLS" not in server.connections[0].commands


async def test_starttls_is_used_opportunistically_by_default(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """Without requireTLS or ignoreTLS, an offered STARTTLS is used (as nodemailer does)."""
    server = smtp_servers(starttls=True)
    sender = mailer(smtp_json(server.port, **tls_json()))

    await sender.send()

    assert server.messages[0].tls
    assert server.connections[0].commands[:3] == ["EHLO", "STARTTLS", "EHLO"]


async def test_implicit_tls_with_ca_delivers(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """secure: true speaks TLS from the first byte (port 465 style) and authenticates."""
    server = smtp_servers(implicit_tls=True, user=USER, password=PASSWORD)
    sender = mailer(smtp_json(server.port, secure=True, **login_json(), **tls_json()))

    await sender.send()

    [received] = server.messages
    assert received.tls and received.user == USER
    assert "STARTTLS" not in server.connections[0].commands


async def test_implicit_tls_checks_certificate_against_servername(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """secure with servername connects to host but verifies the certificate for servername."""
    server = smtp_servers(implicit_tls=True)
    sender = mailer(smtp_json(server.port, secure=True, servername="localhost", **tls_json()))

    await sender.send()

    assert server.messages[0].tls
    # The certificate is good for the host (127.0.0.1): only a check against servername can
    # refuse it when servername names someone else.
    other = mailer(
        smtp_json(server.port, secure=True, servername="smtp.other.example", **tls_json())
    )
    with pytest.raises(PermanentProviderError, match="certificate verification failed"):
        await other.send()
    assert len(server.messages) == 1


async def test_implicit_tls_untrusted_certificate_fails_permanently(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """secure: true with an untrusted certificate is permanent, as it is for STARTTLS."""
    server = smtp_servers(implicit_tls=True)
    sender = mailer(smtp_json(server.port, secure=True))

    with pytest.raises(PermanentProviderError, match="certificate verification failed"):
        await sender.send()


# 4. AUTH


async def test_auth_wrong_password_fails_permanently_without_echoing_it(
    smtp_servers: ServerFactory,
    mailer: Callable[..., Mailer],
    post_email: Callable[[dict[str, Any]], Awaitable[PostEmail]],
) -> None:
    """A wrong password is a permanent "authentication failed"; the password is never shown."""
    server = smtp_servers(require_starttls=True, user=USER, password="the-right-one")
    config_json = smtp_json(server.port, **login_json(), **tls_json())
    sender = mailer(config_json)

    with pytest.raises(PermanentProviderError, match="authentication failed") as caught:
        await sender.send()
    assert PASSWORD not in str(caught.value) and PASSWORD not in repr(caught.value)

    post = await post_email(make_config(config_json))
    status, body, text = await post(signin())
    assert status == 502
    assert body["error"]["code"] == "provider_rejected"
    assert "authentication failed" in body["error"]["message"]
    assert PASSWORD not in text
    assert len(server.connections) == 2  # one per attempt above: the HTTP one was not retried
    assert server.messages == []


async def test_auth_xoauth2_access_token_from_env_delivers(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """auth.type OAuth2 sends XOAUTH2 with the ${ENV} access token and the mail goes out."""
    monkeypatch.setenv("SMTP_ACCESS_TOKEN", TOKEN)
    server = smtp_servers(require_starttls=True, user=USER, token=TOKEN)
    auth = {"type": "OAuth2", "user": USER, "accessToken": "${SMTP_ACCESS_TOKEN}"}
    sender = mailer(smtp_json(server.port, auth=auth, **tls_json()))

    await sender.send()

    assert server.auth_attempts == [("XOAUTH2", USER, True)]
    assert server.messages[0].user == USER


async def test_auth_xoauth2_rejected_token_fails_permanently_without_echoing_it(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A rejected OAuth2 access token is a permanent auth failure that does not show the token."""
    server = smtp_servers(require_starttls=True, user=USER, token="the-valid-token")
    auth = {"type": "OAuth2", "user": USER, "accessToken": TOKEN}
    sender = mailer(smtp_json(server.port, auth=auth, **tls_json()))

    with pytest.raises(PermanentProviderError, match="authentication failed") as caught:
        await sender.send()
    assert TOKEN not in str(caught.value)
    assert server.messages == []


# 5. Reply codes, retries and what the HTTP caller sees


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA"])
@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("451 4.3.0 Temporary local problem, try later", TransientProviderError),
        ("550 5.7.1 Delivery not authorized", PermanentProviderError),
    ],
)
async def test_reply_code_decides_transient_or_permanent(
    smtp_servers: ServerFactory,
    mailer: Callable[..., Mailer],
    verb: str,
    reply: str,
    error: type[Exception],
) -> None:
    """A 4xx answer to MAIL, RCPT or DATA is transient, a 5xx one permanent, with its text."""
    server = smtp_servers()
    server.reply_next(verb, reply)
    sender = mailer(smtp_json(server.port))

    with pytest.raises(error) as caught:
        await sender.send()

    assert type(caught.value) is error
    assert reply[:3] in str(caught.value)
    assert server.messages == []


async def test_outbox_retries_one_transient_failure_and_delivers(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A single 451 is retried within the request and the message then arrives once."""
    server = smtp_servers()
    server.reply_next("DATA", "451 4.3.0 Try again later")
    sender = mailer(smtp_json(server.port))

    message, result = await sender.deliver()

    assert result.status == "sent"
    assert server.attempts("DATA") == 2
    [received] = server.messages
    assert received.message["Message-ID"] == f"<{message.id}@{FROM_DOMAIN}>"


async def test_http_transient_failures_retried_until_delivered(
    smtp_servers: ServerFactory, service: ClientFactory
) -> None:
    """Two 451s in a row are retried with backoff: Logto gets 200 sent, attempts are recorded."""
    server = smtp_servers()
    server.reply_next("RCPT", f"451 4.7.1 Message {CODE} greylisted, try later", times=2)
    client = await service(make_config(smtp_json(server.port)))

    response = await client.post("/v1/email", json=signin())
    body = await response.json()

    assert response.status == 200 and body["status"] == "sent"
    assert server.attempts("RCPT") == 3 and len(server.messages) == 1
    status = await (await client.get(f"/v1/messages/{body['id']}")).json()
    assert [a["outcome"] for a in status["attempts"]] == ["transient", "transient", "sent"]
    assert "451" in status["attempts"][0]["error"] and CODE not in str(status)


async def test_http_permanent_failure_answers_502_once_without_the_code(
    smtp_servers: ServerFactory, post_email: Callable[[dict[str, Any]], Awaitable[PostEmail]]
) -> None:
    """A 550 gives 502 provider_rejected after one attempt; the code echoed by the server is hidden."""
    server = smtp_servers()
    server.reply_next("DATA", f"550 5.7.1 Message with {CODE} looks like spam")
    post = await post_email(make_config(smtp_json(server.port)))

    status, body, text = await post(signin())

    assert status == 502
    assert body["error"]["code"] == "provider_rejected"
    assert "550" in body["error"]["message"]
    assert CODE not in text
    assert server.attempts("DATA") == 1 and server.messages == []


# 6. Nothing listening


async def test_connection_refused_is_transient_and_answers_202_queued(
    mailer: Callable[..., Mailer], service: ClientFactory
) -> None:
    """A port with no SMTP server behind it is transient: 202 queued, still ours to deliver."""
    port = free_port()
    sender = mailer(smtp_json(port))

    with pytest.raises(TransientProviderError, match="connection failed"):
        await sender.send()

    config = make_config(smtp_json(port))
    config["delivery"]["wait_seconds"] = 1
    client = await service(config)
    response = await client.post("/v1/email", json=signin())
    body = await response.json()
    assert response.status == 202 and body["status"] == "queued"
    for _ in range(200):  # the 202 can come before the first attempt is recorded
        status = await (await client.get(f"/v1/messages/{body['id']}")).json()
        if status["attempts"]:
            break
        await asyncio.sleep(0.05)
    assert status["status"] == "queued" and status["attempts"]
    assert {a["outcome"] for a in status["attempts"]} == {"transient"}


async def test_silent_server_times_out_as_transient(mailer: Callable[..., Mailer]) -> None:
    """A server that accepts but never greets fails transient after greetingTimeout (in ms)."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    sender = mailer(smtp_json(port, connectionTimeout=100, greetingTimeout=100))
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TransientProviderError, match="timed out"):
            await sender.send()
        assert asyncio.get_running_loop().time() - started < 2
        assert len(accepted) == 1
    finally:
        for writer in accepted:
            writer.close()
        listener.close()
        await listener.wait_closed()


# 7. Connection pooling


async def test_pool_sends_sequential_messages_over_one_connection(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """Ten messages in a row reuse one SMTP connection (one TLS handshake, one AUTH)."""
    server = smtp_servers(require_starttls=True, user=USER, password=PASSWORD)
    sender = mailer(smtp_json(server.port, **login_json(), **tls_json()))

    for i in range(10):
        await sender.send(to=f"user{i}@example.com")

    assert len(server.connections) == 1 and sender.provider.pool.opened == 1
    assert server.attempts("STARTTLS") == 1 and len(server.auth_attempts) == 1
    assert [m.rcpt_tos[0] for m in server.messages] == [f"user{i}@example.com" for i in range(10)]
    assert {m.connection for m in server.messages} == {1}


async def test_pool_concurrent_messages_use_at_most_pool_size_connections(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """Ten concurrent sends never hold more than pool.size connections to the server."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port), size=3)

    await asyncio.gather(*(sender.send(to=f"user{i}@example.com") for i in range(10)))

    assert len(server.connections) <= 3 and server.peak_open <= 3
    assert sender.provider.pool.opened == len(server.connections)
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"user{i}@example.com" for i in range(10)
    )


async def wait_until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    """Wait for a state the server thread changes (no event to await across threads)."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_pool_replaces_connection_closed_by_server_idle_timeout(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """After the server drops an idle pooled connection, the next message goes out exactly once."""
    server = smtp_servers(idle_timeout=0.3)
    sender = mailer(smtp_json(server.port))
    await sender.send(to="first@example.com")

    await wait_until(lambda: server.connections[0].closed)
    await asyncio.sleep(0.05)
    await sender.send(to="second@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["first@example.com"], ["second@example.com"]]
    assert len(server.connections) == 2


async def test_pool_retries_on_new_connection_when_reused_one_was_cut(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A pooled connection cut just before use is replaced within the send, without an error."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port))
    await sender.send(to="first@example.com")

    server.disconnect_all()  # blocks this loop: the client has not noticed when it sends next
    await sender.send(to="second@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["first@example.com"], ["second@example.com"]]
    assert server.messages[1].connection == 2
    assert sender.provider.pool.opened == 2


IDLE_421 = "421 4.4.2 mx.test.example Error: timeout exceeded"


async def test_pool_retries_on_new_connection_when_reused_one_got_421(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A pooled connection closed with Postfix's idle "421 ... timeout" is replaced in the send."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port))
    await sender.send(to="first@example.com")

    server.disconnect_all(reply=IDLE_421)
    await sender.send(to="second@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["first@example.com"], ["second@example.com"]]


async def test_dispatcher_delivers_once_after_idle_connection_got_421(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """Through the dispatcher, a stale pooled connection answered 421 still ends in one delivery."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port))
    await sender.deliver(to="first@example.com")

    server.disconnect_all(reply=IDLE_421)
    _, result = await sender.deliver(to="second@example.com")

    assert result.status == "sent"
    assert [m.rcpt_tos for m in server.messages] == [["first@example.com"], ["second@example.com"]]


async def test_pool_reconnects_after_server_restart_on_same_port(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A restarted SMTP server on the same port gets the next message exactly once."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port))
    await sender.send(to="before@example.com")

    server.restart()
    await sender.send(to="after@example.com")

    assert [m.rcpt_tos for m in server.messages] == [["before@example.com"], ["after@example.com"]]
    assert server.messages[1].connection == 2


async def test_pool_opens_new_connection_after_max_idle_seconds(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A connection idle longer than max_idle_seconds (none kept warm) is closed, then replaced."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port), size=2, max_idle_seconds=0.1, keep_warm=0)
    await sender.send(to="first@example.com")

    await wait_until(lambda: server.connections[0].closed)
    await sender.send(to="second@example.com")

    assert sender.provider.pool.opened == 2
    assert [m.connection for m in server.messages] == [1, 2]


# 8. The connection drops after DATA, before the server answers


async def test_drop_after_data_is_transient(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """No answer to DATA is a transient provider error (no raw socket error), though mail arrived."""
    server = smtp_servers()
    server.reply_next("DATA", DROP)
    sender = mailer(smtp_json(server.port))

    with pytest.raises(TransientProviderError, match="connection failed") as caught:
        await sender.send()

    assert type(caught.value) is TransientProviderError
    assert len(server.messages) == 1  # the server has it; the sender cannot know


async def test_drop_after_data_retry_copies_share_one_message_id(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """When a lost DATA answer leads to a resend, every copy carries the same Message-ID."""
    server = smtp_servers()
    server.reply_next("DATA", DROP)
    sender = mailer(smtp_json(server.port))

    message, result = await sender.deliver()

    assert result.status == "sent"
    assert len(server.messages) >= 1
    ids = {m.message["Message-ID"] for m in server.messages}
    assert ids == {f"<{message.id}@{FROM_DOMAIN}>"}  # receivers can drop the duplicates


async def test_drop_after_data_on_reused_connection_copies_share_one_message_id(
    smtp_servers: ServerFactory, mailer: Callable[..., Mailer]
) -> None:
    """A reused connection dying after DATA does not surface an error; copies share a Message-ID."""
    server = smtp_servers()
    sender = mailer(smtp_json(server.port))
    await sender.send(to="first@example.com")
    server.reply_next("DATA", DROP)

    message, result = await sender.deliver(to="second@example.com")

    assert result.status == "sent"
    copies = [m for m in server.messages if m.rcpt_tos == ["second@example.com"]]
    assert len(copies) >= 1
    assert {m.message["Message-ID"] for m in copies} == {f"<{message.id}@{FROM_DOMAIN}>"}


@pytest.mark.parametrize(("code", "transient"), [(454, True), (535, False)])
def test_auth_refusal_454_is_transient_535_permanent(code: int, transient: bool) -> None:
    """A 454 'too many login attempts' is retried later; a 535 'bad credentials' is not."""
    import aiosmtplib

    from otp_service.providers.smtp import classify

    error = classify(aiosmtplib.SMTPAuthenticationError(code, "4.7.0 Too many login attempts"))
    assert error.transient is transient and "authentication failed" in error.detail
