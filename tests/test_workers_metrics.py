"""``serve --workers N``: one metrics view per replica, as real processes on PostgreSQL.

Whichever worker answers a scrape, on the main port or on ``--metrics-port`` (one listener,
the supervisor's), the counters are the sum over every worker, a killed one included.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .support import ROOT
from .support.fakes import started
from .support.fakes.aliyun import FakeAliyun
from .support.ports import free_port
from .support.processes import Processes, message_id, wait_for
from .support.replicas import Supervised, email, replica_config, samples, scrape

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def aliyun() -> Iterator[FakeAliyun]:
    with started(FakeAliyun) as server:
        yield server


@pytest.fixture
def supervised() -> Iterator[list[Supervised]]:
    running: list[Supervised] = []
    yield running
    for one in running:
        one.kill()


def listeners(port: int) -> int:
    """Listening TCP sockets on ``port`` (one socket shared by several processes counts once)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


async def test_workers_metrics_sum_every_worker_on_both_ports_after_a_kill(
    processes: Processes, aliyun: FakeAliyun, pg_schema: tuple[str, str],
    supervised: list[Supervised],
) -> None:  # fmt: skip
    """Two workers, one killed with SIGKILL and replaced between two bursts of requests: every
    scrape, on the main port and on --metrics-port (one listener), counts every request sent and
    every message delivered, whichever worker answers."""
    sink = processes.sink()
    config = replica_config(processes.folder, pg_schema, sink, aliyun)
    metrics_port = free_port()
    service = Supervised(
        config, 2, processes.folder / "supervisor.log", "--metrics-port", str(metrics_port)
    )
    supervised.append(service)
    sent: list[str] = []
    async with aiohttp.ClientSession() as http:

        async def burst(first: int, count: int) -> None:
            for number in range(first, first + count):
                async with http.post(f"{service.url}/v1/email", json=email(number)) as response:
                    assert response.status in (200, 202), await response.text()
                    sent.append((await response.json())["id"])

        async def delivered(count: int) -> None:
            """Wait until the scrape counts ``count`` emails sent (each finished and stored:
            a worker killed now cannot take a count with it or leave a message to resend)."""
            for _ in range(200):
                text = await scrape(http, f"http://127.0.0.1:{metrics_port}/metrics")
                sent_ = samples(text, "otp_messages_total").get('{channel="email",status="sent"}')
                if sent_ == count:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"never counted {count} emails sent: {sent_}")

        await service.ready(http)
        await wait_for(lambda: len(service.workers()) == 2, 30, "two workers")
        assert listeners(metrics_port) == 1
        await burst(0, 20)
        await delivered(20)
        victim = service.workers()[0]
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: victim not in service.workers(), 10, "the worker to die")
        await wait_for(lambda: len(service.workers()) == 2, 30, "a replacement worker")
        await service.ready(http)
        await burst(20, 20)
        wanted = {message_id(i) for i in sent}
        await wait_for(lambda: wanted <= {r["message_id"] for r in sink.events()}, 30, "mail")

        await delivered(len(sent))  # counted once each, whichever worker delivered them
        urls = [f"{service.url}/metrics", f"http://127.0.0.1:{metrics_port}/metrics"]
        for url in urls:
            for _ in range(6):  # connections spread over the workers: several scrapes
                async with aiohttp.ClientSession() as fresh:  # a new connection each time
                    text = await scrape(fresh, url)
                requests = samples(text, "otp_requests_total")
                assert sum(requests.values()) == len(sent), (url, requests)
                messages = samples(text, "otp_messages_total")
                assert messages['{channel="email",status="sent"}'] == len(sent), (url, messages)
                assert len(samples(text, "otp_outbox_pending")) == 1, text  # once, not per worker
                assert len(samples(text, "otp_build_info")) == 1
        assert listeners(metrics_port) == 1


def test_workers_metrics_port_in_use_is_named_up_front(tmp_path: Path) -> None:
    """--metrics-port already taken, under --workers 2: the supervisor refuses at once, saying
    the metrics port is in use (not a database problem), and starts no worker."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        config = tmp_path / "config.json"
        url = "postgresql://postgres@127.0.0.1:5432/test"
        config.write_text(json.dumps({"store": {"url": url, "path": "/proc/nowhere/x.sqlite3"}}))
        result = subprocess.run(
            [sys.executable, "-m", "otp_service", "serve", "--config", str(config), "--workers",
             "2", "--port", str(free_port()), "--metrics-port", str(taken)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"the metrics port 127.0.0.1:{taken} is in use" in result.stderr
    assert "--metrics-port" in result.stderr and "database" not in result.stderr


def test_workers_with_port_0_are_refused_with_the_fix(tmp_path: Path) -> None:
    """--workers 2 --port 0 is refused before any worker starts, naming the fix."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": {"url": "postgresql://postgres@127.0.0.1:5432/test"}}))
    result = subprocess.run(
        [sys.executable, "-m", "otp_service", "serve", "--config", str(config), "--workers", "2",
         "--port", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "port 0" in result.stderr and "fix: pass --port" in result.stderr


@pytest.mark.parametrize("clash", ["metrics", "intake-http", "intake-metrics"])
def test_workers_on_one_port_twice_are_refused_before_any_starts(
    tmp_path: Path, clash: str
) -> None:
    """--metrics-port equal to --port, or capture.smtp on the HTTP or the metrics port (on an
    address that covers the other's), under --workers 2: refused at once with the fix, no
    worker started (the workers used to fail to bind, be started again and again, and exit 1
    only after seconds of that)."""
    port, other = free_port(), free_port()
    config: dict[str, object] = {"store": {"url": "postgresql://postgres@127.0.0.1:5432/test"}}
    options = ["--port", str(port)]
    if clash == "metrics":
        options += ["--metrics-port", str(port)]
        path, fix = "server.metrics_port", "--metrics-port or server.metrics_port"
    elif clash == "intake-http":
        config["capture"] = {"smtp": {"port": port}}
        path, fix = "capture.smtp.port", "another port for the SMTP intake (capture.smtp.port)"
    else:  # the metrics listener on every IPv4 address covers the intake's 127.0.0.1
        config["server"] = {"metrics_port": other, "metrics_host": "0.0.0.0"}
        config["capture"] = {"smtp": {"port": other, "host": "127.0.0.1"}}
        path, fix = "capture.smtp.port", "or addresses that do not overlap"
    file = tmp_path / "config.json"
    file.write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "otp_service", "serve", "--config", str(file), "--workers", "2",
         *options],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"- {path}: is " in result.stderr and "cannot both listen" in result.stderr
    assert fix in result.stderr
    assert "supervisor" not in result.stderr + result.stdout  # no worker was started
