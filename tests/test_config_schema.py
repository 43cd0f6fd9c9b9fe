"""The config file's JSON Schema and reference table, made from the settings' declarations.

Editors check a config file against ``otp-service config schema``; ``docs/configuration.md``
is ``otp-service config docs``. Both must describe what ``parse_config`` accepts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from otp_service.config import parse_config
from otp_service.config.schema import json_schema, reference
from otp_service.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = set(json_schema()["properties"])


def example_configs() -> list[tuple[str, Any]]:
    """Every otp-service config in examples/: whole files, and the one in the ConfigMap."""
    found = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(document, dict):
                continue
            if document.get("kind") == "ConfigMap":
                embedded = yaml.safe_load(document["data"]["config.yaml"])
                found.append((f"{path.name} (ConfigMap)", embedded))
            elif set(document) <= SECTIONS:
                found.append((path.name, document))
    return found


def readme_configs() -> list[tuple[str, Any]]:
    """The YAML blocks of the README and the docs/ pages that are whole config files (not
    those with ``...`` gaps)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
            if "..." in block:
                continue  # an excerpt, with gaps
            document = yaml.safe_load(block)
            if isinstance(document, dict) and document and set(document) <= SECTIONS:
                found.append((f"{path.name} block {index}", document))
    return found


def validator() -> Any:
    return jsonschema_rs.Draft202012Validator(json_schema())


def test_examples_include_the_config_files() -> None:
    """The scan finds the example configs (so the next test cannot pass on an empty list)."""
    names = {name for name, _ in example_configs()}
    assert {"config.yaml", "postgres.yaml", "mailpit.yaml", "kubernetes.yaml (ConfigMap)"} <= names


def test_docs_show_config_files() -> None:
    """The docs scan finds the SMS, limits and Logto examples (so none is skipped unseen)."""
    assert len(readme_configs()) >= 3


@pytest.mark.parametrize(
    ("name", "document"), example_configs() + readme_configs(), ids=lambda v: str(v)[:30]
)
def test_every_example_config_matches_the_schema(name: str, document: Any) -> None:
    """Each example config (examples/ and the README) validates against the schema an editor
    would use."""
    errors = [f"{list(e.instance_path)}: {e.message}" for e in validator().iter_errors(document)]
    assert errors == [], name


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"server": {"prot": 8787}}, ["server"]),
        ({"server": {"port": "eighty"}}, ["server", "port"]),
        ({"server": {"port": 70000}}, ["server", "port"]),
        ({"sms": {"provider": "plivo"}}, ["sms", "provider"]),
        ({"email": {"provider": "smtp", "smtp": {"port": 587}}}, ["email", "smtp"]),
        ({"email": {"smtp": {"host": "h", "port": 25, "fromEmail": "a@b.c",
                             "templates": [{"usageType": "SignIn"}]}}},
         ["email", "smtp", "templates", 0]),
        ({"sms": {"routes": [{"prefixes": ["86"], "providers": ["vonage"]}]}},
         ["sms", "routes", 0, "prefixes", 0]),
        ({"limits": {"provider_rate": {"vonnage": 5}}}, ["limits", "provider_rate"]),
    ],
)  # fmt: skip
def test_a_wrong_config_fails_the_schema_where_it_is_wrong(
    document: dict[str, Any], where: list[Any]
) -> None:
    """A misspelt key, a wrong type, a bound or an unknown provider fails at its location."""
    paths = [list(e.instance_path) for e in validator().iter_errors(document)]
    assert where in paths, paths


def test_what_the_schema_refuses_the_parser_refuses_too() -> None:
    """The schema and parse_config agree on a wrong file (both refuse it)."""
    document = {"server": {"port": 70000}, "sms": {"provider": "plivo"}}
    assert not validator().is_valid(document)
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert {p.path for p in caught.value.problems} == {"server.port", "sms.provider"}


def test_env_references_are_allowed_where_a_number_is_expected() -> None:
    """``port: ${PORT}`` is a string in the file and a number once expanded: both validate."""
    assert validator().is_valid({"server": {"port": "${PORT:-8787}", "drain_seconds": 2}})


@pytest.mark.slow
def test_config_schema_command_prints_the_schema() -> None:
    """``otp-service config schema`` prints a draft 2020-12 JSON Schema with every section."""
    result = subprocess.run(
        [sys.executable, "-m", "otp_service", "config", "schema"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    printed = json.loads(result.stdout)
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"server", "email", "sms", "store", "limits"} <= set(printed["properties"])
    assert printed == json_schema()


def test_committed_schema_is_up_to_date() -> None:
    """docs/config.schema.json (which the example configs point their editors at) is what
    ``otp-service config schema`` prints (regenerate it so)."""
    committed = json.loads((ROOT / "docs" / "config.schema.json").read_text(encoding="utf-8"))
    assert committed == json_schema(), "run: otp-service config schema > docs/config.schema.json"
    first = (ROOT / "examples" / "config.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../docs/config.schema.json"


def test_configuration_reference_is_up_to_date() -> None:
    """docs/configuration.md is what ``otp-service config docs`` prints (regenerate it so)."""
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference(), "run: otp-service config docs > docs/configuration.md"


def test_reference_lists_every_setting_with_its_default_and_bounds() -> None:
    """The table shows each setting's path, default and bounds (a sample of each kind)."""
    table = reference()
    assert "| `server.port` | integer | `8787` | >= 0, <= 65535 |" in table
    assert "| `email.smtp.port` | integer | required | >= 1, <= 65535 |" in table
    assert "| `sms.vonage_concurrency` | integer | `16` | >= 1, <= 256 |" in table
    assert "`email.smtp.connectionTimeout` | integer | `120000` |" in table


def test_misspelt_key_is_refused_with_the_closest_known_one() -> None:
    """An unknown key's fix suggests the setting it most likely meant, and lists them all."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"delivery": {"timeout_second": 5}})
    [problem] = caught.value.problems
    assert (problem.path, problem.problem) == ("delivery.timeout_second", "is not a known setting")
    assert problem.fix.startswith("did you mean timeout_seconds?") and "known:" in problem.fix
