"""Slow and idle clients against the real ``otp-service serve`` process, run under a
1,024-descriptor limit (``ulimit -n``, set in the child): a client that does not send its
request head in time is dropped, idle keep-alive connections are closed, connections are
capped with a clear refusal, and 2,000 slow clients leave the service answerable.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support import ROOT
from .support.ports import free_port
from .support.processes import HTTP_TIMEOUT

pytestmark = pytest.mark.slow

DESCRIPTORS = 1024


class LimitedService:
    """``otp-service serve`` (capture) with RLIMIT_NOFILE set to 1,024 in the child."""

    def __init__(self, folder: Path, **server: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "server": {"header_timeout_seconds": 2, "keepalive_seconds": 1} | server,
            "store": {"path": str(folder / "outbox.sqlite3")},
            "limits": {"enabled": False},
        }
        path = folder / "config.yaml"
        path.write_text(json.dumps(config), encoding="utf-8")
        self.log_path = folder / "service.log"
        self.log = self.log_path.open("w")

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "otp_service", "serve", "--config", str(path),
             "--port", str(self.port)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=limit,
        )  # fmt: skip

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]

    async def ready(self) -> None:
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.process.poll() is None, self.log_text()
                try:
                    async with http.get(f"{self.url}/readyz", timeout=HTTP_TIMEOUT) as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, self.log_text()
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[list[LimitedService]]:
    started: list[LimitedService] = []
    try:
        yield started
    finally:
        for service in started:
            service.stop()


async def raw(port: int, data: bytes, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10) if read else b""
    writer.close()
    return answer


async def closed_by_server(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (EOF or reset)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
        return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def send_email(http: aiohttp.ClientSession, url: str, n: int) -> int:
    body = {"to": f"u{n}@example.com", "type": "SignIn", "payload": {"code": f"{n:06d}"}}
    async with http.post(f"{url}/v1/email", json=body, timeout=HTTP_TIMEOUT) as response:
        return response.status


async def test_client_without_request_head_in_time_is_dropped(
    limited: list[LimitedService], tmp_path: Path
) -> None:
    """A client sending its headers one byte at a time is disconnected after
    server.header_timeout_seconds, long before it could finish."""
    service = LimitedService(tmp_path)
    limited.append(service)
    await service.ready()
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"POST /v1/email HTTP/1.1\r\nHost: localhost\r\n")
    started = time.monotonic()
    dropped = False
    for byte in b"X-Slow: " + b"a" * 60:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            dropped = True
            break
        if reader.at_eof():
            dropped = True
            break
        await asyncio.sleep(0.1)
    dropped = dropped or await closed_by_server(reader, 2)
    writer.close()
    assert dropped and time.monotonic() - started < 6.5


async def test_idle_keepalive_connection_is_closed(
    limited: list[LimitedService], tmp_path: Path
) -> None:
    """A keep-alive connection left idle after a request is closed after
    server.keepalive_seconds."""
    service = LimitedService(tmp_path)
    limited.append(service)
    await service.ready()
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    assert await closed_by_server(reader, 5)
    writer.close()


async def test_connections_past_the_cap_get_a_clear_503(
    limited: list[LimitedService], tmp_path: Path
) -> None:
    """With every allowed connection busy with a real request (a body still on its way), a new
    one is answered 503 too_many_connections at once; once they time out, it is served."""
    service = LimitedService(tmp_path, max_connections=8)
    limited.append(service)
    await service.ready()
    busy = []
    for _ in range(8):
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(b"POST /v1/email HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")  # fmt: skip
        await writer.drain()
        busy.append((reader, writer))
    await asyncio.sleep(0.3)
    answer = await raw(service.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
    assert b"\r\nX-Content-Type-Options: nosniff\r\n" in answer.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    for reader, _ in busy:  # each body times out: 408, and the connection is freed
        assert b"408" in await asyncio.wait_for(reader.read(4096), 10)
    for _, writer in busy:
        writer.close()
    await asyncio.sleep(0.2)
    answer = await raw(
        service.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200")


async def test_two_thousand_slow_clients_leave_the_service_answerable(
    limited: list[LimitedService], tmp_path: Path
) -> None:
    """2,000 clients that trickle their headers, against a process limited to 1,024
    descriptors: /healthz and POST /v1/email keep answering 200 throughout, and the service
    neither dies nor runs out of descriptors."""
    service = LimitedService(tmp_path)
    limited.append(service)
    await service.ready()
    slow: list[asyncio.StreamWriter] = []

    async def slow_client() -> None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", service.port)
        except OSError:
            return
        slow.append(writer)
        try:
            writer.write(b"POST /v1/email HTTP/1.1\r\nHost: localhost\r\n")
            for _ in range(100):
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.5)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    attackers = [asyncio.create_task(slow_client()) for _ in range(2000)]
    statuses: list[int] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            await asyncio.sleep(1.0)  # the attack is in full swing
            for n in range(20):
                async with http.get(f"{service.url}/healthz", timeout=HTTP_TIMEOUT) as response:
                    statuses.append(response.status)
                statuses.append(await send_email(http, service.url, n))
                await asyncio.sleep(0.2)
    finally:
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)
    assert len(slow) > 1024  # the attack did reach past the descriptor limit
    assert statuses == [200] * 40
    assert service.process.poll() is None, service.log_text()
    assert "Too many open files" not in service.log_text()
