"""The store failing under the real ``otp-service serve`` process: made read-only (``chattr
+i``), deleted, or out of space (a file-size limit on the process). The service must notice
(``/readyz`` 503, new sends 503 ``store_unavailable``), never answer 2xx without a durable write,
never crash, and recover by itself once the store is usable again.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support.processes import HTTP_TIMEOUT, Processes, ServiceProcess, get_status

pytestmark = pytest.mark.slow


def capture_config(folder: Path) -> Path:
    config = {
        "store": {"path": str(folder / "store" / "outbox.sqlite3")},
        "limits": {"enabled": False},
        "delivery": {"wait_seconds": 0.5, "poll_seconds": 0.05},
    }
    path = folder / "capture.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def store_files(folder: Path) -> list[Path]:
    return sorted((folder / "store").glob("outbox.sqlite3*"))


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files the test makes immutable; made mutable again whatever happens."""
    files: list[Path] = []
    try:
        yield files
    finally:
        for path in files:
            subprocess.run(["chattr", "-i", str(path)], check=False)


async def chattr(flag: str, path: Path) -> None:
    """``chattr +i`` / ``-i``: immutable even for root (read-only under the service)."""
    child = await asyncio.create_subprocess_exec("chattr", flag, str(path))
    assert await child.wait() == 0


async def send(http: aiohttp.ClientSession, service: ServiceProcess, n: int,
               size: int = 0) -> tuple[int, dict[str, Any]]:  # fmt: skip
    body = {"to": f"u{n}@example.com", "type": "SignIn",
            "payload": {"code": f"{n:06d}", "pad": "p" * size}}  # fmt: skip
    async with http.post(f"{service.url}/v1/email", json=body, timeout=HTTP_TIMEOUT) as response:
        return response.status, await response.json()


async def send_during_fault(
    http: aiohttp.ClientSession, service: ServiceProcess, numbers: range, answered: list[str],
    size: int = 0, pause: float = 0.0,
) -> list[int]:  # fmt: skip
    """Send requests ``numbers`` while the store is failing: a 2xx adds its id to ``answered``;
    anything else must be 503 ``store_unavailable``. Returns the statuses."""
    statuses = []
    for n in numbers:
        status, body = await send(http, service, n, size)
        statuses.append(status)
        if status < 300:
            answered.append(body["id"])
        else:
            assert status == 503 and body["error"]["code"] == "store_unavailable", body
        await asyncio.sleep(pause)
    return statuses


async def readyz(http: aiohttp.ClientSession, service: ServiceProcess) -> int:
    async with http.get(f"{service.url}/readyz", timeout=HTTP_TIMEOUT) as response:
        return response.status


async def wait_ready_status(
    http: aiohttp.ClientSession, service: ServiceProcess, want: int, seconds: float = 10
) -> None:
    deadline = time.monotonic() + seconds
    while (status := await readyz(http, service)) != want:
        assert time.monotonic() < deadline, f"/readyz stayed {status}, wanted {want}"
        await asyncio.sleep(0.05)


async def assert_durable(
    http: aiohttp.ClientSession, processes: Processes, config: Path, service: ServiceProcess,
    answered: list[str],
) -> None:  # fmt: skip
    """After kill -9 and a new start, every message answered 2xx is known to the store."""
    service.process.send_signal(signal.SIGKILL)
    await service.exit_code(10)
    again = processes.service(config)
    await again.ready(http)
    for answer_id in answered:
        record = await get_status(http, again, answer_id)
        assert record["status"] == "captured", record


async def test_read_only_store_gives_503_then_recovers_without_crashing(
    processes: Processes, immutable: list[Path]
) -> None:
    """Store files made immutable under the running service: it does not die (no SIGBUS),
    /readyz turns 503 and sends get 503 store_unavailable; made writable again, it serves by
    itself, and every message it answered 2xx survives a kill -9."""
    config = capture_config(processes.folder)
    service = processes.service(config)
    answered: list[str] = []
    async with aiohttp.ClientSession() as http:
        await service.ready(http)
        status, body = await send(http, service, 0)
        assert status == 200
        answered.append(body["id"])
        for path in store_files(processes.folder):
            await chattr("+i", path)
            immutable.append(path)

        statuses = await send_during_fault(http, service, range(1, 6), answered)
        assert 503 in statuses
        await wait_ready_status(http, service, 503)
        assert service.process.poll() is None, service.log_text()

        for path in immutable:
            await chattr("-i", path)
        await wait_ready_status(http, service, 200)
        status, body = await send(http, service, 99)
        assert status == 200, body
        answered.append(body["id"])
        await assert_durable(http, processes, config, service, answered)


async def test_deleted_store_never_answers_2xx_without_a_durable_write(
    processes: Processes,
) -> None:
    """The store file deleted under the running service: it notices (the write, or the
    watch), writes the file anew from its open handle, and every message it answered 2xx,
    before or after the deletion, is there after a kill -9 and a restart."""
    config = capture_config(processes.folder)
    service = processes.service(config)
    answered: list[str] = []
    async with aiohttp.ClientSession() as http:
        await service.ready(http)
        for n in range(5):
            status, body = await send(http, service, n)
            assert status == 200
            answered.append(body["id"])
        for path in store_files(processes.folder):
            path.unlink()
        statuses = await send_during_fault(http, service, range(5, 40), answered, pause=0.02)
        assert set(statuses) <= {200, 503}
        await wait_ready_status(http, service, 200)
        assert (processes.folder / "store" / "outbox.sqlite3").exists()
        await assert_durable(http, processes, config, service, answered)


async def test_full_disk_gives_503_store_unavailable_then_recovers(processes: Processes) -> None:
    """Out of space (a file-size limit set on the running process): sends get 503
    store_unavailable, never a 500 or a 2xx that was not written; with room again the service
    recovers by itself and what it answered 2xx survives a kill -9."""
    config = capture_config(processes.folder)
    service = processes.service(config)
    answered: list[str] = []
    async with aiohttp.ClientSession() as http:
        await service.ready(http)
        status, body = await send(http, service, 0)
        answered.append(body["id"])
        size = sum(p.stat().st_size for p in store_files(processes.folder))
        pid = service.process.pid
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 256 * 1024, resource.RLIM_INFINITY))
        statuses = await send_during_fault(http, service, range(1, 60), answered, size=20_000)
        assert 503 in statuses and service.process.poll() is None
        # /readyz is not awaited at 503 here: a send finding the store unavailable probes it,
        # and under a file-size limit the probe's write can fit where a message's does not.

        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        await wait_ready_status(http, service, 200)
        status, body = await send(http, service, 99)
        assert status == 200, body
        answered.append(body["id"])
        await assert_durable(http, processes, config, service, answered)
