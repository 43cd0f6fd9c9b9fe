"""Logto's SMTP connector configuration (``email.smtp``), modelled field for field.

An admin pastes the JSON of Logto's SMTP connector (built on nodemailer) as ``email.smtp``;
every field is accepted and validated here, once, into a frozen :class:`SmtpConfig`.
Field meanings: https://nodemailer.com/smtp/ and Logto's connector-smtp.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from typing import Any

from ..text.addresses import Mailbox, parse_mailbox
from ..text.sanitize import has_control
from .fields import Declared, Fields, read, read_entries, section, setting

CONTENT_TYPES = ("text/plain", "text/html")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = frozenset(
    ("from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to", "sender",
     "mime-version", "content-type", "content-transfer-encoding", "return-path")
)  # fmt: skip
_TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_AUTH_TYPES = ("login", "Login", "LOGIN", "oauth2", "OAuth2", "OAUTH2")
_MAILBOX = {"type": "string", "description": '"Name <address>" or address'}
_NO_EFFECT = "accepted, no effect"


@section
class EmailTemplate:
    """One entry of the connector's ``templates`` (each field a placeholder template)."""

    usage_type: str = setting("the usage type (SignIn, Register, ...)", key="usageType")
    content_type: str = setting(
        "text/plain or text/html", key="contentType", absent="text/plain", choices=CONTENT_TYPES
    )
    subject: str = setting("the subject")
    content: str = setting("the body, with {{code}} and Logto's other placeholders")
    reply_to: str | None = setting("a Reply-To for this usage type", default=None, key="replyTo")
    send_from: str | None = setting("a From for this usage type", default=None, key="sendFrom")


@section
class SmtpAuth:
    """``auth``: LOGIN/PLAIN with user and pass, or OAuth2 with an access token (XOAUTH2)."""

    ACCEPTED = dict.fromkeys(
        ("clientId", "clientSecret", "refreshToken", "expires", "accessUrl", "method",
         "serviceClient", "privateKey"),
        "nodemailer's OAuth2 refresh flow: accepted, not run (supply accessToken)",
    )  # fmt: skip

    type: str = setting("login, or oauth2 (any case)", default="login", choices=_AUTH_TYPES)
    user: str | None = setting("the user name (OAuth2: the mailbox)", default=None)
    password: str | None = setting("the password (login)", default=None, key="pass", secret=True)
    access_token: str | None = setting(
        "a ready OAuth2 access token (XOAUTH2)", default=None, key="accessToken", secret=True
    )


def _auth(f: Fields, d: Declared) -> SmtpAuth | None:
    auth = f.obj(d.key)
    if auth is None:
        return None
    value = read(SmtpAuth, auth)
    if value.type.lower() == "oauth2":
        if value.user is None:
            auth.problem("user", "is required for OAuth2", "set auth.user to the mailbox address")
        if value.access_token is None:
            auth.problem(
                "accessToken",
                "is required: otp-service sends XOAUTH2 with a ready access token and does not "
                "run the OAuth2 refresh flow",
                "set auth.accessToken (e.g. ${SMTP_ACCESS_TOKEN}) and rotate it from outside",
            )
        return SmtpAuth("oauth2", value.user, None, value.access_token)
    if (value.user is None) != (value.password is None):
        auth.problem(
            None, "user and pass go together", "set both auth.user and auth.pass, or neither"
        )
    if value.user is None:
        return None  # a relay that trusts the source address
    return SmtpAuth("login", value.user, value.password)


def _ca(f: Fields, d: Declared) -> tuple[str, ...]:
    value = f.data.get(d.key)
    ca: tuple[str, ...] = ()
    if isinstance(value, str):
        ca = (value,)
    elif isinstance(value, list) and all(isinstance(c, str) for c in value):
        ca = tuple(value)
    elif value is not None:
        f.problem(d.key, "must be a PEM string or a list of them", "paste the CA certificate PEM")
    for pem in ca:
        if "BEGIN CERTIFICATE" not in pem:
            f.problem(
                d.key, "is not a PEM certificate", "paste the '-----BEGIN CERTIFICATE-----' text"
            )
    return ca


