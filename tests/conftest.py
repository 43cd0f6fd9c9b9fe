"""Shared fixtures: the service in-process over real HTTP, or as processes; SMTP servers; a
fresh PostgreSQL schema. What they are built from lives in :mod:`tests.support`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from otp_service.config import parse_config
from otp_service.http.app import create_app
from otp_service.logs import JsonFormatter, TextFormatter

from .support import pg
from .support.command import Service
from .support.markers import require_mark
from .support.processes import Processes
from .support.service import ClientFactory
from .support.smtp_server import RecordingSMTPServer, ServerFactory, smtp_server_factory


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own outbox database (the default path is under XDG_STATE_HOME)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """Undo what the CLI's log set-up did to the root logger when a test ran it in-process.

    ``otp_service.cli.main`` points a handler at the sys.stderr of the moment (the test's
    captured stream, closed after the test) and sets the root level to INFO; any later record
    (an aiosmtpd server thread logging a closed connection) then printed "--- Logging error ---
    ... I/O operation on closed file" after the run.
    """
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if isinstance(handler.formatter, JsonFormatter | TextFormatter):
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def service(aiohttp_client: Any) -> ClientFactory:
    """Start the service from a config mapping; returns an HTTP client bound to it."""

    async def start(
        config: dict[str, Any] | None = None, base: Path | None = None
    ) -> TestClient[Any, Any]:
        app = create_app(parse_config(config or {}, base))
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return start


@pytest.fixture
async def pg_schema(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """``(url, schema)``: a fresh PostgreSQL schema for one test, dropped after it."""
    require_mark(request, "pg_schema")
    url = pg.database_url()
    await pg.check_reachable(url)
    schema = pg.new_schema()
    yield url, schema
    await pg.drop_schema(url, schema)


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    """Sink and service processes for one test, all stopped (by their pids) at the end."""
    require_mark(request, "processes")
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Service]]:
    """``otp-service serve`` processes a test appends here, stopped at the end."""
    require_mark(request, "services")
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


@pytest.fixture
def smtp_server() -> Iterator[RecordingSMTPServer]:
    """A recording SMTP server with its port chosen but NOT listening: start it to end the
    outage. Stopped after the test."""
    server = RecordingSMTPServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_servers() -> Iterator[ServerFactory]:
    """Start recording SMTP servers: ``smtp_servers(**options)``; stopped after the test."""
    with smtp_server_factory() as make:
        yield make
