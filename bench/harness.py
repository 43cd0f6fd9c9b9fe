"""The processes a benchmark runs, and the bookkeeping that stops them all on exit.

:class:`Bench` is what every scenario receives: the parsed options (``bench.args``), a
temporary folder (``bench.workdir``), and methods to start the service from a config
(validated by ``check-config`` first), a provider fake from ``tests/support/fakes`` in its own
process, and the load generator against a service. Every process started is registered in
``bench.procs`` and stopped by :meth:`Bench.cleanup`, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT, stop_process
from tests.support.ports import free_port


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Fake:
    """A provider fake in its own process (``python -m tests.support.fakes.serve``)."""

    provider: str
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]  # what it wrote to its port file: host, endpoint, ca_file, pid
    out_path: Path

    def received(self) -> dict[str, int] | None:
        """What it counted, printed on exit ({"requests", "sms"}); None if it did not say."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            counted: dict[str, int] = json.loads(
                self.out_path.read_text(errors="replace").strip().splitlines()[-1]
            )
            return counted
        return None


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    seq: int = 0  # the next request number: every request goes to a new recipient
    # config keys check-config refused, per version of the code (its PYTHONPATH, "" for ours):
    # an old ref's refusal must not drop store.path or limits for the current service
    rejected_keys: dict[str, set[str]] = field(default_factory=dict)
    config_notes: list[str] = field(default_factory=list)

    def take_seq(self, count: int) -> int:
        start = self.seq
        self.seq += count
        return start

    def service_config(
        self, name: str, config: dict[str, Any], env: dict[str, str] | None = None
    ) -> Path:
        """Write ``config`` plus the bench's own keys, and have ``check-config`` validate it.

        Added (when the service accepts them): ``store.path`` in the bench's temporary folder,
        so runs start empty and leave nothing behind, and ``limits.enabled: false`` (unless
        --keep-limits). A key check-config refuses is dropped, once, with a note.
        """
        extra: dict[str, Any] = {"store": {"path": str(self.workdir / f"{name}.sqlite3")}}
        if not self.args.keep_limits:
            extra["limits"] = {"enabled": False}
        path = self.workdir / f"{name}.json"
        rejected = self.rejected_keys.setdefault((env or {}).get("PYTHONPATH", ""), set())
        while True:
            full = {k: v for k, v in extra.items() if k not in rejected} | config
            path.write_text(json.dumps(full, indent=2))
            done = subprocess.run(
                [sys.executable, "-m", "otp_service", "check-config", str(path)],
                capture_output=True, text=True, timeout=60, check=False, cwd=self.workdir,
                env=env,
            )  # fmt: skip
            if done.returncode == 0:
                return path
            problems = re.findall(r"^\s*- ([^:\s]+):", done.stderr, re.M)
            refused = {
                key for key in extra if key not in rejected
                and any(p == key or p.startswith(f"{key}.") for p in problems)
            }  # fmt: skip
            if not refused:
                raise RuntimeError(f"check-config refused {path}:\n{done.stderr[-3000:]}")
            rejected |= refused
            self.config_notes.append(
                f"the service's check-config refused {', '.join(sorted(refused))}: "
                "run without (" + "; ".join(done.stderr.strip().splitlines()[1:3]) + ")"
            )

    def ref_env(self, ref: str) -> dict[str, str]:
        """The environment that runs otp-service as of git ``ref``: its ``otp_service`` and
        ``templates`` extracted once into the bench's folder, first on PYTHONPATH (for a
        before/after in one run)."""
        target = self.workdir / f"before-{ref.replace('/', '_')}"
        if not target.exists():
            # The first commits (6b54b96) had no top-level templates folder: what the ref has.
            listed = subprocess.run(
                ["git", "ls-tree", "--name-only", ref, "otp_service", "templates"],
                capture_output=True, text=True, check=True, cwd=ROOT,
            ).stdout.split()  # fmt: skip
            with tempfile.TemporaryFile() as archive:
                git = ["git", "archive", ref, *listed]
                subprocess.run(git, stdout=archive, check=True, cwd=ROOT)
                archive.seek(0)
                with tarfile.open(fileobj=archive) as tar:
                    tar.extractall(target, filter="data")
        return {**os.environ, "PYTHONPATH": str(target)}

    def start_service(
        self,
        name: str,
        config: dict[str, Any],
        log_level: str,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Service:
        """The service from ``config``; ``env``: its environment (e.g. PYTHONPATH pointing at
        another version of otp_service, to compare)."""
        config_path = self.service_config(name, config, env)
        log_path = self.workdir / f"{name}.log"
        port = free_port()
        command = [
            sys.executable, "-m", "otp_service", "--log-level", log_level,
            "serve", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port),
            *extra_args,
        ]  # fmt: skip
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, env=env,
            )  # fmt: skip
        self.procs.append(proc)
        service = Service(proc, port, log_path)
        self._wait_healthy(service)
        return service

    def _wait_healthy(self, service: Service, seconds: float = 60) -> None:
        import http.client

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise RuntimeError(f"the service exited early:\n{service.log_tail()}")
            connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=1)
            try:
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.05)
        raise RuntimeError(f"the service did not become healthy:\n{service.log_tail()}")

    def stop(self, proc: subprocess.Popen[Any]) -> None:
        stop_process(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()

    def start_fake(self, provider: str) -> Fake:
        """A provider fake in another process; returns once it wrote its endpoint."""
        port_file = self.workdir / f"fake-{provider}.json"
        out_path = self.workdir / f"fake-{provider}.out"
        command = [sys.executable, "-m", "tests.support.fakes.serve", provider, "--port-file",
                   str(port_file)]  # fmt: skip
        with out_path.open("wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
            )
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the {provider} fake exited:\n{out_path.read_text(errors='replace')}"
                )
            if port_file.exists():
                return Fake(provider, proc, json.loads(port_file.read_text()), out_path)
            time.sleep(0.05)
        raise RuntimeError(f"the {provider} fake did not write {port_file}")

    def loadgen(
        self,
        service: Service,
        *,
        requests: int,
        seconds: float,
        concurrency: int,
        warmup: int,
        expect: str,
        path: str = "/v1/email",
        kind: str = "email",
        fake_pid: int = 0,
        rate: float = 0.0,
    ) -> dict[str, Any]:
        command = [
            sys.executable, "-m", "bench.loadgen",
            "--url", f"{service.url}{path}", "--requests", str(requests),
            "--seconds", str(seconds), "--concurrency", str(concurrency),
            "--warmup", str(warmup), "--expect", expect, "--pid", str(service.proc.pid),
            "--kind", kind, "--seq", str(self.take_seq(requests + warmup)),
            "--fake-pid", str(fake_pid), "--rate", str(rate),
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, timeout=seconds + 5 + 60, check=False, text=True,
            cwd=ROOT,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"the load generator failed:\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["concurrency"] = concurrency
        return result
