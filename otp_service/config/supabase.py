"""Supabase Auth's Send Email and Send SMS hooks: the ``intakes.supabase`` section (its hook is
:mod:`otp_service.intake.supabase`).
"""

from __future__ import annotations

import base64
import binascii
import re

from .credentials import secret_strings
from .fields import Declared, Fields, section, setting

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


def _whsec_problem(secret: str) -> str | None:
    try:
        whsec_key(secret)
    except ValueError as exc:
        return str(exc)
    return None


@section
class SupabaseIntakeConfig:
    """Supabase Auth's Send Email and Send SMS hooks (Standard Webhooks signatures)."""

    secrets: tuple[str, ...] = setting(
        "the hook secrets Supabase shows (v1,whsec_...); several: a rotation",
        secret=True, factory=tuple, read=secret_strings(_whsec_problem, _WHSEC_FIX),
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
