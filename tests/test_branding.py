"""Branding in the bundled emails: Logto's application / organization logo and names."""

from __future__ import annotations

from typing import Any

import pytest

from otp_service.config import TemplatesConfig
from otp_service.message.templates import TemplateLibrary

LOCALES = ("en", "fr", "ja", "zh-CN")
LOGO = "https://cdn.example.com/acme.png"
DARK = "https://cdn.example.com/acme-dark.png"


def render(locale: str = "en", usage: str = "SignIn", **payload: Any) -> Any:
    library = TemplateLibrary(TemplatesConfig(brand="Fallback Brand"))
    return library.render_email(usage, {"code": "482913", "locale": locale, **payload})


def app(**branding: str) -> dict[str, Any]:
    return {"id": "a1", "name": "acme-web", "displayName": "Acme", "branding": branding}


@pytest.mark.parametrize("locale", LOCALES)
def test_branding_logo_shown_with_brand_as_alt_in_every_language(locale: str) -> None:
    """An https logo replaces the brand line, with the brand as alt text (images off)."""
    email = render(locale, application=app(logoUrl=LOGO))
    assert f'<img src="{LOGO}" alt="Acme" height="40"' in email.html
    assert "482913" in email.text and LOGO not in email.text
    assert 'content="light"' in email.html and "prefers-color-scheme" not in email.html


@pytest.mark.parametrize("locale", LOCALES)
def test_branding_dark_logo_swapped_in_dark_mode(locale: str) -> None:
    """darkLogoUrl is offered to clients in dark mode, and the email then declares dark mode."""
    html = render(locale, application=app(logoUrl=LOGO, darkLogoUrl=DARK)).html
    assert f'<source srcset="{DARK}" media="(prefers-color-scheme: dark)">' in html
    assert f'<img src="{LOGO}"' in html and 'content="light dark"' in html


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.com/acme.png",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "https:///no-host.png",
        "https://cdn.example.com/a b.png",
        "//cdn.example.com/acme.png",
    ],
)
def test_branding_only_https_logo_urls(url: str) -> None:
    """Anything but a plain https: URL is ignored: the brand name is shown instead."""
    html = render(application=app(logoUrl=url, darkLogoUrl=url)).html
    assert "<img" not in html and url not in html
    assert ">Acme</td>" in html


def test_branding_organization_logo_named_after_organization() -> None:
    """An organization's logo (its sign-in branding) wins, with its name as alt text."""
    organization = {"id": "o1", "name": "Red Team", "branding": {"logoUrl": LOGO}}
    html = render(application=app(logoUrl=DARK), organization=organization).html
    assert f'<img src="{LOGO}" alt="Red Team"' in html and DARK not in html


def test_branding_brand_is_display_name_then_name_then_config() -> None:
    """The brand is the application's displayName, then its name, then templates.brand."""
    assert "Acme" in render(application=app()).subject
    assert "acme-web" in render(application={"name": "acme-web", "displayName": None}).subject
    assert "Fallback Brand" in render().subject


@pytest.mark.parametrize("locale", LOCALES)
def test_branding_invitation_names_organization_and_inviter(locale: str) -> None:
    """Invitations name the organization and who invited, in subject, HTML and text."""
    email = render(
        locale,
        "OrganizationInvitation",
        organization={"id": "o1", "name": "Red Team"},
        inviter={"name": None, "username": None, "primaryEmail": "alice@example.com"},
        link="https://auth.example.com/invitation/abc",
    )
    for part in (email.subject, email.html, email.text):
        assert "Red Team" in part and "alice@example.com" in part
    assert "https://auth.example.com/invitation/abc" in email.text


def test_branding_escapes_names_in_html() -> None:
    """A display name with markup is shown as text, never as HTML."""
    html = render(application={"displayName": '<img src=x onerror="alert(1)">'}).html
    assert "<img src=x" not in html and "&lt;img src=x" in html
