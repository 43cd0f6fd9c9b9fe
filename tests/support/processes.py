"""The service and a recording SMTP sink as real processes, driven from async tests.

:class:`Processes` (the ``processes`` fixture) starts ``python -m otp_service serve`` processes
(:class:`ServiceProcess`) on config files it writes, and recording SMTP sinks
(:class:`SinkProcess`, :mod:`tests.support.recording_smtp`) that can be slowed down while they
run; it kills what is left at the end. What a sink received is matched by ``Message-ID``
(``<id@domain>``, the id the service answered: :func:`message_id`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from . import ROOT
from .ports import free_port

FROM_DOMAIN = "acme.example"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
TEMPLATES = [
    {"usageType": usage, "contentType": "text/plain", "subject": f"Acme {usage}",
     "content": "Your code is {{code}}."}
    for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
]  # fmt: skip


def message_id(answer_id: str) -> str:
    """The Message-ID the service puts on the email it answered ``answer_id`` for."""
    return f"<{answer_id}@{FROM_DOMAIN}>"


async def wait_for(
    condition: Callable[[], bool], seconds: float, what: str, step: float = 0.05
) -> None:
    """Poll ``condition`` (another process changes it) until it holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(step)


class SinkProcess:
    """The recording SMTP sink process and what it has written so far."""

    def __init__(self, folder: Path, delay: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port_file = folder / "sink-port.json"
        self.out = folder / "sink.jsonl"
        self.delay_file = folder / "sink-delay"
        self.delay_file.write_text(str(delay), encoding="utf-8")
        self.log = (folder / "sink.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.recording_smtp", "--port-file", str(self.port_file),
             "--out", str(self.out), "--delay-file", str(self.delay_file)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not self.port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the SMTP sink did not start:\n{self.log_text()}")
            time.sleep(0.02)
        self.port: int = json.loads(self.port_file.read_text(encoding="utf-8"))["port"]

    def set_delay(self, seconds: float) -> None:
        """How long the sink waits before each ``250`` from now on."""
        partial = self.delay_file.with_suffix(".partial")
        partial.write_text(str(seconds), encoding="utf-8")
        os.replace(partial, self.delay_file)

    def events(self, kind: str = "accepted") -> list[dict[str, Any]]:
        """``accepted`` (received: answered 250) or ``data`` (DATA arrived) records, in order."""
        if not self.out.exists():
            return []
        text = self.out.read_text(encoding="utf-8")
        lines = text.split("\n")[:-1]  # a line without its newline is still being written
        return [r for r in map(json.loads, lines) if r["event"] == kind]

    def received(self, answer_id: str, kind: str = "accepted") -> int:
        """How many copies of the message answered with ``answer_id`` arrived."""
        return sum(r["message_id"] == message_id(answer_id) for r in self.events(kind))

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(encoding="utf-8", errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


def smtp_email(sink: SinkProcess) -> dict[str, Any]:
    """The email section for ``sink``: Logto's SMTP connector JSON, short timeouts, pool of 4."""
    return {
        "provider": "smtp",
        "smtp": {
            "host": "127.0.0.1", "port": sink.port,
            "fromEmail": f"Acme <no-reply@{FROM_DOMAIN}>", "templates": TEMPLATES,
            "name": "otp.test.example", "connectionTimeout": 2000,
            "greetingTimeout": 2000, "socketTimeout": 5000,
        },
        "pool": {"size": 4},
    }  # fmt: skip


class ServiceProcess:
    """One ``python -m otp_service serve`` process on a config file."""

    def __init__(self, config: Path, log: Path, *options: str, new_session: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otp_service", "serve", "--config", str(config),
             "--port", str(self.port), *options],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=new_session,
        )  # fmt: skip

    async def ready(self, http: aiohttp.ClientSession, seconds: float = 20) -> dict[str, Any]:
        """Wait until ``/readyz`` answers 200; returns its JSON."""
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited at start:\n{self.log_text()}")
            try:
                async with http.get(f"{self.url}/readyz", timeout=HTTP_TIMEOUT) as response:
                    if response.status == 200:
                        body: dict[str, Any] = await response.json()
                        return body
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the service never became ready:\n{self.log_text()}")
            await asyncio.sleep(0.05)

    async def exit_code(self, seconds: float) -> int:
        """Wait (without blocking the loop) for the process to exit; its return code."""
        await wait_for(lambda: self.process.poll() is not None, seconds, "the service to exit")
        code = self.process.returncode
        assert code is not None
        return code

    def log_text(self, tail: int | None = 3000) -> str:
        """The log's last ``tail`` characters (for a failure message), or all of it (None)."""
        self.log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text if tail is None else text[-tail:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


class Processes:
    """Starts the sink and service processes of a test; kills what is left afterwards."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sinks: list[SinkProcess] = []
        self.services: list[ServiceProcess] = []

    def sink(self, delay: float = 0.0) -> SinkProcess:
        self.sinks.append(SinkProcess(self.folder, delay))
        return self.sinks[-1]

    def config(self, sink: SinkProcess, **delivery: Any) -> Path:
        """A config file: email over SMTP to ``sink``, outbox in the test's folder, no limits."""
        config = {
            "email": smtp_email(sink),
            "templates": {"bundled": False},
            "store": {"path": str(self.folder / "outbox.sqlite3")},
            "limits": {"enabled": False},
            "delivery": {
                "wait_seconds": 0.2, "retry_delay_seconds": 0.05, "backoff_max_seconds": 0.5,
                "poll_seconds": 0.05, "timeout_seconds": 10,
            } | delivery,
        }  # fmt: skip
        path = self.folder / "config.yaml"
        path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        return path

    def service(self, config: Path) -> ServiceProcess:
        log = self.folder / f"service-{len(self.services) + 1}.log"
        self.services.append(ServiceProcess(config, log))
        return self.services[-1]

    def stop_all(self) -> None:
        for service in self.services:
            service.stop()
        for sink in self.sinks:
            sink.stop()


async def post_email(
    http: aiohttp.ClientSession, service: ServiceProcess, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{service.url}/v1/email", json=body, timeout=HTTP_TIMEOUT) as response:
        return response.status, await response.json()


async def get_status(
    http: aiohttp.ClientSession, service: ServiceProcess, answer_id: str
) -> dict[str, Any]:
    async with http.get(f"{service.url}/v1/messages/{answer_id}", timeout=HTTP_TIMEOUT) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def wait_status(
    http: aiohttp.ClientSession, service: ServiceProcess, answer_id: str, want: str, seconds: float
) -> dict[str, Any]:
    """Poll the status endpoint until the message has status ``want``; its last record."""
    deadline = time.monotonic() + seconds
    while True:
        record = await get_status(http, service, answer_id)
        if record["status"] == want:
            return record
        assert time.monotonic() < deadline, f"still {record['status']} after {seconds} s"
        await asyncio.sleep(0.05)
