"""The ``intakes`` section: hooks other identity systems call to have a code delivered.

Each system is a section of its own under ``intakes`` (``intakes.supabase``, ...), off unless
present: its routes (``POST /v1/hooks/<system>/<channel>``) answer 404 until then. Its secrets
come from the file, usually as ``${ENV}`` references, and are never shown (``secret=True``).
A system's hook is :mod:`otp_service.intake.<system>`; adding one is its section class here
(or in a module of its own), one field on :class:`IntakesConfig`, and its hook
(:mod:`otp_service.intake.hook` says how).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigProblem
from .fields import Declared, Fields, section, setting

_GENERATE = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# Supabase's own check of a hook secret (internal/conf/configuration.go): v1,whsec_ and base64.
_WHSEC = re.compile(r"^(?:v1,)?whsec_([A-Za-z0-9+/=]{32,88})$")
_WHSEC_FIX = (
    "paste the secret as Supabase shows it (Authentication > Hooks > Generate secret), "
    "v1,whsec_ and the base64 of 24 to 64 bytes; several for a rotation: a list"
)


def whsec_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``v1,whsec_<base64>`` or ``whsec_...``);
    ValueError when it is not one (unpadded base64 is accepted, as the reference library does)."""
    match = _WHSEC.match(secret.strip())
    if match is None:
        if secret.strip().startswith("v1a,"):
            raise ValueError("is an asymmetric (v1a) secret, which Supabase does not sign with")
        raise ValueError("is not a Standard Webhooks secret (v1,whsec_ and base64)")
    encoded = match.group(1).rstrip("=")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("holds no valid base64 after whsec_") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"decodes to {len(key)} bytes; a secret holds 24 to 64")
    return key


def _strings(check: Callable[[str], str | None], fix: str) -> Callable[[Fields, Declared], Any]:
    """A reader for a list of secret strings (one string is a list of one; ``|`` separates
    several, as in Supabase's own environment variables), each passed through ``check``,
    which returns what is wrong with it or None. At least one is required."""

    def read(f: Fields, d: Declared) -> tuple[str, ...]:
        raw = f.data.get(d.key)
        if isinstance(raw, str):
            items = [(f"{f.path}.{d.key}", part) for part in raw.split("|")]
        else:
            items = f.items(d.key) or []
        found: list[str] = []
        for path, value in items:
            problem = "must be a string" if not isinstance(value, str) else check(value)
            if problem is not None:
                f.problems.append(ConfigProblem(path, problem, fix))  # never echoes the value
                continue
            found.append(value.strip())
        if not found and not any(p.path.startswith(f"{f.path}.{d.key}") for p in f.problems):
            f.problem(d.key, "is required (at least one)", fix)
        return tuple(found)

    return read


def _url(f: Fields, d: Declared) -> str | None:
    value = f.string(d.key)
    if value is not None and not re.match(r"^https?://[^\s/?#]+[^\s?#]*$", value):
        f.problem(
            d.key,
            "must be an http(s) URL without a query",
            "e.g. https://db.example.com/auth/v1/verify",
        )
        return None
    return value


def _token_problem(token: str) -> str | None:
    if len(token) < 16 or token != token.strip():
        return "must be a string of at least 16 characters without surrounding spaces"
    return None


def _whsec_problem(secret: str) -> str | None:
    try:
        whsec_key(secret)
    except ValueError as exc:
        return str(exc)
    return None


_TOKENS_SCHEMA = {
    "anyOf": [
        {"type": "array", "items": {"type": "string", "minLength": 16}, "minItems": 1},
        {"type": "string", "minLength": 16},
    ]
}


def _tokens(help: str) -> Any:
    return setting(
        help, secret=True, factory=tuple, read=_strings(_token_problem, _GENERATE),
        schema=_TOKENS_SCHEMA, example=["${OTP_HOOK_TOKEN}"],
    )  # fmt: skip


@section
class SupabaseIntakeConfig:
    """Supabase Auth's Send Email and Send SMS hooks (Standard Webhooks signatures)."""

    secrets: tuple[str, ...] = setting(
        "the hook secrets Supabase shows (v1,whsec_...); several: a rotation",
        secret=True, factory=tuple, read=_strings(_whsec_problem, _WHSEC_FIX),
        schema={"anyOf": [
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
            {"type": "string"},
        ]},
        example=["${SUPABASE_HOOK_SECRET}"],
    )  # fmt: skip
    verify_url: str | None = setting(
        "where the links in the messages point (Supabase's /verify endpoint); default: the "
        "hook's site_url + /verify. Self-hosted behind Kong: https://<host>/auth/v1/verify",
        default=None, read=_url, schema={"type": ["string", "null"], "format": "uri"},
    )  # fmt: skip


