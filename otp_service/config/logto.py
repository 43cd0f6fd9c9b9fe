"""``templates.logto``: where to read the email templates an admin keeps inside Logto.

A machine-to-machine app of the Logto instance reads ``GET /api/email-templates`` with a
client-credentials token (docs/logto-contract.md, "Logto's own per-language email
templates"). The secret is never shown: not in ``repr``, not in problems, not in logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .fields import Fields

DEFAULT_RESOURCE = "https://default.logto.app/api"  # a self-hosted Logto's Management API


@dataclass(frozen=True)
class LogtoConfig:
    endpoint: str  # the Logto instance, without a trailing slash
    app_id: str
    app_secret: str = field(repr=False)
    resource: str = DEFAULT_RESOURCE
    refresh_seconds: float = 300.0
    timeout_seconds: float = 10.0  # one HTTP request to Logto


def _url(f: Fields, key: str, value: str) -> str:
    try:
        url = urlsplit(value)
        host = url.hostname
    except ValueError:
        url, host = urlsplit(""), None
    if url.scheme not in ("http", "https") or not host or url.query or url.fragment:
        f.problem(key, "must be an http(s) URL without query", "e.g. https://auth.example.com")
    return value.rstrip("/")


def parse_logto(f: Fields) -> LogtoConfig:
    """Validate ``templates.logto``; problems are recorded on ``f``."""
    f.reject_unknown(
        ("endpoint", "app_id", "app_secret", "resource", "refresh_seconds", "timeout_seconds")
    )
    endpoint = f.string("endpoint", required=True, fix="set it to your Logto URL") or ""
    resource = f.string("resource", default=DEFAULT_RESOURCE) or DEFAULT_RESOURCE
    fix = "copy it from Logto's console: Applications > your machine-to-machine app"
    return LogtoConfig(
        endpoint=_url(f, "endpoint", endpoint) if endpoint else "",
        app_id=f.string("app_id", required=True, fix=fix) or "",
        app_secret=f.string("app_secret", required=True, fix=fix) or "",
        resource=_url(f, "resource", resource) if resource != DEFAULT_RESOURCE else resource,
        refresh_seconds=f.number("refresh_seconds", default=300.0, minimum=0.1),
        timeout_seconds=f.number("timeout_seconds", default=10.0, minimum=0.1),
    )
