"""The installed ``otp-service`` command, as an operator runs it (blocking calls).

:func:`run` runs one command to its end; :class:`Service` is ``otp-service serve`` as a
process with its log in a file (the ``services`` fixture stops them); :func:`http` is a plain
blocking HTTP call for talking to it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from . import ROOT
from .ports import free_port

BIN = Path(sys.executable).parent / "otp-service"


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``otp-service *args`` from the repository, to its end: exit code, stdout, stderr."""
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One blocking HTTP call with a JSON ``body``: status, headers, body (also on 4xx/5xx)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Service:
    """``otp-service serve`` as a process, its stderr (the log) collected in a file."""

    def __init__(self, tmp: Path, config: dict[str, Any], *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config.setdefault("store", {"path": str(tmp / "outbox.sqlite3")})
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = tmp / "service.log"
        self.log_file = self.log_path.open("w")
        self.process = subprocess.Popen(
            [str(BIN), "serve", "--config", str(path), "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=self.log_file, text=True, cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, self.log()
            try:
                if http("GET", f"{self.base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines (``--log-format json``)."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.log_file.close()
