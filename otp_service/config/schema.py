"""The config file described from its declarations: a JSON Schema and a reference table.

``otp-service config schema`` prints the schema (draft 2020-12) for editors: the YAML
language server completes and checks a file that starts with
``# yaml-language-server: $schema=<the schema's path or URL>``. ``otp-service config docs``
prints the table of ``docs/configuration.md``. Both come from the same :func:`~.fields.setting`
declarations that parse the file, so they cannot drift from it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from .fields import Declared, accepted, declared, entry_type, unwrap
from .settings import Config

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# A whole value that is one ${VAR} reference: any type once expanded, a string in the file.
_ENV_ONLY = {"type": "string", "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}$"}
_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file."""
    defs: dict[str, Any] = {}
    root = _object(Config, defs)
    return {
        "$schema": DRAFT,
        "title": "otp-service configuration",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def _object(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required = []
    for d in declared(cls):
        if d.setting.spread is not None:
            for key, each in d.setting.spread.items():
                properties[key] = _resolve(each, defs)
            continue
        properties[d.key] = _property(d, defs)
        if d.required:
            required.append(d.key)
    for key, text in accepted(cls).items():
        properties[key] = {"description": text}
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if (doc := (cls.__doc__ or "").strip()) and not doc.startswith(cls.__name__ + "("):
        schema["description"] = doc.split("\n\n")[0].replace("\n", " ")
    schema["properties"] = properties
    if required:
        schema["required"] = required
    return schema


def _ref(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    if cls.__name__ not in defs:
        defs[cls.__name__] = {}  # placed first: a model may refer to itself
        defs[cls.__name__] = _object(cls, defs)
    return {"$ref": f"#/$defs/{cls.__name__}"}


def _resolve(schema: Any, defs: dict[str, Any]) -> Any:
    """A declared schema with each model class in it replaced by a reference to its object."""
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        return _ref(schema, defs)
    if isinstance(schema, Mapping):
        resolved = {k: _resolve(v, defs) for k, v in schema.items()}
        ref = resolved.get("$ref")
        return {**resolved, **ref} if isinstance(ref, dict) else resolved
    if isinstance(schema, list):
        return [_resolve(v, defs) for v in schema]
    return schema


def _property(d: Declared, defs: dict[str, Any]) -> dict[str, Any]:
    s = d.setting
    kind, optional = unwrap(d.hint)
    schema: dict[str, Any]
    if s.schema is not None:
        schema = dict(_resolve(s.schema, defs))
    elif kind in _SCALARS:
        schema = {"type": _SCALARS[kind]}
        if s.choices is not None:
            schema["enum"] = list(s.choices)
        if s.minimum is not None:
            schema["minimum"] = s.minimum
        if s.maximum is not None:
            schema["maximum"] = s.maximum
    elif dataclasses.is_dataclass(kind):
        schema = _ref(typing.cast(type, kind), defs)
    elif (entry := entry_type(kind)) is not None:
        schema = {"type": "array", "items": _ref(entry, defs)}
    else:
        raise TypeError(f"{d.name}: declare the schema of {kind!r}")  # a declaration bug
    default = None if s.shown else _json(d.default)  # shown: computed where it runs
    if default is not None and "default" not in schema and (default != [] or _is_list(d)):
        schema["default"] = default
    schema["description"] = s.help + (f" (default: {s.shown})" if s.shown else "")
    expanded = schema.get("type") in ("integer", "number", "boolean")
    if not d.required or optional:
        schema = _nullable(schema)
    if expanded:
        schema = {"anyOf": [{k: v for k, v in schema.items() if k != "description"}, _ENV_ONLY],
                  "description": schema["description"]}  # fmt: skip
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """Left out and ``null`` mean the same: the default."""
    kind = schema.get("type")
    if isinstance(kind, str):
        if "enum" in schema:
            return {**schema, "enum": [*schema["enum"], None], "type": [kind, "null"]}
        return {**schema, "type": [kind, "null"]}
    return schema


def _json(value: Any) -> Any:
    """A default as JSON, when it is plain data (a nested section's default is not shown)."""
    if value is dataclasses.MISSING or value is None or dataclasses.is_dataclass(value):
        return None
    if isinstance(value, tuple | frozenset | list):
        return None if value else []
    if isinstance(value, bool | int | float | str):
        return value
    return None


# The reference table


def reference() -> str:
    """``docs/configuration.md``: every setting with its type, default, bounds and help."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `otp-service config docs` from the settings' declarations in",
        "`otp_service/config/`; do not edit by hand (a test fails when it is stale).",
        "`otp-service config schema` prints the same as a JSON Schema for editors.",
        "",
        "Every key may be left out or set to `null` for its default. A string value may use",
        "`${VAR}` or `${VAR:-default}` to read the environment. Unknown keys are refused.",
    ]
    for title, cls in _sections():
        lines += ["", f"## `{title}`", ""]
        if (doc := (cls.__doc__ or "").strip()) and not doc.startswith(cls.__name__ + "("):
            lines += [doc.split("\n\n")[0].replace("\n", " "), ""]
        lines += [
            "| Setting | Type | Default | Allowed | Meaning |",
            "| --- | --- | --- | --- | --- |",
        ]
        for d in declared(cls):
            if d.setting.spread is not None:
                for key, schema in d.setting.spread.items():
                    lines.append(_spread_row(title, key, schema))
                continue
            lines.append(_row(title, d))
        for key, text in accepted(cls).items():
            lines.append(f"| `{title}.{key}` | any | | | {_cell(text)} |")
    return "\n".join(lines) + "\n"


def _sections() -> Iterator[tuple[str, type]]:
    """Every section, depth first: (its path, its model); a list's entries as ``path[]``."""
    seen: set[type] = set()

    def walk(path: str, cls: type) -> Iterator[tuple[str, type]]:
        if cls in seen:
            return
        seen.add(cls)
        yield path, cls
        for d in declared(cls):
            here = f"{path}.{d.key}" if path else d.key
            if isinstance((d.setting.schema or {}).get("properties"), Mapping):
                here += ".<provider>"  # one object per provider, all alike
            for model in _models(d):
                yield from walk(here + ("[]" if _is_list(d) else ""), model)
            for key, schema in (d.setting.spread or {}).items():
                for model in _in(schema):
                    yield from walk(f"{path}.{key}", model)

    for d in declared(Config):
        kind, _ = unwrap(d.hint)
        yield from walk(d.key, kind)


def _models(d: Declared) -> list[type]:
    kind, _ = unwrap(d.hint)
    if d.setting.schema is not None:
        return _in(d.setting.schema)
    if dataclasses.is_dataclass(kind):
        return [typing.cast(type, kind)]
    entry = entry_type(kind)
    return [entry] if entry is not None else []


def _in(schema: Any) -> list[type]:
    if isinstance(schema, type) and dataclasses.is_dataclass(schema):
        return [schema]
    if isinstance(schema, Mapping):
        return [m for v in schema.values() for m in _in(v)]
    if isinstance(schema, list):
        return [m for v in schema for m in _in(v)]
    return []


def _is_list(d: Declared) -> bool:
    kind, _ = unwrap(d.hint)
    schema = d.setting.schema or {}
    return entry_type(kind) is not None or schema.get("type") == "array"


def _row(path: str, d: Declared) -> str:
    s = d.setting
    kind, _ = unwrap(d.hint)
    schema = _property(d, {})
    typename = _typename(schema, kind)
    if d.required:
        default = "required"
    elif s.shown:
        default = s.shown if " " in s.shown else f"`{s.shown}`"  # prose, or a value
    else:
        default = _shown(schema.get("default", d.default if _is_list(d) else None))
        default = default or (_shown(d.default) if dataclasses.is_dataclass(d.default) else "")
        default = default or _shown(schema.get("anyOf", [{}])[0].get("default"))
    allowed = []
    if s.choices:
        allowed.append(", ".join(f"`{c}`" for c in s.choices))
    if s.minimum is not None:
        allowed.append(f">= {_number(s.minimum)}")
    if s.maximum is not None:
        allowed.append(f"<= {_number(s.maximum)}")
    return f"| `{path}.{d.key}` | {typename} | {default} | {', '.join(allowed)} | {_cell(s.help)} |"


def _spread_row(path: str, key: str, schema: Mapping[str, Any]) -> str:
    model = schema.get("$ref")
    typename = "object" if model is not None else str(schema.get("type", "any"))
    default = _shown(schema.get("default"))
    bounds = [f">= {schema['minimum']}"] if "minimum" in schema else []
    bounds += [f"<= {schema['maximum']}"] if "maximum" in schema else []
    text = _cell(schema.get("description", ""))
    return f"| `{path}.{key}` | {typename} | {default} | {', '.join(bounds)} | {text} |"


def _typename(schema: Mapping[str, Any], kind: Any) -> str:
    if "anyOf" in schema:
        kinds = [_typename(s, kind) for s in schema["anyOf"] if s is not _ENV_ONLY]
        return " or ".join(k for k in dict.fromkeys(kinds) if k != "null")
    if "$ref" in schema:
        return "object"
    kind_of = schema.get("type", "any")
    if isinstance(kind_of, list):
        kind_of = next((k for k in kind_of if k != "null"), "any")
    if kind_of == "array":
        items = schema.get("items", {})
        if "enum" in items:
            return "list of " + " or ".join(f"`{v}`" for v in items["enum"])
        return f"list of {_typename(items, None)}s" if items else "list"
    if "enum" in schema and kind_of == "any":
        return " or ".join(json.dumps(v) for v in schema["enum"])
    return str(kind_of)


def _shown(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain = {k: _json(v) for k, v in dataclasses.asdict(value).items()}
        if all(v is not None for v in plain.values()):  # a small object: each limit's own
            return "`" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in plain.items()) + "`"
    value = _json(value)
    if value is None:
        return ""
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell (``<locale>`` is not an HTML tag there)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
