"""Logto's placeholder rules, on top of Jinja2.

A bare ``{{ path }}`` (``{{code}}``, ``{{ user.profile.givenName }}``, ``{{ a.b.1 }}``) renders as
Logto's connectors render it: the root absent from the payload leaves the placeholder verbatim; a
missing nested key or a null renders empty; a numeric step indexes an array; any other value is
converted to text as JavaScript's ``String()`` would. Anything else between ``{{ }}`` is plain
Jinja2. The rewrite happens in :meth:`LogtoPlaceholders.preprocess`, so template files and
templates pasted in a Logto connector JSON behave alike.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from jinja2 import Undefined
from jinja2.ext import Extension

# A filter, not a global function: filters are looked up in the environment only, so no
# payload key (the payload is the render context) can stand in for it.
FUNCTION = "logto_placeholder"
_SIMPLE = re.compile(r"\{\{(\s*)([A-Za-z_$][\w$]*)((?:\.[\w$]+)*)(\s*)\}\}")
_KEYWORDS = frozenset(
    {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if",
     "else", "loop", "self", "super", "caller", "varargs", "kwargs", FUNCTION}
)  # fmt: skip


def to_text(value: Any) -> str:
    """``value`` as JavaScript's ``String(value)`` renders it (objects as JSON)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return repr(value)
    if isinstance(value, list):
        return ",".join(to_text(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def resolve(root: Any, steps: tuple[str, ...], verbatim: str) -> str:
    """The text of ``root`` followed along ``steps``, by Logto's rules."""
    if isinstance(root, Undefined):
        return verbatim
    value = root
    for step in steps:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return ""
    return to_text(value)


class LogtoPlaceholders(Extension):
    """Rewrites bare ``{{ path }}`` placeholders into a call honouring Logto's rules."""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        environment.filters[FUNCTION] = resolve

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        def rewrite(match: re.Match[str]) -> str:
            root, rest = match.group(2), match.group(3)
            if root in _KEYWORDS or "$" in match.group(0):
                return match.group(0)
            steps = tuple(rest.split(".")[1:])
            verbatim = match.group(0)
            return "{{ (%s)|%s(%r, %r) }}" % (root, FUNCTION, steps, verbatim)  # noqa: UP031

        return _SIMPLE.sub(rewrite, source)
