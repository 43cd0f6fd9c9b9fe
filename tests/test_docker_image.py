"""The Docker image, built from the real Dockerfile and run by a real Docker engine.

Needs an engine: scripts/test.sh installs Debian's docker.io and starts dockerd (without a bridge
network or iptables rules: nothing here needs them) when it runs as root. Without one this test
fails; it is never skipped. The base image python:3.11-slim is
pulled when a registry answers; where none does, scripts/base-image.sh makes a stand-in from
Debian packages (the test's output says which base was used).

The build runs with ``--network host`` so pip reaches the package index the host reaches (the
host's own index, when pip is configured with one, is passed as the PIP_INDEX_URL build arg);
the containers run with ``--network host`` on a free loopback port, so nothing but 127.0.0.1 is
ever addressed. The layer cache stays between runs (the test's image tag is removed with
``--no-prune``, and the base image is kept like any pulled base); the test's containers, volume
and image tag are removed at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support.ports import free_port

pytestmark = pytest.mark.slow  # builds and runs the Docker image

ROOT = Path(__file__).resolve().parent.parent
BASE = "python:3.11-slim"
UID = 10001  # the Dockerfile's USER
TOKEN = secrets.token_hex(24)
CODE = "482913"
TO = "docker-user@example.com"
CONFIG = f"""\
auth:
  tokens: ["{TOKEN}"]
email:
  provider: capture
sms:
  provider: capture
"""


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        output = (result.stdout[-3000:] + "\n" + result.stderr[-3000:]).strip()
        pytest.fail(f"docker {args[0]} failed ({result.returncode}):\n{output}")
    return result


def http(method: str, url: str, body: Any = None, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def host_index_url() -> str | None:
    """The package index pip uses on this host, when it is configured with one (not PyPI's
    default): the build then uses the same one."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        url = result.stdout.strip() if result.returncode == 0 else None
    return url if url and url.startswith(("http://", "https://")) else None


def engine() -> str:
    """The engine's version, or the test fails saying how to get one."""
    if shutil.which("docker") is None:
        pytest.fail("no docker command: scripts/test.sh installs docker.io (as root)")
    info = docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    if info.returncode != 0 or not info.stdout.strip():
        pytest.fail(
            "no Docker engine answers (scripts/test.sh starts dockerd as root): "
            + info.stderr.strip()[-500:]
        )
    return info.stdout.strip()


