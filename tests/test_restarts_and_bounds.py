"""Limits and bounds hold on every backend, as real processes: a recipient at its limit is still
at it after ``serve`` is killed and started again (SQLite and PostgreSQL), and the capture inbox
on PostgreSQL keeps ``capture.max_bytes``, with mail taken by the SMTP intake that two workers
share."""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support.ports import free_port
from .support.processes import HTTP_TIMEOUT, ServiceProcess, wait_for
from .support.replicas import Supervised
from .support.signin import signin

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def started() -> Iterator[list[ServiceProcess]]:
    running: list[ServiceProcess] = []
    yield running
    for one in running:
        if isinstance(one, Supervised):
            one.kill()
        else:
            one.stop()


def write_config(folder: Path, kind: str, pg: tuple[str, str], **extra: Any) -> Path:
    store = {"url": pg[0], "schema": pg[1]} if kind == "postgres" else {}
    config = {"store": {"path": str(folder / "outbox.sqlite3"), **store}} | extra
    path = folder / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


async def post(http: aiohttp.ClientSession, service: ServiceProcess, to: str) -> int:
    async with http.post(
        f"{service.url}/v1/email", json=signin(to, "123456"), timeout=HTTP_TIMEOUT
    ) as response:
        return response.status


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_limits_hold_after_serve_is_killed_and_started_again(
    kind: str, tmp_path: Path, pg_schema: tuple[str, str], started: list[ServiceProcess]
) -> None:
    """per_recipient 2 per 10 minutes: two sends, then 429; the service is killed (SIGKILL) and
    started again on the same store: the recipient still gets 429, another one 200."""
    config = write_config(
        tmp_path, kind, pg_schema,
        limits={"enabled": True, "per_recipient": {"count": 2, "window_seconds": 600}},
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        first = ServiceProcess(config, tmp_path / "first.log")
        started.append(first)
        await first.ready(http)
        assert [await post(http, first, "ana@example.com") for _ in range(3)] == [200, 200, 429]
        first.process.kill()
        await first.exit_code(10)
        second = ServiceProcess(config, tmp_path / "second.log")
        started.append(second)
        await second.ready(http)
        assert await post(http, second, "ana@example.com") == 429, second.log_text()
        assert await post(http, second, "bob@example.com") == 200


def mail(number: int, size: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = f"user{number}@example.com"
    message["Subject"] = f"Your code {number:06d}"
    message.set_content(f"code {number:06d}\n" + "x" * size)
    return message


async def test_capture_max_bytes_on_postgres_with_two_workers_sharing_the_smtp_intake(
    tmp_path: Path, pg_schema: tuple[str, str], started: list[ServiceProcess]
) -> None:
    """capture.max_bytes 1 MiB on PostgreSQL, --workers 2 with capture.smtp: eight mails of
    300 KB to the one SMTP listener are captured, and the inbox keeps only the newest that fit
    in 1 MiB (the last one always)."""
    smtp_port = free_port()
    config = write_config(
        tmp_path, "postgres", pg_schema,
        capture={"max_bytes": 1024 * 1024, "smtp": {"host": "127.0.0.1", "port": smtp_port}},
    )  # fmt: skip
    service = Supervised(config, 2, tmp_path / "supervisor.log")
    started.append(service)
    async with aiohttp.ClientSession() as http:
        await service.ready(http)
        await wait_for(lambda: len(service.workers()) == 2, 30, "two workers")

        def send_all() -> None:
            for number in range(8):  # a new connection each: the workers take turns
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
                    client.send_message(mail(number, 300_000))

        await asyncio.to_thread(send_all)
        async with http.get(f"{service.url}/v1/messages", timeout=HTTP_TIMEOUT) as response:
            assert response.status == 200
            held = [m["to"] for m in (await response.json())["messages"]]
    assert "user7@example.com" in held
    assert 1 <= len(held) <= 3, held  # 3 x 300 KB fit in 1 MiB, a fourth does not
    with socket.socket() as probe, pytest.raises(OSError):  # the supervisor's one listener
        probe.bind(("127.0.0.1", smtp_port))


def test_check_config_checks_postgres_not_the_sqlite_path(tmp_path: Path) -> None:
    """With store.url set, check-config does not refuse an unwritable store.path (SQLite is not
    the store): it reports the PostgreSQL store and exits 0."""
    from .support.command import run

    config = tmp_path / "config.json"
    store = {"url": "postgresql://postgres@127.0.0.1:5432/test", "path": "/proc/none/x.sqlite3"}
    config.write_text(json.dumps({"store": store}), encoding="utf-8")
    result = run("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert "store: postgresql" in result.stdout and "store.path" not in result.stderr
