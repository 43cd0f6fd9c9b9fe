"""The request bodies Logto's HTTP email and SMS connectors send (``POST /v1/email|sms``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CODE = "482913"
ANA = "ana@example.com"


def signin(
    to: str = ANA,
    code: str = CODE,
    *,
    usage: str = "SignIn",
    locale: str | None = "en",
    payload: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """``{"to", "type", "payload": {"code", "locale", **payload}, **extra}``.

    ``usage``: Logto's usage type; ``locale=None`` leaves the locale out (as Logto does when
    the user has none); ``payload`` adds keys to the payload (``user``, ``application``,
    ``link`` ...); ``extra`` adds top-level keys (``ip``, ``ttl``).
    """
    body: dict[str, Any] = {"code": code}
    if locale is not None:
        body["locale"] = locale
    return {"to": to, "type": usage, "payload": {**body, **(payload or {})}, **extra}
