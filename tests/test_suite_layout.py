"""The test suite's own layout: test modules import shared code from ``tests/support``, never
from one another; ``conftest.py`` holds fixtures; the markers the quick run leaves out are set.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from .support.markers import MARKER_FOR_FIXTURE

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
QUICK = "not slow and not browser and not postgres"


def _is_test_module(parts: list[str]) -> bool:
    """``parts``: a dotted module name split; whether it names a test module or conftest of
    this suite (``tests.test_*``, ``tests.conftest``, also in a sub-package)."""
    return (
        len(parts) > 1
        and parts[0] == "tests"
        and (parts[-1].startswith("test_") or parts[-1] == "conftest")
    )


def imported_test_modules(source: str, package: list[str]) -> list[str]:
    """The test modules (``test_*``) and conftests that ``source``, a module of ``package``
    (e.g. ``["tests"]``), imports, relatively or absolutely."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".") if node.module else []
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *module]
            else:
                target = module
            names = [target] + [[*target, alias.name] for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        found += [".".join(name) for name in names if _is_test_module(name)]
    return found


def test_suite_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/support; a test module (or a support module) that imports
    a test module or conftest couples the two and runs the other's module-level code."""
    wrong = {}
    for path in sorted(TESTS.rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        package = list(path.relative_to(TESTS.parent).parent.parts)
        if found := imported_test_modules(path.read_text(encoding="utf-8"), package):
            wrong[str(path.relative_to(TESTS))] = found
    assert wrong == {}, "move what they share into tests/support/"


def test_suite_top_folder_holds_only_tests_and_conftest() -> None:
    """Everything that is not a test module or a fixture goes into tests/support/."""
    top = {p.name for p in TESTS.glob("*.py")}
    assert {n for n in top if not n.startswith("test_")} == {"__init__.py", "conftest.py"}


def test_suite_import_reader_sees_test_module_imports() -> None:
    """The reader above catches every spelling of such an import, so it cannot pass vacuously."""
    source = "\n".join([
        "from .test_crash import Processes",
        "from tests.test_cli import BIN",
        "from . import test_api",
        "from .conftest import ClientFactory",
        "import tests.test_api",
        "from .. import conftest",
        "from .support.processes import Processes",
        "from .support import pg",
        "import pytest",
        "from aiohttp.test_utils import TestClient",
    ])  # fmt: skip
    assert imported_test_modules(source, ["tests", "support"]) == [
        "tests.support.test_crash",
        "tests.test_cli",
        "tests.support.test_api",
        "tests.support.conftest",
        "tests.test_api",
        "tests.conftest",
    ]
    assert imported_test_modules("from .test_crash import X", ["tests"]) == ["tests.test_crash"]


def test_suite_tests_needing_a_server_a_browser_or_processes_are_marked(
    request: pytest.FixtureRequest,
) -> None:
    """The quick run (``-m "not slow and not browser and not postgres"``) needs no PostgreSQL,
    no Chromium and starts no service process: a test using such a fixture carries the mark."""
    unmarked = [
        f"{item.nodeid} uses {fixture} but is not marked {marker}"
        for item in request.session.items
        for fixture, marker in MARKER_FOR_FIXTURE.items()
        if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None
    ]
    assert unmarked == []


@pytest.mark.parametrize("fixture", ["pg_schema", "processes", "services"])  # conftest's
def test_suite_a_fixture_needing_a_marker_taken_on_the_way_fails_an_unmarked_test(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    """The check above sees fixtures asked for by name; one taken on the way (a per-backend
    fixture takes pg_schema for its marked PostgreSQL parameter only) is refused at set-up when
    the test lacks the mark, before it reaches the server or starts a process."""
    marker = MARKER_FOR_FIXTURE[fixture]
    with pytest.raises(AssertionError, match=f"uses {fixture} but is not marked {marker}"):
        request.getfixturevalue(fixture)


def test_suite_full_run_deselects_nothing_and_quick_run_leaves_out_the_marked() -> None:
    """scripts/test.sh (so CI) runs every test: neither its pytest command nor the configured
    options select by marker, keyword or path; scripts/quick.sh leaves out exactly the three
    registered markers."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    options = pyproject["tool"]["pytest"]["ini_options"]
    assert {line.split(":")[0] for line in options["markers"]} == {"slow", "browser", "postgres"}
    script = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8").splitlines()
    commands = [line for line in script if "pytest" in line and not line.lstrip().startswith("#")]
    assert commands == [".venv/bin/pytest"]
    selecting = re.compile(r"(^|\s)(-m|-k|--deselect|--ignore\S*)(\s|=|$)")
    assert not selecting.search(options["addopts"]), options["addopts"]
    quick = (ROOT / "scripts" / "quick.sh").read_text(encoding="utf-8")
    assert f'-m "{QUICK}"' in quick