@section
class AuthentikIntakeConfig:
    """Authentik's generic SMS provider (its SMS authenticator setup stage)."""

    tokens: tuple[str, ...] = _tokens(
        "what Authentik sends: its Auth field as a bearer token, or as the password of basic "
        "auth (any user); several: a rotation"
    )


@section
class GenericIntakeConfig:
    """Any caller: JSON {to, code or message, type, locale} with a bearer token."""

    tokens: tuple[str, ...] = _tokens("bearer tokens the caller sends; several: a rotation")


_ZITADEL_KEY_FIX = (
    "paste the signingKey ZITADEL returned when the HTTP provider was added (or its last "
    "rotation); the SMS and the email provider each have one: list both"
)


def _signing_key_problem(key: str) -> str | None:
    if len(key) < 16 or key != key.strip():
        return "must be a string of at least 16 characters without surrounding spaces"
    return None


@section
class ZitadelIntakeConfig:
    """ZITADEL's HTTP SMS and HTTP email providers (ZITADEL-Signature)."""

    signing_keys: tuple[str, ...] = setting(
        "the signingKey of each ZITADEL HTTP provider (SMS, email); several: a rotation",
        secret=True, factory=tuple, read=_strings(_signing_key_problem, _ZITADEL_KEY_FIX),
        schema=_TOKENS_SCHEMA, example=["${ZITADEL_SMS_SIGNING_KEY}"],
    )  # fmt: skip
    sms_text: str = setting(
        "zitadel: send the SMS text ZITADEL rendered, as is; templates: render ours",
        default="zitadel", choices=("zitadel", "templates"),
    )  # fmt: skip


_KRATOS_FIX = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _long_secret(f: Fields, key: str) -> None:
    value = f.data.get(key)
    if isinstance(value, str) and _token_problem(value) is not None:
        f.problem(key, "must be at least 16 characters without surrounding spaces", _KRATOS_FIX)


@section
class KratosBasicAuthConfig:
    """Kratos's ``auth: {type: basic_auth, config: {user, password}}``."""

    user: str = setting("the user Kratos sends", example="kratos")
    password: str = setting(
        "the password Kratos sends", secret=True, example="${KRATOS_HOOK_PASSWORD}"
    )

    def checked(self, f: Fields) -> KratosBasicAuthConfig:
        _long_secret(f, "password")
        return self


@section
class KratosApiKeyConfig:
    """Kratos's ``auth: {type: api_key, config: {name, value, in}}``."""

    name: str = setting("the header (or cookie) name Kratos sends the key in", example="X-Api-Key")
    value: str = setting(
        "the key Kratos sends, verbatim", secret=True, example="${KRATOS_HOOK_KEY}"
    )
    where: str = setting(
        "header or cookie, as in Kratos's config", default="header", key="in",
        choices=("header", "cookie"),
    )  # fmt: skip

    def checked(self, f: Fields) -> KratosApiKeyConfig:
        _long_secret(f, "value")
        return self


@section
class KratosIntakeConfig:
    """Ory Kratos's courier: HTTP email delivery and the sms channel (basic auth or an API key)."""

    basic_auth: KratosBasicAuthConfig | None = setting(
        "the user and password of Kratos's basic_auth", default=None
    )
    api_key: KratosApiKeyConfig | None = setting(
        "the name, value and place (in) of Kratos's api_key", default=None
    )

    def checked(self, f: Fields) -> KratosIntakeConfig:
        given = [k for k in ("basic_auth", "api_key") if f.data.get(k) is not None]
        if len(given) != 1:
            problem = "sets both basic_auth and api_key" if given else "sets no credentials"
            f.problem(
                None, problem,
                "set exactly one: basic_auth: {user, password} or api_key: {name, value, in}, "
                "as in Kratos's request_config.auth",
            )  # fmt: skip
        return self


@section
class IntakesConfig:
    supabase: SupabaseIntakeConfig | None = setting(
        "Supabase Auth's hooks: POST /v1/hooks/supabase/email and /sms (off unless set)",
        default=None,
    )
    authentik: AuthentikIntakeConfig | None = setting(
        "Authentik's generic SMS provider: POST /v1/hooks/authentik/sms (off unless set)",
        default=None,
    )
    generic: GenericIntakeConfig | None = setting(
        "any caller: POST /v1/hooks/generic/email and /sms (off unless set)", default=None
    )
    zitadel: ZitadelIntakeConfig | None = setting(
        "ZITADEL's HTTP providers: POST /v1/hooks/zitadel/email and /sms (off unless set)",
        default=None,
    )
    kratos: KratosIntakeConfig | None = setting(
        "Ory Kratos's courier: POST /v1/hooks/kratos/email and /sms (off unless set)",
        default=None,
    )
