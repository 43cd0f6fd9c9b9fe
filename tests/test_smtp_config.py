"""The Logto SMTP connector JSON as ``email.smtp``: what is accepted, and how mistakes are told.

An admin pastes the connector's JSON from Logto's console; every mistake must come back as a
ConfigError problem that names the exact field path and says how to fix it, all at once.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from otp_service.config import Config, parse_config
from otp_service.errors import ConfigError, ConfigProblem
from otp_service.text.addresses import Mailbox

PASSWORD = "pw-Secr3t-5f2a9c"
LOGTO_TEMPLATES = [
    {
        "contentType": "text/plain",
        "content": "Your Logto sign-in verification code is {{code}}. "
        "The code will remain active for 10 minutes.",
        "subject": "Logto Sign In with SMTP",
        "usageType": "SignIn",
    },
    {
        "contentType": "text/plain",
        "content": "Your Logto sign-up verification code is {{code}}. "
        "The code will remain active for 10 minutes.",
        "subject": "Logto register with SMTP",
        "usageType": "Register",
    },
    {
        "contentType": "text/plain",
        "content": "Your Logto password change verification code is {{code}}. "
        "The code will remain active for 10 minutes.",
        "subject": "Logto Forgot Password with SMTP",
        "usageType": "ForgotPassword",
    },
    {
        "contentType": "text/plain",
        "content": "Your Logto verification code is {{code}}. "
        "The code will remain active for 10 minutes.",
        "subject": "Logto Generic with SMTP",
        "usageType": "Generic",
    },
]
# Every field Logto's SMTP connector form offers, filled in as an admin would.
LOGTO_SMTP: dict[str, Any] = {
    "host": "smtp.sendgrid.net",
    "port": 587,
    "auth": {"type": "login", "user": "apikey", "pass": PASSWORD},
    "fromEmail": "Acme Sign-in <no-reply@acme.example>",
    "replyTo": "support@acme.example",
    "templates": [
        *LOGTO_TEMPLATES,
        {
            "contentType": "text/html",
            "content": "<p>Join {{organization.name}}: <a href='{{link}}'>accept</a></p>",
            "subject": "You are invited",
            "usageType": "OrganizationInvitation",
        },
    ],
    "logger": False,
    "debug": False,
    "disableFileAccess": False,
    "disableUrlAccess": False,
    "name": "otp.acme.example",
    "localAddress": "127.0.0.1",
    "connectionTimeout": 120000,
    "greetingTimeout": 30000,
    "socketTimeout": 600000,
    "dnsTimeout": 30000,
    "secure": False,
    "tls": {"rejectUnauthorized": True, "minVersion": "TLSv1.2"},
    "servername": "smtp.sendgrid.net",
    "ignoreTLS": False,
    "requireTLS": True,
    "customHeaders": {"X-SMTPAPI": '{"category": "otp"}'},
}


def smtp_document(smtp: dict[str, Any]) -> dict[str, Any]:
    return {"email": {"provider": "smtp", "smtp": smtp}}


def with_changes(**changes: Any) -> dict[str, Any]:
    """LOGTO_SMTP with keys replaced (a value of ``...`` deletes the key)."""
    smtp = copy.deepcopy(LOGTO_SMTP)
    for key, value in changes.items():
        if value is ...:
            del smtp[key]
        else:
            smtp[key] = value
    return smtp


def problems_of(document: dict[str, Any]) -> dict[str, ConfigProblem]:
    """The problems parse_config reports, by field path (the test fails if it accepts)."""
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    for problem in caught.value.problems:
        assert problem.fix.strip(), f"{problem.path} has no fix"
    assert PASSWORD not in str(caught.value)
    return {problem.path: problem for problem in caught.value.problems}


def test_pasted_logto_smtp_json_is_accepted_field_for_field() -> None:
    """The complete JSON from Logto's SMTP connector parses into the matching settings."""
    config = parse_config(smtp_document(copy.deepcopy(LOGTO_SMTP)))

    smtp = config.email.smtp
    assert config.email.provider == "smtp" and smtp is not None
    assert (smtp.host, smtp.port, smtp.target) == (
        "smtp.sendgrid.net",
        587,
        "smtp.sendgrid.net:587",
    )
    assert smtp.from_mailbox == Mailbox("no-reply@acme.example", "Acme Sign-in")
    assert smtp.reply_to == Mailbox("support@acme.example")
    assert smtp.auth is not None
    assert (smtp.auth.type, smtp.auth.user, smtp.auth.password) == ("login", "apikey", PASSWORD)
    assert (smtp.secure, smtp.require_tls, smtp.ignore_tls) == (False, True, False)
    assert smtp.tls.reject_unauthorized and smtp.tls.min_version == "TLSv1.2"
    assert smtp.servername == "smtp.sendgrid.net" and smtp.name == "otp.acme.example"
    assert smtp.local_address == "127.0.0.1"
    assert (smtp.connection_timeout, smtp.greeting_timeout, smtp.socket_timeout) == (
        120.0,
        30.0,
        600.0,
    )
    assert smtp.custom_headers == (("X-SMTPAPI", '{"category": "otp"}'),)
    assert [(t.usage_type, t.content_type) for t in smtp.templates] == [
        ("SignIn", "text/plain"),
        ("Register", "text/plain"),
        ("ForgotPassword", "text/plain"),
        ("Generic", "text/plain"),
        ("OrganizationInvitation", "text/html"),
    ]
    assert smtp.templates[0].subject == "Logto Sign In with SMTP"
    assert "{{code}}" in smtp.templates[0].content


