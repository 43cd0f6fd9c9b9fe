"""One registry names the providers: adding one is its module, its model and its entry.

``otp_service/config/registry.py`` lists every provider; no other file of the package may name
one (in a string or as a config attribute), except the provider's own modules, its connector
model and the wiring that builds it. So a provider's name cannot be hard-coded in a choice list,
a message or a check elsewhere, and a new provider needs no edit anywhere else.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from otp_service.config import parse_config, registry
from otp_service.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent.parent / "otp_service"
# capture is the inbox itself, a concept the whole package speaks of (the capture inbox, the
# capture section, capture mode): it is registered like any provider but not hidden.
CHECKED = [p for p in registry.PROVIDERS if not p.captures]
CHANNELS = {"email", "sms"}


def allowed(path: Path, name: str) -> bool:
    """The registry, the provider's own modules and its connector model."""
    rel = path.relative_to(PACKAGE).as_posix()
    return rel in ("config/registry.py", f"config/{name}.py") or bool(
        re.fullmatch(rf"providers/{name}(_\w+)?\.py", rel)
    )


def mentions(path: Path, name: str) -> list[str]:
    """Where ``path`` names provider ``name``: in a string, or as a channel config attribute."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and ast.get_docstring(node) is not None
    }
    word = re.compile(rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings and word.search(node.value):
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
        elif isinstance(node, ast.Attribute) and re.fullmatch(rf"{name}(_\w+)?", node.attr):
            owner = node.value
            if isinstance(owner, ast.Attribute) and owner.attr in CHANNELS:
                found.append(f"{path.name}:{node.lineno} .{owner.attr}.{node.attr}")
    return found


def test_no_file_but_the_registry_names_a_provider() -> None:
    """Outside the registry and a provider's own modules, no file names it (the wiring
    builds each from its registry entry)."""
    found = [
        f"{provider.name}: {where}"
        for provider in CHECKED
        for path in sorted(PACKAGE.rglob("*.py"))
        if not allowed(path, provider.name)
        for where in mentions(path, provider.name)
    ]
    assert found == []


def test_the_scan_finds_a_hard_coded_name(tmp_path: Path) -> None:
    """The scan above would see a provider named in a choice list or a config attribute."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docs may say vonage."""\nCHOICES = ("capture", "vonage")\n'
        "x = config.sms.vonage_concurrency\ny = config.capture.vonage\n"
    )
    assert len(mentions(sample, "vonage")) == 2


def test_every_registered_provider_has_a_factory() -> None:
    """Each entry names its factory (and its receipt reader's, when it has receipts) in the
    provider's own modules, where the wiring finds it."""
    for p in registry.PROVIDERS:
        paths = [p.build] + ([p.receipts] if p.receipts is not None else [])
        for path in paths:
            module = path.partition(":")[0]
            assert re.fullmatch(rf"otp_service\.providers\.{p.name}(_\w+)?", module), path
            assert callable(registry.load(path)), path
    assert {p.name for p in registry.PROVIDERS if p.calls_back} <= {
        p.name for p in registry.PROVIDERS if p.receipts is not None
    }


def test_a_registered_provider_is_a_choice_everywhere_it_belongs() -> None:
    """The registry drives the choices: every SMS provider is a valid sms.provider, route
    entry and provider_rate key; anything else is refused, naming the known ones."""
    for p in registry.on("sms"):
        assert p.name in registry.names("sms")
    with_rates = {p.name: 5 for p in registry.PROVIDERS}
    assert dict(parse_config({"limits": {"provider_rate": with_rates}}).limits.provider_rate)
    try:
        parse_config({"sms": {"provider": "plivo"}})
    except ConfigError as exc:
        [problem] = exc.problems
        assert all(p.name in problem.problem for p in registry.on("sms"))
    else:
        raise AssertionError("an unregistered provider was accepted")
