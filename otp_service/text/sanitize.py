"""Input hygiene shared by the request, config and message layers."""

from __future__ import annotations

import re

# C0 controls and DEL: none of them belongs in a header, an address or a display name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control(value: str) -> bool:
    """Whether ``value`` holds a character that could break or inject a header line."""
    return _CONTROL.search(value) is not None


def strip_control(value: str) -> str:
    """``value`` without control characters (CR, LF, TAB, NUL ... and DEL)."""
    return _CONTROL.sub("", value)


def clean_display_name(value: str) -> str:
    """A display name safe for a From/Reply-To header, as Logto's SMTP connector cleans it."""
    return strip_control(value).replace("<", "").replace(">", "").strip()


def mask_email(address: str) -> str:
    """``j***@example.com``: enough for an operator to correlate, not to read an address."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_phone(number: str) -> str:
    """``+86***8000``: the country prefix and the last four digits only."""
    if len(number) < 8:
        return "***"
    return f"{number[:3]}***{number[-4:]}"
