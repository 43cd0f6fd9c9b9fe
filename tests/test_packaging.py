"""Packaging: the lock files, the Dockerfile and the compose examples, checked without Docker.

The image is checked here by reading the Dockerfile (what it installs from, who it runs as, its
health check, where it keeps state) and by running the same command line on this machine with
the image's environment, watching where files appear; tests/test_docker_image.py builds and
runs it in a Docker engine.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from otp_service.cli import _parser
from otp_service.config import DeliveryConfig, default_store_path

from .support import ROOT
from .support.command import BIN, http
from .support.ports import free_port
from .support.signin import signin

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def project() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    return data


def pins(lock: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-style lock file."""
    text = (ROOT / lock).read_text(encoding="utf-8").replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert match, f"{lock}: not an exact pin: {line}"
        found[canonicalize_name(match[1])] = (match[2], re.findall(r"--hash=sha256:\w+", line))
    return found


def test_lock_files_pin_every_dependency_of_pyproject_with_hashes() -> None:
    """requirements.lock holds every runtime dependency and requirements-test.lock every test
    one, each at a version pyproject allows, with hashes: a dependency added to pyproject
    without running scripts/lock.sh fails here."""
    meta = project()["project"]
    assert isinstance(meta, dict)
    runtime = [Requirement(r) for r in meta["dependencies"]]
    test = runtime + [Requirement(r) for r in meta["optional-dependencies"]["test"]]
    for lock, wanted in (("requirements.lock", runtime), ("requirements-test.lock", test)):
        locked = pins(lock)
        for requirement in wanted:
            name = canonicalize_name(requirement.name)
            assert name in locked, f"{name} is not in {lock}: run bash scripts/lock.sh"
            version, _ = locked[name]
            assert requirement.specifier.contains(version, prereleases=True), (lock, name)
        assert all(hashes for _, hashes in locked.values()), f"{lock}: a pin without hashes"


def test_lock_files_agree_on_shared_versions() -> None:
    """The image and CI run the same versions of the packages they share."""
    runtime, test = pins("requirements.lock"), pins("requirements-test.lock")
    assert {n: v for n, (v, _) in runtime.items()} == {n: test[n][0] for n in runtime}


