"""The brand an email shows, from the application and organization Logto puts in the payload.

Logto adds ``application`` ``{id, name, displayName, branding: {logoUrl, darkLogoUrl}}`` and
``organization`` ``{id, name, branding: {logoUrl, darkLogoUrl}}`` to email payloads
(docs/logto-contract.md, "The request"). The brand name is the application's ``displayName``,
then its ``name``, then ``templates.brand``. The logo is the organization's when it has one
(Logto shows an organization's branding over its application's on the sign-in page), else the
application's; the dark variant is taken from the same place. Only ``https:`` URLs are used: an
``http:`` image would be mixed content for webmail, and ``data:``/``javascript:`` have no place
in an email.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..text.sanitize import has_control

_MAX_URL = 2048


def image_url(value: Any) -> str | None:
    """``value`` when it is a plain ``https:`` URL with a host, else None."""
    if not isinstance(value, str) or not value or len(value) > _MAX_URL:
        return None
    if has_control(value) or any(c.isspace() for c in value):
        return None
    try:
        url = urlsplit(value)
        host = url.hostname
    except ValueError:
        return None
    return value if url.scheme.lower() == "https" and host else None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def person_name(person: Any) -> str | None:
    """How to name a Logto user (``inviter``): name, then username, then email address."""
    if not isinstance(person, Mapping):
        return None
    return next(
        (v for k in ("name", "username", "primaryEmail") if (v := _text(person.get(k)))), None
    )


def branding(payload: Mapping[str, Any], default_brand: str) -> dict[str, Any]:
    """``brand``, ``logo_url``, ``dark_logo_url``, ``logo_alt`` and ``inviter_name`` for the
    template context."""
    application = payload.get("application")
    application = application if isinstance(application, Mapping) else {}
    brand = _text(application.get("displayName")) or _text(application.get("name"))
    brand = brand or default_brand
    found: dict[str, Any] = {"logo_url": None, "dark_logo_url": None, "logo_alt": brand}
    organization = payload.get("organization")
    owners: list[tuple[Mapping[str, Any], str]] = [(application, brand)]
    if isinstance(organization, Mapping):  # an organization's logo is named after it
        owners.insert(0, (organization, _text(organization.get("name")) or brand))
    for owner, alt in owners:
        marks = owner.get("branding")
        if isinstance(marks, Mapping) and (logo := image_url(marks.get("logoUrl"))):
            dark = image_url(marks.get("darkLogoUrl"))
            found = {"logo_url": logo, "dark_logo_url": dark, "logo_alt": alt}
            break
    return {"brand": brand, **found, "inviter_name": person_name(payload.get("inviter"))}
