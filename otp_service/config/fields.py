"""Settings declared once, and read from untyped config mappings while collecting every problem.

Each setting is a field of a ``@section`` class (a frozen dataclass) declared with
:func:`setting`: its name in the file, type (the annotation), default, bounds, choices and help
live there and nowhere else.
:func:`read` turns a mapping into that dataclass, and ``schema.py`` turns the same declarations
into the JSON Schema and the reference table of ``docs/configuration.md``.

Why not pydantic (tried on the ``server`` section): keeping today's messages (path, problem,
fix) needed a translation table for its error types, bounds and union errors that was longer
than the section, and importing it adds 100-250 ms to every command; this table keeps the
messages as they were and adds nothing to start-up.

A :class:`Fields` wraps one JSON/YAML object and its path (``email.smtp.auth``); each getter
returns a typed value or a default and records a :class:`ConfigProblem` naming the field and
the fix, so ``check-config`` can report all problems at once instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import ConfigProblem

# Logto's built-in connectors refuse a configuration without these usage types.
REQUIRED_USAGE_TYPES = ("Register", "SignIn", "ForgotPassword", "Generic")

T = TypeVar("T")
MISSING: Any = dataclasses.MISSING  # no default: the setting is required


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # ``absent`` not given
# A reader for a value the plain types do not cover: (the object holding it, the declaration)
# -> the value; it records its own problems and returns a fallback after one.
Reader = Callable[["Fields", "Declared"], Any]


@dataclass(frozen=True)
class Setting:
    """One setting's declaration (kept in its dataclass field's metadata)."""

    help: str
    key: str | None = None  # the name in the file, when it is not the attribute's (camelCase)
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    fix: str = ""  # how to fix it when it is required and missing (else derived)
    example: Any = None  # a value to suggest when there is no default
    absent: Any = UNSET  # the value when left out, for a field without a dataclass default
    read: Reader | None = None
    schema: Mapping[str, Any] | None = None  # the JSON Schema of what ``read`` accepts
    shown: str | None = None  # the default as the reference shows it (when computed at run time)
    # Several keys read as one value (one per registered provider): key -> its JSON Schema.
    spread: Mapping[str, Mapping[str, Any]] | None = None


def setting(
    help: str,
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
    **declaration: Any,
) -> Any:
    """A dataclass field declared as a setting (``secret``: never shown by ``repr``)."""
    meta = {"setting": Setting(help, **declaration)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, repr=not secret, metadata=meta)
    return dataclasses.field(default=default, repr=not secret, metadata=meta)


@typing.dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, setting))
def section(cls: type[T]) -> type[T]:
    """A frozen dataclass whose fields are declared with :func:`setting`."""
    return dataclass(frozen=True)(cls)


@dataclass(frozen=True)
class Declared:
    """A setting as found on its dataclass: attribute name, file key, type, default."""

    name: str
    key: str
    hint: Any
    setting: Setting
    value: Any  # the default; MISSING when the setting is required
    factory: Callable[[], Any] | None  # or what makes it, when made anew each time

    @property
    def default(self) -> Any:
        return self.factory() if self.factory is not None else self.value

    @property
    def required(self) -> bool:
        return self.value is MISSING and self.factory is None


_DECLARED: dict[type, tuple[Declared, ...]] = {}


def declared(cls: type) -> tuple[Declared, ...]:
    """The settings of a section dataclass, in declaration order."""
    if (known := _DECLARED.get(cls)) is None:
        known = _DECLARED[cls] = _declare(cls)
    return known


def _declare(cls: type) -> tuple[Declared, ...]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        s = f.metadata.get("setting")
        if s is None:
            continue
        factory = None if f.default_factory is MISSING else typing.cast(Any, f.default_factory)
        default = s.absent if f.default is MISSING and s.absent is not UNSET else f.default
        found.append(Declared(f.name, s.key or f.name, hints[f.name], s, default, factory))
    return tuple(found)


def accepted(cls: type) -> Mapping[str, str]:
    """Keys a section accepts and checks nothing of (Logto fields without effect here)."""
    return typing.cast(Mapping[str, str], getattr(cls, "ACCEPTED", {}))


def known_keys(cls: type) -> list[str]:
    keys = [k for d in declared(cls) for k in (d.setting.spread or (d.key,))]
    return keys + list(accepted(cls))


def unwrap(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (hint, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def entry_type(hint: Any) -> type | None:
    """The dataclass of a ``tuple[Entry, ...]`` field, else None."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
            return typing.cast(type, args[0])
    return None


