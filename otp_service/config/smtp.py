"""Logto's SMTP connector configuration, modelled field for field.

An admin pastes the JSON of Logto's SMTP connector (built on nodemailer) as ``email.smtp``;
every field is accepted and validated here, once, into a frozen :class:`SmtpConfig`.
Field meanings: https://nodemailer.com/smtp/ and Logto's connector-smtp.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from ..text.addresses import Mailbox, parse_mailbox
from ..text.sanitize import has_control
from .fields import Fields

CONTENT_TYPES = ("text/plain", "text/html")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = frozenset(
    ("from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to", "sender",
     "mime-version", "content-type", "content-transfer-encoding", "return-path")
)  # fmt: skip
_TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_KNOWN = (
    "host", "port", "auth", "fromEmail", "replyTo", "templates", "secure", "requireTLS",
    "ignoreTLS", "tls", "servername", "name", "localAddress", "connectionTimeout",
    "greetingTimeout", "socketTimeout", "dnsTimeout", "customHeaders", "logger", "debug",
    "disableFileAccess", "disableUrlAccess",
)  # fmt: skip


@dataclass(frozen=True)
class EmailTemplate:
    """One entry of the connector's ``templates`` (each field a placeholder template)."""

    usage_type: str
    content_type: str
    subject: str
    content: str
    reply_to: str | None = None
    send_from: str | None = None


@dataclass(frozen=True)
class SmtpAuth:
    """``auth``: LOGIN/PLAIN with user and pass, or OAuth2 with an access token (XOAUTH2)."""

    type: str = "login"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SmtpTls:
    """The subset of Node's ``tls`` options that Python's ssl module can honour."""

    reject_unauthorized: bool = True
    ca: tuple[str, ...] = ()
    ca_file: str | None = None
    min_version: str | None = None
    max_version: str | None = None
    ciphers: str | None = None
    servername: str | None = None


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    from_mailbox: Mailbox
    templates: tuple[EmailTemplate, ...]
    auth: SmtpAuth | None = None
    reply_to: Mailbox | None = None
    secure: bool = False
    require_tls: bool = False
    ignore_tls: bool = False
    tls: SmtpTls = SmtpTls()
    servername: str | None = None
    name: str | None = None
    local_address: str | None = None
    connection_timeout: float = 120.0
    greeting_timeout: float = 30.0
    socket_timeout: float = 600.0
    custom_headers: tuple[tuple[str, str], ...] = ()
    debug: bool = False

    @property
    def target(self) -> str:
        """``host:port``, the key of the connection pool."""
        return f"{self.host}:{self.port}"


def _mailbox(fields: Fields, key: str, *, required: bool) -> Mailbox | None:
    value = fields.string(key, required=required, fix=f'set {key} to "Name <you@example.com>"')
    if value is None:
        return None
    try:
        return parse_mailbox(value)
    except ValueError as exc:
        fields.problem(key, str(exc), 'use an address such as "Acme <no-reply@acme.com>"')
        return None


def _auth(fields: Fields) -> SmtpAuth | None:
    auth = fields.obj("auth")
    if auth is None:
        return None
    kind = auth.string(
        "type", default="login", choices=("login", "Login", "LOGIN", "oauth2", "OAuth2", "OAUTH2")
    )
    kind = (kind or "login").lower()
    auth.reject_unknown(
        ("type", "user", "pass", "clientId", "clientSecret", "refreshToken", "accessToken",
         "expires", "accessUrl", "method", "serviceClient", "privateKey")
    )  # fmt: skip
    user = auth.string("user")
    if kind == "oauth2":
        token = auth.string("accessToken")
        if user is None:
            auth.problem("user", "is required for OAuth2", "set auth.user to the mailbox address")
        if token is None:
            auth.problem(
                "accessToken",
                "is required: otp-service sends XOAUTH2 with a ready access token and does not "
                "run the OAuth2 refresh flow",
                "set auth.accessToken (e.g. ${SMTP_ACCESS_TOKEN}) and rotate it from outside",
            )
        return SmtpAuth("oauth2", user, None, token)
    password = auth.string("pass")
    if (user is None) != (password is None):
        auth.problem(
            None, "user and pass go together", "set both auth.user and auth.pass, or neither"
        )
    if user is None:
        return None  # a relay that trusts the source address
    return SmtpAuth("login", user, password)