def base_image() -> str:
    """Make sure python:3.11-slim is there; say where it came from."""
    if docker("pull", BASE, timeout=120, check=False).returncode == 0:
        return f"{BASE} pulled from the registry"
    found = docker("image", "inspect", "--format", "{{json .RepoDigests}}", BASE, check=False)
    if found.returncode == 0:
        if json.loads(found.stdout):
            return f"{BASE} pulled earlier (the registry does not answer now)"
        return f"the stand-in {BASE} made earlier by scripts/base-image.sh (no registry)"
    made = subprocess.run(
        ["bash", str(ROOT / "scripts" / "base-image.sh")],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    return f"the stand-in {BASE} made now by scripts/base-image.sh (no registry)"


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Iterator[str]:
    """The image built from the Dockerfile, tagged for this run; the tag goes at the end (its
    layers stay as the build cache)."""
    version = engine()
    base = base_image()
    tag = f"otp-service:pytest-{secrets.token_hex(4)}"
    args = ["build", "--network", "host", "--tag", tag]
    index = host_index_url()
    if index is not None:
        args += ["--build-arg", f"PIP_INDEX_URL={index}"]
    started = time.monotonic()
    docker(*args, str(ROOT), timeout=1800)
    built = time.monotonic() - started
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        index_note = "the host's pip index" if index is not None else "pip's default index"
        print(f"\n[docker] engine {version}; base: {base}; {index_note}; built in {built:.0f} s")
    try:
        yield tag
    finally:
        docker("image", "rm", "--no-prune", tag, check=False)


class Containers:
    """The containers and the volume of one test, removed at the end."""

    def __init__(self, image: str, config: Path) -> None:
        self.image = image
        self.config = config
        self.volume = f"otp-pytest-{secrets.token_hex(4)}"
        self.names: list[str] = []
        docker("volume", "create", self.volume)

    def run(self, port: int) -> str:
        name = f"otp-pytest-{secrets.token_hex(4)}"
        self.names.append(name)
        docker(
            "run", "--detach", "--name", name, "--read-only", "--network", "host",
            "--volume", f"{self.volume}:/var/lib/otp-service",
            "--volume", f"{self.config}:/etc/otp-service/config.yaml:ro",
            "--env", f"OTP_SERVICE_HEALTHCHECK_URL=http://127.0.0.1:{port}/healthz",
            # The image's own check command, asked every second instead of every 30 s.
            "--health-interval", "1s",
            self.image,
            "serve", "--config", "/etc/otp-service/config.yaml",
            "--host", "127.0.0.1", "--port", str(port),
        )  # fmt: skip
        self.wait_until_serving(name, port)
        return name

    def wait_until_serving(self, name: str, port: int) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                    return
            except OSError:
                pass
            state = self.inspect(name)["State"]
            assert state["Running"], (state, self.logs(name))
            assert time.monotonic() < deadline, ("never served", self.logs(name))
            time.sleep(0.2)

    def inspect(self, name: str) -> dict[str, Any]:
        [found] = json.loads(docker("inspect", name).stdout)
        return dict(found)

    def logs(self, name: str) -> str:
        result = docker("logs", "--tail", "40", name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def wait_until_healthy(self, name: str) -> list[dict[str, Any]]:
        """The HEALTHCHECK's verdict, waited for; its log of checks."""
        deadline = time.monotonic() + 120
        while True:
            health = self.inspect(name)["State"]["Health"]
            if health["Status"] == "healthy":
                return list(health["Log"])
            assert health["Status"] != "unhealthy", (health, self.logs(name))
            assert time.monotonic() < deadline, (health, self.logs(name))
            time.sleep(0.5)

    def remove(self) -> None:
        for name in self.names:
            docker("rm", "--force", "--volumes", name, check=False)
        docker("volume", "rm", "--force", self.volume, check=False)


@pytest.fixture
def containers(image: str, tmp_path: Path) -> Iterator[Containers]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    config.chmod(0o644)  # the container's uid 10001 reads it through the bind mount
    tmp_path.chmod(0o755)
    made = Containers(image, config)
    try:
        yield made
    finally:
        made.remove()


def test_image_serves_read_only_as_its_user_and_a_new_container_finds_the_message(
    containers: Containers,
) -> None:
    """The built image runs with a read-only root as uid 10001 with a mounted config (capture,
    a token): it accepts a code over HTTP and shows it in its inbox, its HEALTHCHECK says
    healthy, it stops cleanly on SIGTERM, and a second container on the same volume still finds
    the accepted message's status."""
    port = free_port()
    first = containers.run(port)
    base = f"http://127.0.0.1:{port}"

    # No token, no inbox: the mounted config's tokens are in force.
    assert http("GET", f"{base}/v1/messages", token="wrong")[0] == 401
    status, sent = http("POST", f"{base}/v1/email", {"to": TO, "type": "SignIn", "payload": {"code": CODE}})  # fmt: skip
    assert status == 200 and sent["status"] == "captured", sent
    status, latest = http("GET", f"{base}/v1/messages/latest?to={TO}")
    assert status == 200 and latest["id"] == sent["id"] and latest["code"] == CODE, latest

    checks = containers.wait_until_healthy(first)
    assert checks and checks[-1]["ExitCode"] == 0, checks

    found = containers.inspect(first)
    assert found["HostConfig"]["ReadonlyRootfs"] is True
    assert found["Config"]["User"].split(":")[0] == str(UID)
    status_lines = docker("exec", first, "cat", "/proc/1/status").stdout.splitlines()
    [uids] = [line.split()[1:] for line in status_lines if line.startswith("Uid:")]
    assert uids == [str(UID)] * 4, uids  # the service itself (PID 1), not only `docker exec`
    refused = docker("exec", first, "sh", "-c", "echo x > /opt/otp-service/probe", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    listed = docker("exec", first, "ls", "-l", "/var/lib/otp-service").stdout
    assert "outbox.sqlite3" in listed, listed

    stopped = docker("stop", "--time", "30", first, timeout=90)
    assert stopped.returncode == 0
    assert containers.inspect(first)["State"]["ExitCode"] == 0, containers.logs(first)

    port = free_port()
    containers.run(port)
    status, record = http("GET", f"http://127.0.0.1:{port}/v1/messages/{sent['id']}")
    assert status == 200, record
    # The outbox (SQLite in the volume) kept the accepted message and its outcome; the inbox
    # of captured bodies is the first process's memory.
    assert record["id"] == sent["id"] and record["status"] == "captured", record
