"""Lists of secrets an identity system's hook is called with (``intakes.<system>``): tokens,
signing keys, hook secrets. One string is a list of one; ``|`` separates several, as in Supabase's
own environment variables; values are never echoed in a problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigProblem
from .fields import Declared, Fields, setting

GENERATE = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def secret_strings(
    check: Callable[[str], str | None], fix: str
) -> Callable[[Fields, Declared], Any]:
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


def token_problem(token: str) -> str | None:
    """What is wrong with a token or key (too short, surrounding spaces), or None."""
    if len(token) < 16 or token != token.strip():
        return "must be a string of at least 16 characters without surrounding spaces"
    return None


TOKENS_SCHEMA = {
    "anyOf": [
        {"type": "array", "items": {"type": "string", "minLength": 16}, "minItems": 1},
        {"type": "string", "minLength": 16},
    ]
}


def tokens(help: str) -> Any:
    """A setting holding bearer tokens (at least 16 characters each); several: a rotation."""
    return setting(
        help, secret=True, factory=tuple, read=secret_strings(token_problem, GENERATE),
        schema=TOKENS_SCHEMA, example=["${OTP_HOOK_TOKEN}"],
    )  # fmt: skip
