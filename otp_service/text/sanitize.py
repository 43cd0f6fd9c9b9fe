"""Input hygiene shared by the request, config and message layers."""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls, DEL, and every other line or paragraph break Unicode knows (NEL is
# U+0085, a C1 control): none of them belongs in a header, an address or a display name; some
# mail libraries and clients treat them as line ends. Lone surrogates cannot be encoded at all.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_JSON_DEPTH = 32


def has_control(value: str) -> bool:
    """Whether ``value`` holds a character that could break or inject a header line."""
    return _CONTROL.search(value) is not None


def strip_control(value: str) -> str:
    """``value`` without control characters (CR, LF, TAB, NUL, DEL, C1, U+2028/2029)."""
    return _CONTROL.sub("", value)


def json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a decoded JSON document cannot be taken as text (a lone surrogate, which no
    encoding can write, in a string or a key; nesting deeper than ``max_depth``), or None.
    Iterative: a hostile document cannot exhaust the stack here."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return "a string holds a lone surrogate (invalid Unicode)"
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                return f"nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
    return None


# How a lone surrogate gets into decoded JSON: a \\u escape of one, or one in the text itself
# (a charset such as unicode_escape can make one). A valid pair matches too: the walk decides.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def json_text_may_hold_problem(text: str, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """False when ``text`` (JSON) cannot decode to anything :func:`json_problem` refuses: no
    escaped surrogate, and too few brackets to nest ``max_depth`` deep (each level opens one).
    A cheap look at the text that spares the walk of the usual small body."""
    brackets = text.count("{") + text.count("[")
    return brackets >= max_depth or _ESCAPED_SURROGATE.search(text) is not None


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
