"""``serve --workers N`` on PostgreSQL, as real processes: the supervisor, its workers, and a
PostgreSQL cluster of the test's own that is stopped and started under load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support import ROOT
from .support.fakes import started
from .support.fakes.aliyun import FakeAliyun
from .support.pg_cluster import PgCluster
from .support.processes import HTTP_TIMEOUT, Processes, message_id, wait_for
from .support.replicas import Supervised, email, replica_config

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


async def test_workers_restart_a_killed_worker_and_drain_on_sigterm(
    processes: Processes, aliyun: FakeAliyun, pg_schema: tuple[str, str],
    supervised: list[Supervised],
) -> None:  # fmt: skip
    """Two workers serve one port; a worker killed with SIGKILL is replaced and the port keeps
    answering; SIGTERM to the supervisor drains both and it exits 0."""
    sink = processes.sink()
    config = replica_config(processes.folder, pg_schema, sink, aliyun)
    service = Supervised(config, 2, processes.folder / "supervisor.log")
    supervised.append(service)
    async with aiohttp.ClientSession() as http:
        await service.ready(http)
        await wait_for(lambda: len(service.workers()) == 2, 30, "two workers")
        first = service.workers()
        os.kill(first[0], signal.SIGKILL)
        await wait_for(lambda: first[0] not in service.workers(), 10, "the worker to die")
        await wait_for(lambda: len(service.workers()) == 2, 30, "a replacement worker")
        await service.ready(http)
        ids = []
        for number in range(10):
            async with http.post(f"{service.url}/v1/email", json=email(number)) as response:
                assert response.status in (200, 202), await response.text()
                ids.append((await response.json())["id"])
        wanted = {message_id(i) for i in ids}
        await wait_for(lambda: wanted <= {r["message_id"] for r in sink.events()}, 30, "mail")
        service.process.send_signal(signal.SIGTERM)
        await wait_for(lambda: service.process.poll() is not None, 30, "the supervisor to exit")
        assert service.process.returncode == 0, service.log_text()
        assert service.workers() == []


def test_workers_refused_with_sqlite(tmp_path: Path) -> None:
    """--workers above 1 with the SQLite outbox is refused with the reason and the fix."""
    result = subprocess.run(
        [sys.executable, "-m", "otp_service", "serve", "--workers", "2", "--port", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env=os.environ | {"XDG_STATE_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2
    assert "SQLite" in result.stderr and "store.url" in result.stderr


async def test_postgres_stopped_and_started_under_load_loses_nothing_accepted(
    processes: Processes, aliyun: FakeAliyun, supervised: list[Supervised]
) -> None:
    """Under steady load on two workers, PostgreSQL is stopped (immediate: like a crash) and
    started again: requests meanwhile get 503 store_unavailable, never a 2xx; every message
    answered 2xx, before or after, is delivered and its status says sent."""
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
        sink = processes.sink()
        config = replica_config(processes.folder, (cluster.url, "otp_service"), sink, aliyun)
        service = Supervised(config, 2, processes.folder / "supervisor.log")
        supervised.append(service)
        accepted: list[str] = []
        answers: Counter[str] = Counter()
        async with aiohttp.ClientSession() as http:
            await service.ready(http)
            stop = asyncio.Event()

            async def load(worker: int) -> None:
                number = worker * 100000
                while not stop.is_set():
                    number += 1
                    try:
                        async with http.post(
                            f"{service.url}/v1/email", json=email(number), timeout=HTTP_TIMEOUT
                        ) as response:
                            body: dict[str, Any] = await response.json()
                            code = body.get("error", {}).get("code", "")
                            answers[f"{response.status} {code}".strip()] += 1
                            if response.status in (200, 202):
                                accepted.append(body["id"])
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        answers[f"no answer {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.01)

            loaders = [asyncio.create_task(load(worker)) for worker in range(1, 5)]
            await asyncio.sleep(1.5)
            before = len(accepted)
            await asyncio.to_thread(cluster.stop, "immediate")
            await asyncio.sleep(2.0)
            await asyncio.to_thread(cluster.start)
            await wait_for(lambda: len(accepted) > before + 20, 60, "sends accepted again")
            stop.set()
            await asyncio.gather(*loaders)

            assert set(answers) <= {"200", "202", "503 store_unavailable"}, answers
            assert answers["503 store_unavailable"] > 0, answers  # the outage was seen
            wanted = {message_id(i) for i in accepted}
            await wait_for(
                lambda: wanted <= {r["message_id"] for r in sink.events()}, 60, "every email"
            )
            print(f"\nPostgreSQL stopped and started under load: {dict(answers)}")
    finally:
        for one in supervised:
            one.kill()
        supervised.clear()
        cluster.remove()


async def test_workers_stop_when_every_worker_fails_at_start(
    tmp_path: Path, pg_schema: tuple[str, str], supervised: list[Supervised]
) -> None:
    """Workers that cannot start (a schema newer than the code) stop the supervisor with exit
    code 1 and the reason in the log, instead of restarting forever."""
    import asyncpg

    from otp_service.store.migrations import LATEST, migrate

    url, schema = pg_schema
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, schema)
        await conn.execute(
            f'INSERT INTO "{schema}".schema_migrations (version, description) VALUES ($1, $2)',  # noqa: S608
            LATEST + 1, "from the future",
        )  # fmt: skip
    finally:
        await conn.close()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": {"url": url, "schema": schema}}))
    service = Supervised(config, 2, tmp_path / "supervisor.log")
    supervised.append(service)
    await wait_for(lambda: service.process.poll() is not None, 180, "the supervisor to give up")
    assert service.process.returncode == 1
    assert "newer than this otp-service" in service.log_text()
