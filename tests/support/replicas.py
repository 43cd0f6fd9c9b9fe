"""Several ``otp-service serve`` processes (replicas, or one with workers) on one PostgreSQL.

:func:`replica_config` writes the config every replica reads: email over SMTP to the recording
sink process, SMS through the Aliyun fake, the outbox in one schema. :func:`email` and
:func:`sms` are numbered sign-in requests, so what arrived can be matched to what was sent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from .fakes.aliyun import FakeAliyun, logto_aliyun_json
from .processes import HTTP_TIMEOUT, ServiceProcess, SinkProcess, smtp_email
from .signin import signin

LEASE = 3.0  # seconds: how soon a live replica takes over what a killed one held


def replica_config(
    folder: Path, pg: tuple[str, str], sink: SinkProcess, aliyun: FakeAliyun, **extra: Any
) -> Path:
    """Email over SMTP to ``sink``, SMS through Aliyun, every replica on the same schema."""
    url, schema = pg
    config: dict[str, Any] = {
        "email": smtp_email(sink),
        "sms": {"provider": "aliyun", "aliyun": logto_aliyun_json(),
                "endpoints": {"aliyun": aliyun.endpoint(timeout_seconds=5)}},
        "store": {"url": url, "schema": schema, "pool_size": 4},
        "limits": {"enabled": False},
        "delivery": {
            "wait_seconds": 0.2, "retry_delay_seconds": 0.05, "backoff_max_seconds": 0.5,
            "poll_seconds": 0.05, "timeout_seconds": 10, "lease_seconds": LEASE,
            "shutdown_grace_seconds": 5,
        },
    } | extra  # fmt: skip
    path = folder / "config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def email(number: int) -> dict[str, Any]:
    """Sign-in email number ``number``: to ``user<number>@example.com``, code ``<number>``."""
    return signin(f"user{number}@example.com", f"{number:06d}")


def sms(number: int) -> dict[str, Any]:
    """Sign-in SMS number ``number``: to a Chinese mobile number (Aliyun), code ``<number>``."""
    return signin(f"+86138{number:08d}", f"{number:06d}")


class Supervised(ServiceProcess):
    """``otp-service serve --workers N`` in its own process group (killed whole at the end)."""

    def __init__(self, config: Path, workers: int, log: Path, *options: str) -> None:
        super().__init__(config, log, "--workers", str(workers), *options, new_session=True)

    def workers(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    async def ready(self, http: aiohttp.ClientSession, seconds: float = 90) -> dict[str, Any]:
        return await super().ready(http, seconds)  # N workers take longer to start than one

    def metrics_folders(self) -> set[str]:
        """The workers' metrics folder (the supervisor removes it, unless it is killed)."""
        found = set()
        for pid in self.workers():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            found |= {e.split(b"=", 1)[1].decode() for e in environ
                      if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")}  # fmt: skip
        return found

    def kill(self) -> None:
        if self.process.poll() is None:
            folders = self.metrics_folders()
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        self.log.close()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of metric ``name`` in a Prometheus text exposition, by their label text."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if (match := _SAMPLE.match(line)) and match[1] == name:
            found[match[2] or ""] = float(match[3])
    return found


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    """``GET url`` (a /metrics endpoint): its text."""
    async with http.get(url, timeout=HTTP_TIMEOUT) as response:
        assert response.status == 200, await response.text()
        return await response.text()