def join(path: str, key: str | int) -> str:
    """The field path of ``key`` under ``path`` (``a.b``, ``a[0]``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def read(cls: type[T], f: Fields, defaults: T | None = None) -> T:
    """Every declared setting of ``cls`` read from ``f``, then its ``checked(f)`` when it has one;
    problems are recorded on ``f`` and the value then holds fallbacks (callers that need a
    valid value compare problem counts). ``defaults``: an instance whose values stand in for
    the declared defaults (one model, several defaults: each abuse limit)."""
    f.reject_unknown(known_keys(cls))
    value = cls(**{d.name: _value(f, d, defaults) for d in declared(cls)})
    checked = getattr(value, "checked", None)  # what no single field says, when a model says it
    return typing.cast(T, checked(f)) if checked is not None else value


def read_optional(cls: type[T], f: Fields, key: str) -> T | None:
    """The section at ``key``: None when absent, or when it has problems (recorded)."""
    sub = f.obj(key)
    if sub is None:
        return None
    before = len(f.problems)
    value = read(cls, sub)
    return value if len(f.problems) == before else None


def read_entries(cls: type[T], f: Fields, key: str, *, required: bool = False) -> list[T] | None:
    """The list at ``key``, each entry an object read as ``cls``; None when absent."""
    entries = f.items(key)
    if entries is None:
        if required:
            f.problem(key, "is required", "paste the templates array of the connector")
        return None
    shape = ", ".join(d.key for d in declared(cls) if d.required)
    result = []
    for path, item in entries:
        entry = Fields(item if isinstance(item, Mapping) else {}, path, f.problems, f.base)
        if not isinstance(item, Mapping):
            entry.problem(None, "must be an object", f"use {{{shape}}}")
            continue
        before = len(f.problems)
        value = read(cls, entry)
        if len(f.problems) == before:
            result.append(value)
    return result


def _value(f: Fields, d: Declared, defaults: Any = None) -> Any:
    s = d.setting
    if s.read is not None:
        return s.read(f, d)
    kind, optional = unwrap(d.hint)
    if d.required and not f.has(d.key) and kind is not str:
        f.problem(d.key, "is required", s.fix or f"set {d.key}")
        return _placeholder(kind, optional)
    default = d.default if defaults is None else getattr(defaults, d.name)
    if kind is bool:
        return f.optional_boolean(d.key) if optional else f.boolean(d.key, default=default)
    if kind is int:
        if optional and not f.has(d.key):
            return None
        fallback = default if default not in (None, MISSING) else s.example or int(s.minimum or 0)
        lo, hi = _bound(s.minimum), _bound(s.maximum)
        return f.integer(d.key, default=fallback, minimum=lo, maximum=hi)
    if kind is float:
        if optional and not f.has(d.key):
            return None
        return f.number(d.key, default=default, minimum=s.minimum or 0.0)
    if kind is str:
        value = f.string(
            d.key, required=d.required, default=None if default is MISSING else default,
            choices=s.choices, fix=s.fix,
        )  # fmt: skip
        if value is None and not optional:
            return "" if default in (None, MISSING) else default
        return value if optional or value else default
    if dataclasses.is_dataclass(kind):
        if optional:
            return read_optional(typing.cast(type, kind), f, d.key)
        sub = f.obj(d.key)
        return default if sub is None else read(typing.cast(type, kind), sub)
    if (entry := entry_type(kind)) is not None:
        return tuple(read_entries(entry, f, d.key) or ())
    raise TypeError(f"{d.name}: declare a reader for {kind!r}")  # a declaration bug


def _bound(value: float | None) -> int | None:
    return None if value is None else int(value)


def _placeholder(kind: Any, optional: bool) -> Any:
    if optional:
        return None
    return {int: 0, float: 0.0, bool: False}.get(kind, ())


class Fields:
    """A config object being validated: typed getters that record problems instead of raising."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        problems: list[ConfigProblem],
        base: Path | None = None,
    ) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.base = base or Path.cwd()  # relative paths in the file start at its folder

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
        return Fields(value, join(self.path, key), self.problems, self.base)

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
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                self.problem(
                    str(key),
                    "is not a known setting",
                    f"{hint}remove it or check the spelling (known: {', '.join(sorted(allowed))})",
                )

    def require_usage_types(self, key: str, present: Iterable[str]) -> None:
        """Record a problem on ``key`` when a usage type Logto requires is missing."""
        have = set(present)
        missing = [t for t in REQUIRED_USAGE_TYPES if t not in have]
        if missing:
            self.problem(
                key,
                f"lacks the usage types {', '.join(missing)} (Logto requires them)",
                "add a template for each of Register, SignIn, ForgotPassword and Generic",
            )
