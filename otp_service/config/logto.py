"""``templates.logto``: where to read the email templates an admin keeps inside Logto.

A machine-to-machine app of the Logto instance reads ``GET /api/email-templates`` with a
client-credentials token (docs/logto-contract.md, "Logto's own per-language email
templates"). The secret is never shown: not in ``repr``, not in problems, not in logs.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .fields import Declared, Fields, section, setting

DEFAULT_RESOURCE = "https://default.logto.app/api"  # a self-hosted Logto's Management API
_APP = "copy it from Logto's console: Applications > your machine-to-machine app"


def _url(f: Fields, d: Declared) -> str:
    key, default = d.key, None if d.required else d.default
    value = f.string(key, required=d.required, default=default, fix=d.setting.fix)
    if value is None or value == default:
        return value or ""
    try:
        url = urlsplit(value)
        host = url.hostname
    except ValueError:
        url, host = urlsplit(""), None
    if url.scheme not in ("http", "https") or not host or url.query or url.fragment:
        f.problem(key, "must be an http(s) URL without query", "e.g. https://auth.example.com")
    return value.rstrip("/")


_URL = {"type": "string", "format": "uri"}


@section
class LogtoConfig:
    endpoint: str = setting(
        "Logto's core endpoint (the tenant's, where users sign in, e.g. "
        "https://auth.example.com), not the admin console's",
        read=_url, schema=_URL, fix="set it to your Logto core endpoint",
    )  # fmt: skip
    app_id: str = setting("a machine-to-machine app's id", fix=_APP)
    app_secret: str = setting("that app's secret", secret=True, fix=_APP)
    resource: str = setting(
        "the Management API's resource indicator", default=DEFAULT_RESOURCE, read=_url, schema=_URL
    )
    refresh_seconds: float = setting(
        "how often the templates are read again", default=300.0, minimum=0.1
    )
    timeout_seconds: float = setting("one HTTP request to Logto", default=10.0, minimum=0.1)
