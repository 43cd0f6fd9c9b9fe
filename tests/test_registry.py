"""One registry names the providers and the intakes: adding one is its modules and its entry.

``otp_service/config/registry.py`` lists every provider (``PROVIDERS``) and every identity
system's hook (``INTAKES``); no other file of the package may name one (in a string, as a config
attribute, or for an intake by importing its modules), except its own modules and its config
model: a provider's ``providers/<name>*.py`` and ``config/<name>.py``, an intake's
``intake/<name>.py`` and ``config/<name>.py``. So a name cannot be hard-coded in a choice list, a
message, a check, the wiring or the OpenAPI document, and a new one needs no edit anywhere else.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from otp_service.config import parse_config, registry
from otp_service.errors import ConfigError
from otp_service.intake.hook import Hook

PACKAGE = Path(__file__).resolve().parent.parent / "otp_service"
# capture is the inbox itself, a concept the whole package speaks of (the capture inbox, the
# capture section, capture mode): it is registered like any provider but not hidden.
CHECKED = [p for p in registry.PROVIDERS if not p.captures]
CHANNELS = {"email", "sms"}
# "generic" is also an English word ("Authentik's generic SMS provider"): that intake is looked
# for only where it is used as a name (the string itself, intakes.generic, /hooks/generic/...).
WORDS = {"generic"}


def allowed(path: Path, name: str) -> bool:
    """The registry, the provider's own modules and its connector model."""
    rel = path.relative_to(PACKAGE).as_posix()
    return rel in ("config/registry.py", f"config/{name}.py") or bool(
        re.fullmatch(rf"providers/{name}(_\w+)?\.py", rel)
    )


def allowed_for_intake(path: Path, name: str) -> bool:
    """The registry, the intake's hook module and its config model."""
    rel = path.relative_to(PACKAGE).as_posix()
    return rel in ("config/registry.py", f"config/{name}.py", f"intake/{name}.py")


def _imported(node: ast.AST) -> list[list[str]]:
    """The package modules an import statement names (relative, or under otp_service)."""
    if isinstance(node, ast.ImportFrom):
        base = (node.module or "").split(".") if node.module else []
        if not node.level and base[:1] != ["otp_service"]:
            return []
        return [base, *([*base, a.name] for a in node.names)]
    if isinstance(node, ast.Import):
        return [a.name.split(".") for a in node.names if a.name.startswith("otp_service.")]
    return []