def _tls(fields: Fields) -> SmtpTls:
    tls = fields.obj("tls")
    if tls is None:
        return SmtpTls()
    before = len(tls.problems)
    tls.reject_unknown(
        ("rejectUnauthorized", "ca", "caFile", "minVersion", "maxVersion", "ciphers", "servername")
    )
    ca_value = tls.data.get("ca")
    ca: tuple[str, ...] = ()
    if isinstance(ca_value, str):
        ca = (ca_value,)
    elif isinstance(ca_value, list) and all(isinstance(c, str) for c in ca_value):
        ca = tuple(ca_value)
    elif ca_value is not None:
        tls.problem("ca", "must be a PEM string or a list of them", "paste the CA certificate PEM")
    for pem in ca:
        if "BEGIN CERTIFICATE" not in pem:
            tls.problem(
                "ca", "is not a PEM certificate", "paste the '-----BEGIN CERTIFICATE-----' text"
            )
    result = SmtpTls(
        reject_unauthorized=tls.boolean("rejectUnauthorized", default=True),
        ca=ca,
        ca_file=tls.string("caFile"),
        min_version=tls.string("minVersion", choices=_TLS_VERSIONS),
        max_version=tls.string("maxVersion", choices=_TLS_VERSIONS),
        ciphers=tls.string("ciphers"),
        servername=tls.string("servername"),
    )
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


def _templates(fields: Fields) -> tuple[EmailTemplate, ...]:
    entries = fields.items("templates")
    if entries is None:
        return ()  # allowed here: template files or the bundled defaults then serve
    result: list[EmailTemplate] = []
    for path, item in entries:
        if not isinstance(item, dict):
            fields.problem(path.rsplit(".", 1)[-1], "must be an object", "use {usageType, ...}")
            continue
        entry = Fields(item, path, fields.problems)
        entry.reject_unknown(
            ("usageType", "contentType", "subject", "content", "replyTo", "sendFrom")
        )
        usage = entry.string("usageType", required=True)
        content_type = entry.string("contentType", default="text/plain", choices=CONTENT_TYPES)
        subject = entry.string("subject", required=True)
        content = entry.string("content", required=True)
        if usage and subject is not None and content is not None:
            result.append(
                EmailTemplate(
                    usage,
                    content_type or "text/plain",
                    subject,
                    content,
                    entry.string("replyTo"),
                    entry.string("sendFrom"),
                )
            )
    if entries:
        fields.require_usage_types(t.usage_type for t in result)
    return tuple(result)


def _headers(fields: Fields) -> tuple[tuple[str, str], ...]:
    headers = fields.obj("customHeaders")
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


def parse_smtp_config(fields: Fields) -> SmtpConfig | None:
    """Validate a pasted Logto SMTP connector JSON; None when it has problems (recorded)."""
    before = len(fields.problems)
    fields.reject_unknown(_KNOWN)
    host = fields.string(
        "host", required=True, fix="set host to your SMTP server, e.g. smtp.example.com"
    )
    port = fields.integer("port", default=587, minimum=1, maximum=65535)
    if not fields.has("port"):
        fields.problem("port", "is required", "set port (465 with secure: true, else 587 or 25)")
    from_mailbox = _mailbox(fields, "fromEmail", required=True)
    reply_to = _mailbox(fields, "replyTo", required=False)
    auth = _auth(fields)
    secure = fields.boolean("secure", default=False)
    require_tls = fields.boolean("requireTLS", default=False)
    ignore_tls = fields.boolean("ignoreTLS", default=False)
    if require_tls and ignore_tls:
        fields.problem("ignoreTLS", "contradicts requireTLS", "set only one of them to true")
    tls = _tls(fields)
    for key in ("logger", "debug", "disableFileAccess", "disableUrlAccess"):
        fields.boolean(key, default=False)
    timeouts = {
        key: fields.integer(key, default=default, minimum=1) / 1000
        for key, default in (
            ("connectionTimeout", 120_000),
            ("greetingTimeout", 30_000),
            ("socketTimeout", 600_000),
            ("dnsTimeout", 30_000),
        )
    }
    config = SmtpConfig(
        host=host or "",
        port=port,
        from_mailbox=from_mailbox or Mailbox(""),
        templates=_templates(fields),
        auth=auth,
        reply_to=reply_to,
        secure=secure,
        require_tls=require_tls,
        ignore_tls=ignore_tls,
        tls=tls,
        servername=fields.string("servername") or tls.servername,
        name=fields.string("name"),
        local_address=fields.string("localAddress"),
        connection_timeout=timeouts["connectionTimeout"],
        greeting_timeout=timeouts["greetingTimeout"],
        socket_timeout=timeouts["socketTimeout"],
        custom_headers=_headers(fields),
        debug=fields.boolean("debug", default=False),
    )
    return config if len(fields.problems) == before else None