def test_logto_console_defaults_are_accepted() -> None:
    """The connector as Logto's console first fills it in (empty tls, default auth) is valid."""
    smtp = {
        "host": "smtp.example.com",
        "port": 25,
        "auth": {"type": "login", "user": "mailer", "pass": PASSWORD},
        "fromEmail": "no-reply@example.com",
        "templates": LOGTO_TEMPLATES,
        "logger": False,
        "debug": False,
        "disableFileAccess": False,
        "disableUrlAccess": False,
        "secure": False,
        "tls": {},
    }

    parsed = parse_config(smtp_document(smtp)).email.smtp

    assert parsed is not None
    assert parsed.port == 25 and parsed.tls.reject_unauthorized
    assert parsed.connection_timeout == 120.0  # nodemailer's default, in seconds


def test_password_is_not_shown_in_the_config_repr() -> None:
    """Printing or logging the parsed config never shows the SMTP password."""
    config = parse_config(smtp_document(copy.deepcopy(LOGTO_SMTP)))

    assert PASSWORD not in repr(config)
    assert PASSWORD not in str(config.email.smtp)


@pytest.mark.parametrize(
    ("smtp", "path", "wording"),
    [
        (with_changes(host=...), "email.smtp.host", "is required"),
        (with_changes(port=...), "email.smtp.port", "is required"),
        (with_changes(port="587"), "email.smtp.port", "whole number"),
        (with_changes(port=70000), "email.smtp.port", "between 1 and 65535"),
        (with_changes(fromEmail="no-reply at acme"), "email.smtp.fromEmail", "email address"),
        (with_changes(replyTo="Support <support@>"), "email.smtp.replyTo", "email address"),
        (with_changes(auth={"user": 42, "pass": PASSWORD}), "email.smtp.auth.user", "string"),
        (with_changes(auth={"user": "apikey"}), "email.smtp.auth", "user and pass go together"),
        (
            with_changes(auth={"type": "oauth2", "user": "me@acme.example"}),
            "email.smtp.auth.accessToken",
            "is required",
        ),
        (
            with_changes(auth={"type": "ntlm", "user": "u", "pass": PASSWORD}),
            "email.smtp.auth.type",
            "must be one of",
        ),
        (with_changes(secure="true"), "email.smtp.secure", "true or false"),
        (with_changes(ignoreTLS=True), "email.smtp.ignoreTLS", "contradicts requireTLS"),
        (with_changes(tls={"ca": "MIIC..."}), "email.smtp.tls.ca", "PEM"),
        (with_changes(tls={"minVersion": "SSLv3"}), "email.smtp.tls.minVersion", "one of"),
        (with_changes(connectionTimeout=0), "email.smtp.connectionTimeout", ">= 1"),
        (with_changes(socketTimeout="10m"), "email.smtp.socketTimeout", "whole number"),
        (with_changes(templates="SignIn"), "email.smtp.templates", "must be a list"),
        (
            with_changes(templates=[*LOGTO_TEMPLATES, {"usageType": "Test", "content": "x"}]),
            "email.smtp.templates[4].subject",
            "is required",
        ),
        (
            with_changes(templates=[{**LOGTO_TEMPLATES[0], "contentType": "text/markdown"}]),
            "email.smtp.templates[0].contentType",
            "text/plain, text/html",
        ),
        (
            with_changes(customHeaders={"Subject": "Your code"}),
            "email.smtp.customHeaders.Subject",
            "set by otp-service",
        ),
        (
            with_changes(customHeaders={"X Campaign": "otp"}),
            "email.smtp.customHeaders.X Campaign",
            "not a valid header name",
        ),
        (
            with_changes(customHeaders={"X-Note": "hi\r\nBcc: victim@example.com"}),
            "email.smtp.customHeaders.X-Note",
            "without line breaks",
        ),
    ],
)
def test_invalid_field_is_reported_at_its_path(
    smtp: dict[str, Any], path: str, wording: str
) -> None:
    """Each invalid field is a ConfigError problem at its exact path, with a fix."""
    problems = problems_of(smtp_document(smtp))

    assert path in problems, f"expected a problem at {path}, got {sorted(problems)}"
    assert wording in problems[path].problem