def mentions(
    path: Path,
    name: str,
    *,
    owners: set[str] = CHANNELS,
    imports: bool = False,
    any_case: bool = False,
) -> list[str]:
    """Where ``path`` names ``name``: in a string (as a word, in any case with ``any_case``;
    for a name in :data:`WORDS` only as a name: alone, ``intakes.<name>``, ``hooks/<name>``;
    never as ``capture.<name>``, the SMTP intake's section),
    as an attribute of a config object in ``owners`` (``config.sms.vonage``,
    ``config.intakes.kratos``), or with ``imports`` by importing a package module called
    ``name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and ast.get_docstring(node) is not None
    }
    if name in WORDS:
        word = re.compile(rf"^{name}$|intakes\.{name}(?![A-Za-z0-9_])|hooks/{name}(?![\w-])")
    else:
        flags = re.IGNORECASE if any_case else 0
        # capture.smtp is the SMTP intake's section (a listener of ours), not the provider
        word = re.compile(rf"(?<![A-Za-z0-9_])(?<!capture\.){name}(?![A-Za-z0-9_])", flags)
    module = re.compile(rf"{name}(_\w+)?")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings and word.search(node.value):
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
        elif isinstance(node, ast.Attribute) and module.fullmatch(node.attr):
            owner = node.value
            if isinstance(owner, ast.Attribute) and owner.attr in owners:
                found.append(f"{path.name}:{node.lineno} .{owner.attr}.{node.attr}")
        elif imports and isinstance(node, ast.Import | ast.ImportFrom):
            for parts in _imported(node):
                if parts and module.fullmatch(parts[-1]):
                    found.append(f"{path.name}:{node.lineno} imports {'.'.join(parts)}")
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


def test_no_file_but_the_registry_names_an_intake() -> None:
    """Outside the registry, an intake's hook module and its config model, no file names it (in
    any case: "ZITADEL" too) or imports them: the routes, the OpenAPI document, the config
    section and the banner are built from the registry entry and the hook. (Providers are
    looked for in lower case only: SMTP is also the protocol the SMTP intake speaks.)"""
    found = [
        f"{intake.name}: {where}"
        for intake in registry.INTAKES
        for path in sorted(PACKAGE.rglob("*.py"))
        if not allowed_for_intake(path, intake.name)
        for where in mentions(path, intake.name, owners={"intakes"}, imports=True, any_case=True)
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


def test_the_scan_finds_a_hard_coded_intake(tmp_path: Path) -> None:
    """The scan would see an intake named in a string, a config attribute or an import, and
    the word "generic" only where it names the intake."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docs may say kratos."""\nfrom ..intake.kratos import KratosHook\n'
        "from ..intake import kratos\nimport otp_service.config.kratos\n"
        'from aiosmtpd import kratos_like\nDOC = {"kratos": "/v1/hooks/kratos/sms"}\n'
        'x = config.intakes.kratos\nERROR = "no Kratos credentials"\n'
    )
    assert len(mentions(sample, "kratos", owners={"intakes"}, imports=True, any_case=True)) == 7
    generic = tmp_path / "generic.py"
    generic.write_text(
        'A = "a generic SMS provider"\nB = "generic"\nC = "see intakes.generic.tokens"\n'
        'D = "send it to /v1/hooks/generic/sms"\nE = config.intakes.generic\n'
    )
    assert len(mentions(generic, "generic", owners={"intakes"}, imports=True)) == 4


def test_every_registered_intake_has_its_hook_and_model_in_its_own_modules() -> None:
    """Each entry's hook is a Hook of that name in ``intake/<name>.py`` with an OpenAPI entry
    for each of its channels, its settings a model in ``config/<name>.py``; one is the
    fallback other hooks point callers to."""
    for intake in registry.INTAKES:
        assert intake.hook.partition(":")[0] == f"otp_service.intake.{intake.name}"
        hook = registry.load(intake.hook)
        assert issubclass(hook, Hook) and hook.name == intake.name
        assert set(hook.channels) <= set(hook.doc.bodies) and hook.doc.summary
        assert intake.model.__module__ == f"otp_service.config.{intake.name}"
    assert len([i for i in registry.INTAKES if i.fallback]) == 1
    assert not set(registry.intake_names()) & set(registry.names())  # config/<name>.py is one


def test_every_registered_provider_has_a_factory() -> None:
    """Each entry names its factory (and its receipt reader's, when it has receipts) in the
    provider's own modules, where the wiring finds it."""
    for p in registry.PROVIDERS:
        paths = [p.build] + ([p.receipts] if p.receipts is not None else [])
        for path in paths:
            module = path.partition(":")[0]
            assert re.fullmatch(rf"otp_service\.providers\.{p.name}(_\w+)?", module), path
            assert callable(registry.load(path)), path
        if p.model is not None:
            assert p.model.__module__ == f"otp_service.config.{p.name}"
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


def test_every_registry_path_names_what_it_builds() -> None:
    """Each entry's ``module:name`` paths (a provider's factory and receipt reader, an intake's
    hook) import and name something callable: a forgotten or misspelt path fails here, not
    when ``serve`` starts with that provider or intake configured."""
    paths = [(p.name, p.build) for p in registry.PROVIDERS]
    paths += [(p.name, p.receipts) for p in registry.PROVIDERS if p.receipts]
    paths += [(i.name, i.hook) for i in registry.INTAKES]
    for name, path in paths:
        assert ":" in path, (name, path)
        assert callable(registry.load(path)), (name, path)
