"""The package's folders form layers: imports between folders only point down, never in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "otp_service"

# Highest first; a folder may import only folders after it. A request flows http -> message ->
# delivery -> providers / store. message/ defines the Message value the later stages receive, so
# it sits below them as a dependency; logto/ (Logto's Management API, read for the email templates
# kept in Logto) feeds message/ the way config/ does, so it sits between them; config/ and the
# pure text/ helpers are the foundation. intake/ (the SMTP intake) is a second door into the
# capture inbox, just below http/.
LAYERS = [
    "admin",
    "http",
    "intake",
    "delivery",
    "providers",
    "store",
    "message",
    "logto",
    "config",
    "text",
]


def _imports(path: Path) -> set[str]:
    """The otp_service sub-packages ``path`` imports (absolute or relative)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = list(parts[:-1])  # a module and an __init__ both resolve from their folder
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module or "").split(".")] if node.module else base
                names = [target] if node.module else [[*base, a.name] for a in node.names]
            else:
                names = [(node.module or "").split(".")]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        else:
            continue
        for name in names:
            if len(name) >= 2 and name[0] == "otp_service":
                found.add(name[1])
    return found


def folder_imports() -> dict[str, set[str]]:
    """For each folder of the package, the other folders (and top modules) it imports."""
    graph: dict[str, set[str]] = {}
    for folder in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        targets: set[str] = set()
        for module in folder.rglob("*.py"):
            targets |= _imports(module)
        graph[folder.name] = targets - {folder.name}
    return graph


def test_layout_every_folder_is_a_known_layer() -> None:
    """A new folder must be placed in the layer order, so its imports are checked too."""
    assert set(folder_imports()) == set(LAYERS)


def test_layout_imports_between_folders_point_down() -> None:
    """A folder imports only folders below it, so no two folders can import each other."""
    graph = folder_imports()
    wrong = [
        f"{folder} imports {target}"
        for folder, targets in graph.items()
        for target in targets
        if target in LAYERS and LAYERS.index(target) <= LAYERS.index(folder)
    ]
    assert wrong == []


def test_layout_folders_never_import_the_wiring_or_cli() -> None:
    """Only cli.py and services.py wire the folders together; no folder reaches up into them."""
    graph = folder_imports()
    wrong = [f"{f} imports {t}" for f, ts in graph.items() for t in ts if t in {"cli", "__main__"}]
    assert wrong == []


def test_layout_only_the_app_factory_and_admin_commands_import_the_wiring() -> None:
    """Nothing in http/ imports the wiring module (services.py) except the app factory
    (http/app.py), which hands the rest of http/ its services (http/context.py); admin/ takes
    the library from it in its commands. No other folder module reaches up into it."""
    importing = sorted(
        str(module.relative_to(PACKAGE))
        for folder in PACKAGE.iterdir()
        if (folder / "__init__.py").exists()
        for module in folder.rglob("*.py")
        if "services" in _imports(module)
    )
    assert importing == ["admin/commands.py", "http/app.py"]


def test_layout_top_level_holds_few_modules() -> None:
    """The package's top level stays small: the wiring, CLI, workers, and what every layer
    shares (errors, logs, metrics, retry)."""
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top <= {
        "__init__.py", "__main__.py", "cli.py", "errors.py", "logs.py", "metrics.py",
        "retry.py", "services.py", "workers.py",
    }  # fmt: skip


def test_layout_import_reader_sees_relative_imports() -> None:
    """The import reader sees relative imports, so the layer check above cannot pass vacuously."""
    module = PACKAGE / "store" / "sqlite.py"
    assert "message" in _imports(module)
    assert "delivery" in _imports(PACKAGE / "http" / "app.py")