@pytest.mark.parametrize("missing", ["Register", "SignIn", "ForgotPassword", "Generic"])
def test_templates_without_a_required_usage_type_are_reported(missing: str) -> None:
    """Templates lacking one of Logto's required usage types name the missing one."""
    templates = [t for t in LOGTO_TEMPLATES if t["usageType"] != missing]

    problems = problems_of(smtp_document(with_changes(templates=templates)))

    assert missing in problems["email.smtp.templates"].problem
    assert set(problems) == {"email.smtp.templates"}


@pytest.mark.parametrize(
    ("smtp", "path"),
    [
        (with_changes(hostname="smtp.example.com"), "email.smtp.hostname"),
        (
            with_changes(auth={"user": "u", "pass": PASSWORD, "password": "x"}),
            "email.smtp.auth.password",
        ),
        (with_changes(tls={"rejectUnauthorised": False}), "email.smtp.tls.rejectUnauthorised"),
        (
            with_changes(templates=[{**t, "sendfrom": "x@acme.example"} for t in LOGTO_TEMPLATES]),
            "email.smtp.templates[0].sendfrom",
        ),
    ],
)
def test_unknown_key_is_reported_with_the_known_ones(smtp: dict[str, Any], path: str) -> None:
    """A misspelt key is not silently ignored: it is reported, listing the keys that exist."""
    problems = problems_of(smtp_document(smtp))

    assert path in problems, f"expected a problem at {path}, got {sorted(problems)}"
    assert problems[path].problem == "is not a known setting"
    assert "known:" in problems[path].fix


def test_every_problem_is_reported_at_once() -> None:
    """Several mistakes come back together, each at its own path, in one ConfigError."""
    smtp = with_changes(port="25", fromEmail="nobody", customHeaders={"To": "x@example.com"})

    problems = problems_of(smtp_document(smtp))

    assert {"email.smtp.port", "email.smtp.fromEmail", "email.smtp.customHeaders.To"} <= set(
        problems
    )


def test_smtp_provider_without_smtp_section_is_reported() -> None:
    """Choosing provider smtp without pasting the connector JSON is reported at email.smtp."""
    problems = problems_of({"email": {"provider": "smtp"}})

    assert problems["email.smtp"].problem == "is required"


def test_invalid_pool_size_is_reported() -> None:
    """email.pool.size outside 1..100 is reported at its path."""
    document = smtp_document(copy.deepcopy(LOGTO_SMTP))
    document["email"]["pool"] = {"size": 0}

    problems = problems_of(document)

    assert "between 1 and 100" in problems["email.pool.size"].problem


def test_env_reference_in_auth_pass_is_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    """auth.pass "${SMTP_PASS}" takes the password from the environment."""
    monkeypatch.setenv("SMTP_PASS", PASSWORD)
    smtp = with_changes(auth={"user": "apikey", "pass": "${SMTP_PASS}"})

    config: Config = parse_config(smtp_document(smtp))

    assert config.email.smtp is not None and config.email.smtp.auth is not None
    assert config.email.smtp.auth.password == PASSWORD


def test_env_reference_default_is_used_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """${SMTP_USER:-apikey} falls back to its default when the variable is not set."""
    monkeypatch.delenv("SMTP_USER", raising=False)
    smtp = with_changes(auth={"user": "${SMTP_USER:-apikey}", "pass": PASSWORD})

    config = parse_config(smtp_document(smtp))

    assert config.email.smtp is not None and config.email.smtp.auth is not None
    assert config.email.smtp.auth.user == "apikey"


def test_unset_env_reference_is_reported_at_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset ${SMTP_PASS} is a problem at email.smtp.auth.pass saying what to export."""
    monkeypatch.delenv("SMTP_PASS", raising=False)
    smtp = with_changes(auth={"user": "apikey", "pass": "${SMTP_PASS}"})

    problems = problems_of(smtp_document(smtp))

    problem = problems["email.smtp.auth.pass"]
    assert "${SMTP_PASS}" in problem.problem and "not set" in problem.problem
    assert "SMTP_PASS" in problem.fix


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("login", "login"),
        ("LOGIN", "login"),
        ("Login", "login"),
        ("oauth2", "oauth2"),
        ("OAuth2", "oauth2"),
        ("OAUTH2", "oauth2"),
    ],
)
def test_auth_type_accepts_every_spelling_logto_accepts(kind: str, expected: str) -> None:
    """auth.type in any spelling Logto's connector accepts (login/Login/LOGIN, oauth2/...)."""
    auth = {"type": kind, "user": "me@acme.example", "pass": PASSWORD, "accessToken": "tok"}
    if expected == "login":
        del auth["accessToken"]
    else:
        del auth["pass"]

    config = parse_config(smtp_document(with_changes(auth=auth)))

    assert config.email.smtp is not None and config.email.smtp.auth is not None
    assert config.email.smtp.auth.type == expected


def test_provider_rate_names_a_known_provider() -> None:
    """A misspelt provider under limits.provider_rate is reported, not silently ignored."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"limits": {"provider_rate": {"vonnage": 5}}})
    assert [p.path for p in caught.value.problems] == ["limits.provider_rate.vonnage"]
