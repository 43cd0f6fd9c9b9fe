"""Reading untyped config mappings into typed values while collecting every problem.

A ``Fields`` wraps one JSON/YAML object and its path (``email.smtp.auth``); each getter returns a
typed value or a default and records a :class:`ConfigProblem` naming the field and the fix, so
``check-config`` can report all problems at once instead of stopping at the first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigProblem

# Logto's built-in connectors refuse a configuration without these usage types.
REQUIRED_USAGE_TYPES = ("Register", "SignIn", "ForgotPassword", "Generic")


def join(path: str, key: str | int) -> str:
    """The field path of ``key`` under ``path`` (``a.b``, ``a[0]``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Fields:
    """A config object being validated: typed getters that record problems instead of raising."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[ConfigProblem]) -> None:
        self.data = data
        self.path = path
        self.problems = problems

    def problem(self, key: str | int | None, problem: str, fix: str) -> None:
        """Record a problem at ``key`` (or at this object itself when ``key`` is None)."""
        path = self.path if key is None else join(self.path, key)
        self.problems.append(ConfigProblem(path or "<root>", problem, fix))

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def string(
        self,
        key: str,
        *,
        required: bool = False,
        default: str | None = None,
        choices: Iterable[str] | None = None,
        fix: str = "",
    ) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.problem(key, "is required", fix or f"set {key} to a non-empty string")
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            self.problem(key, "must be a non-empty string", fix or f"set {key} to a string")
            return default
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                self.problem(
                    key, f"must be one of {', '.join(allowed)}", f"use one of {', '.join(allowed)}"
                )
                return default
        return value

    def integer(
        self, key: str, *, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            self.problem(key, "must be a whole number", f"set {key} to a number like {default}")
            return default
        number = int(value)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            span = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.problem(key, f"must be {span}", f"set {key} to a number {span}")
            return default
        return number

    def number(self, key: str, *, default: float, minimum: float = 0.0) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            self.problem(key, f"must be a number >= {minimum}", f"set {key} to e.g. {default}")
            return default
        return float(value)

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, "must be true or false", f"write {key}: true or {key}: false")
            return default
        return value

    def optional_boolean(self, key: str) -> bool | None:
        """A boolean that may be left out (None: decided from the rest of the config)."""
        return None if self.data.get(key) is None else self.boolean(key, default=True)

    def obj(self, key: str, *, required: bool = False) -> Fields | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.problem(key, "is required", f"add the {key} object")
            return None
        if not isinstance(value, Mapping):
            self.problem(key, "must be an object", f"make {key} a mapping of keys to values")
            return None
        return Fields(value, join(self.path, key), self.problems)

    def items(self, key: str) -> list[tuple[str, Any]] | None:
        """The entries of a list field, each with its path; None when absent or not a list."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.problem(key, "must be a list", f"make {key} a list")
            return None
        base = join(self.path, key)
        return [(join(base, i), item) for i, item in enumerate(value)]

    def reject_unknown(self, known: Iterable[str]) -> None:
        allowed = set(known)
        for key in self.data:
            if key not in allowed:
                self.problem(
                    str(key),
                    "is not a known setting",
                    f"remove it or check the spelling (known: {', '.join(sorted(allowed))})",
                )

    def require_usage_types(self, present: Iterable[str]) -> None:
        """Record a problem on ``templates`` when a usage type Logto requires is missing."""
        have = set(present)
        missing = [t for t in REQUIRED_USAGE_TYPES if t not in have]
        if missing:
            self.problem(
                "templates",
                f"lacks the usage types {', '.join(missing)} (Logto requires them)",
                "add a template for each of Register, SignIn, ForgotPassword and Generic",
            )