@section
class SmtpTls:
    """The subset of Node's ``tls`` options that Python's ssl module can honour."""

    reject_unauthorized: bool = setting(
        "verify the server's certificate", default=True, key="rejectUnauthorized"
    )
    ca: tuple[str, ...] = setting(
        "CA certificate(s) to trust instead of the system's (PEM text, or a list)",
        default=(), read=_ca,
        schema={"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                          {"type": "null"}]},
    )  # fmt: skip
    ca_file: str | None = setting("a CA bundle file (PEM)", default=None, key="caFile")
    min_version: str | None = setting(
        "the lowest TLS version", default=None, key="minVersion", choices=_TLS_VERSIONS
    )
    max_version: str | None = setting(
        "the highest TLS version", default=None, key="maxVersion", choices=_TLS_VERSIONS
    )
    ciphers: str | None = setting("an OpenSSL cipher string", default=None)
    servername: str | None = setting("the TLS server name (SNI)", default=None)


def _tls(f: Fields, d: Declared) -> SmtpTls:
    tls = f.obj(d.key)
    if tls is None:
        return SmtpTls()
    before = len(tls.problems)
    result = read(SmtpTls, tls)
    if len(tls.problems) == before:
        _check_tls(tls, result)
    return result


def _check_tls(fields: Fields, tls: SmtpTls) -> None:
    """Build the SSL context once now, so a bad CA or cipher string is a config problem."""
    try:
        context = ssl.create_default_context(
            cafile=tls.ca_file, cadata="\n".join(tls.ca) if tls.ca else None
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        key = "caFile" if tls.ca_file else "ca"
        fields.problem(key, f"cannot be loaded: {exc}", "give a readable PEM CA certificate")
        return
    if tls.ciphers:
        try:
            context.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            fields.problem("ciphers", "selects no usable cipher", "use an OpenSSL cipher string")
    low, high = tls.min_version, tls.max_version
    if low and high and _TLS_VERSIONS.index(low) > _TLS_VERSIONS.index(high):
        fields.problem("minVersion", "is above maxVersion", "swap or widen the two versions")


def _mailbox(f: Fields, d: Declared) -> Mailbox | None:
    key = d.key
    value = f.string(key, required=d.required, fix=f'set {key} to "Name <you@example.com>"')
    if value is not None:
        try:
            return parse_mailbox(value)
        except ValueError as exc:
            f.problem(key, str(exc), 'use an address such as "Acme <no-reply@acme.com>"')
    return Mailbox("") if d.required else None


def _templates(f: Fields, d: Declared) -> tuple[EmailTemplate, ...]:
    entries = read_entries(EmailTemplate, f, d.key)
    if entries is None:
        return ()  # allowed here: template files or the bundled defaults then serve
    if f.data.get(d.key):
        f.require_usage_types(d.key, (t.usage_type for t in entries))
    return tuple(entries)


def _headers(f: Fields, d: Declared) -> tuple[tuple[str, str], ...]:
    headers = f.obj(d.key)
    if headers is None:
        return ()
    result: list[tuple[str, str]] = []
    for name, value in headers.data.items():
        values: list[Any] = value if isinstance(value, list) else [value]
        if not _HEADER_NAME.match(str(name)):
            headers.problem(str(name), "is not a valid header name", "use letters, digits and -")
            continue
        if str(name).lower() in _RESERVED_HEADERS:
            headers.problem(
                str(name), "is set by otp-service itself", "remove it from customHeaders"
            )
            continue
        for item in values:
            if not isinstance(item, str) or has_control(item):
                headers.problem(
                    str(name), "must be a string without line breaks", "put the value on one line"
                )
                continue
            result.append((str(name), item))
    return tuple(result)


def _seconds(f: Fields, d: Declared) -> float:
    """A nodemailer timeout: whole milliseconds in the file, seconds here."""
    return f.integer(d.key, default=int(d.default * 1000), minimum=1) / 1000


def _milliseconds(default: float) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "default": int(default * 1000)}


@section
class SmtpConfig:
    host: str = setting(
        "the SMTP server", fix="set host to your SMTP server, e.g. smtp.example.com"
    )
    port: int = setting(
        "its port", minimum=1, maximum=65535, example=587,
        fix="set port (465 with secure: true, else 587 or 25)",
    )  # fmt: skip
    from_mailbox: Mailbox = setting(
        "the From of every message", key="fromEmail", read=_mailbox, schema=_MAILBOX
    )
    templates: tuple[EmailTemplate, ...] = setting(
        "subject and body per usage type; optional here (template files or the bundled "
        "defaults serve otherwise); if present, Register, SignIn, ForgotPassword and Generic",
        read=_templates, absent=(), schema={"type": "array", "items": EmailTemplate},
    )  # fmt: skip
    auth: SmtpAuth | None = setting(
        "{user, pass}, {type: oauth2, user, accessToken}, or absent for a relay that trusts "
        "the source address",
        default=None, read=_auth, schema={"anyOf": [SmtpAuth, {"type": "null"}]},
    )  # fmt: skip
    reply_to: Mailbox | None = setting(
        "a Reply-To for every message", default=None, key="replyTo", read=_mailbox, schema=_MAILBOX
    )
    secure: bool = setting("implicit TLS (port 465)", default=False)
    require_tls: bool = setting(
        "fail permanently when the server offers no STARTTLS", default=False, key="requireTLS"
    )
    ignore_tls: bool = setting("never upgrade with STARTTLS", default=False, key="ignoreTLS")
    tls: SmtpTls = setting(
        "TLS options (Node's tls subset)", default=SmtpTls(), read=_tls,
        schema={"anyOf": [SmtpTls, {"type": "null"}]},
    )  # fmt: skip
    servername: str | None = setting(
        "the TLS server name when it differs from host (default: tls.servername)", default=None
    )
    name: str | None = setting("the EHLO name (default: this machine's host name)", default=None)
    local_address: str | None = setting(
        "the source address of the connection", default=None, key="localAddress"
    )
    connection_timeout: float = setting(
        "milliseconds to connect", default=120.0, key="connectionTimeout", read=_seconds,
        schema=_milliseconds(120.0),
    )  # fmt: skip
    greeting_timeout: float = setting(
        "milliseconds to wait for the greeting", default=30.0, key="greetingTimeout", read=_seconds,
        schema=_milliseconds(30.0),
    )  # fmt: skip
    socket_timeout: float = setting(
        "milliseconds each command may take", default=600.0, key="socketTimeout", read=_seconds,
        schema=_milliseconds(600.0),
    )  # fmt: skip
    dns_timeout: float = setting(
        _NO_EFFECT, default=30.0, key="dnsTimeout", read=_seconds, schema=_milliseconds(30.0)
    )
    custom_headers: tuple[tuple[str, str], ...] = setting(
        "headers added to every message (a list: the header several times)",
        default=(), key="customHeaders", read=_headers,
        schema={"type": "object", "additionalProperties": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}},
    )  # fmt: skip
    debug: bool = setting(_NO_EFFECT, default=False)
    logger: bool = setting(_NO_EFFECT, default=False)
    disable_file_access: bool = setting(_NO_EFFECT, default=False, key="disableFileAccess")
    disable_url_access: bool = setting(_NO_EFFECT, default=False, key="disableUrlAccess")

    def checked(self, f: Fields) -> SmtpConfig:
        """What no single field says: contradicting TLS switches; the SNI name's default."""
        if self.require_tls and self.ignore_tls:
            f.problem("ignoreTLS", "contradicts requireTLS", "set only one of them to true")
        if self.servername is None and self.tls.servername is not None:
            return dataclasses.replace(self, servername=self.tls.servername)
        return self

    @property
    def target(self) -> str:
        """``host:port``, the key of the connection pool."""
        return f"{self.host}:{self.port}"

    def email_templates(self) -> tuple[EmailTemplate, ...]:
        """The email templates this connector carries."""
        return self.templates