def test_ci_and_dockerfile_install_from_the_locks() -> None:
    """scripts/test.sh installs from requirements-test.lock, the image from requirements.lock,
    each with --require-hashes; the package itself is installed without dependencies."""
    script = (ROOT / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements-test.lock" in script
    assert "COPY requirements.lock" in DOCKERFILE
    installs = re.findall(r"pip install ([^\n&]+)", DOCKERFILE)
    assert installs and all(
        "--require-hashes -r requirements.lock" in i or "--no-deps" in i for i in installs
    ), installs
    assert "scripts/lock.sh" in (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")


def instructions() -> list[tuple[str, str]]:
    """The final stage's instructions (after the last FROM), continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    steps = [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]
    last = max(i for i, step in enumerate(steps) if step[0] == "FROM")
    return [(step[0].upper(), step[1] if len(step) > 1 else "") for step in steps[last:]]


def env_of_image() -> dict[str, str]:
    env: dict[str, str] = {}
    for kind, rest in instructions():
        if kind == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_dockerfile_runs_unprivileged_with_a_healthcheck_and_state_in_the_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The image runs as a non-root uid, has a HEALTHCHECK on the served port's /healthz, and
    its default store path is inside its VOLUME (the only writable place with --read-only)."""
    steps = instructions()
    kinds = [kind for kind, _ in steps]
    user = [rest for kind, rest in steps if kind == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    (health,) = [rest for kind, rest in steps if kind == "HEALTHCHECK"]
    cmd = json.loads(dict(steps)["CMD"])
    args = _parser().parse_args(json.loads(dict(steps)["ENTRYPOINT"])[1:] + cmd)
    assert f"127.0.0.1:{args.port}/healthz" in health
    (volume,) = json.loads(dict(steps)["VOLUME"])
    env = env_of_image()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"].startswith(volume) and env["SQLITE_TMPDIR"].startswith(volume)
    monkeypatch.setenv("XDG_STATE_HOME", env["XDG_STATE_HOME"])
    assert default_store_path().startswith(volume + "/"), default_store_path()


@pytest.mark.slow
def test_service_writes_only_in_its_state_folder(tmp_path: Path) -> None:
    """Run as the image runs it (its environment, a config mounted read-only): after a send, the
    only files created are in the state folder, so a read-only root filesystem is enough."""
    env = env_of_image()
    state = tmp_path / "volume"
    state.mkdir()
    workdir, home_tmp = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir(), home_tmp.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("capture: {max_messages: 10}\n", encoding="utf-8")
    environment = {
        "PATH": str(BIN.parent),
        "PYTHONDONTWRITEBYTECODE": env["PYTHONDONTWRITEBYTECODE"],
        "XDG_STATE_HOME": str(tmp_path),  # the image's /var/lib: the store lands in volume/
        "HOME": str(state),
        "SQLITE_TMPDIR": str(state),
        "TMPDIR": str(home_tmp),
    }
    (tmp_path / "otp-service").symlink_to(state)
    port = free_port()
    process = subprocess.Popen(
        [str(BIN), "serve", "--config", str(config), "--port", str(port)],
        cwd=workdir, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        sign_in = signin("alice@example.com", "918273", locale=None)
        assert http("POST", f"http://127.0.0.1:{port}/v1/email", sign_in)[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert list(workdir.iterdir()) == [] and list(home_tmp.iterdir()) == []
    outside = {p.name for p in tmp_path.iterdir()} - {"volume", "cwd", "tmp", "otp-service"}
    assert outside == {"config.yaml"}
    assert (state / "outbox.sqlite3").exists()


def compose_files() -> list[Path]:
    """Every Docker Compose file in examples/: the YAML files with a top-level ``services``."""
    found = []
    for path in sorted((ROOT / "examples").glob("*.y*ml")):
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        if len(documents) == 1 and isinstance(documents[0], dict) and "services" in documents[0]:
            found.append(path)
    return found


def seconds(duration: str) -> int:
    """A compose duration such as ``20s`` or ``1m30s``."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and duration, duration
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def test_compose_files_are_found_in_examples() -> None:
    """The glob below finds the compose files (it is not vacuous)."""
    names = {path.name for path in compose_files()}
    assert {"compose.yaml", "compose-postgres.yaml"} <= names, names


@pytest.mark.parametrize("path", compose_files(), ids=lambda path: path.name)
def test_compose_example_publishes_on_loopback_with_a_long_enough_stop_grace(path: Path) -> None:
    """Every compose file in examples/ publishes every port on 127.0.0.1 only, keeps
    otp-service's root read-only, and gives it a stop grace longer than the mounted config's
    delivery.shutdown_grace_seconds."""
    compose = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    servers = {
        name: service
        for name, service in compose["services"].items()
        if service.get("build") and service.get("command", ["serve"])[0] == "serve"
    }
    assert servers, "no otp-service serve in this compose file"
    for name, service in servers.items():
        assert service.get("read_only") is True, name
        [mounted] = [
            str(v).split(":")[0]
            for v in service["volumes"]
            if str(v).split(":")[1] == "/etc/otp-service/config.yaml"
        ]
        config = yaml.safe_load((path.parent / mounted).read_text(encoding="utf-8"))
        grace = (config.get("delivery") or {}).get(
            "shutdown_grace_seconds", DeliveryConfig().shutdown_grace_seconds
        )
        assert seconds(service["stop_grace_period"]) > grace, (name, grace)
        if "store" not in config:  # SQLite: the outbox must be on a named volume
            assert any(str(v).endswith(":/var/lib/otp-service") for v in service["volumes"])


@pytest.mark.slow
def test_wheel_ships_the_inbox_page_and_templates(tmp_path: Path) -> None:
    """pip builds a wheel holding the inbox page's files and the bundled templates."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    [wheel] = tmp_path.glob("otp_service-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("inbox.html", "inbox.js", "inbox.css"):
        assert f"otp_service/http/static/{name}" in names
    assert "otp_service/_templates/email/en/SignIn.html" in names