@section
class PoolConfig:
    """SMTP connections kept per server (``email.pool``): opened as messages wait for one, up to
    ``size``; closed after ``max_idle_seconds`` unused, except ``keep_warm`` of them."""

    size: int = setting(
        "the most connections open to the SMTP server at once (20: twenty sign-ins at the same "
        "moment each get their own connection instead of queueing behind another's)",
        default=20, minimum=1, maximum=100,
    )  # fmt: skip
    max_idle_seconds: float = setting(
        "an idle connection is closed after this (keep_warm excepted)", default=30.0, minimum=0.01
    )
    keep_warm: int = setting(
        "connections kept open while idle, with a NOOP every keepalive_seconds, so the first "
        "message after a quiet spell does not wait for a new connection",
        default=1, minimum=0, maximum=100,
    )  # fmt: skip
    keepalive_seconds: float = setting(
        "how often an idle kept-warm connection sends NOOP (servers drop a silent connection "
        "after 5 minutes or more, RFC 5321 4.5.3.2.7)",
        default=60.0, minimum=1.0,
    )  # fmt: skip
    max_noops: int = setting(
        "NOOPs in a row on one connection before it is replaced by a new one (servers count "
        "them: Postfix starts penalising after 100)",
        default=20, minimum=1, maximum=1000,
    )  # fmt: skip
    limit_backoff_seconds: float = setting(
        "after the server refuses a new connection (421 or refused) while others are open, "
        "no more than those are opened for this long",
        default=60.0, minimum=0.0,
    )  # fmt: skip
