"""Shared fixtures: the service over real HTTP (aiohttp test server), built from a config dict."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from otp_service.config import parse_config
from otp_service.http.app import create_app

from . import pg
from .test_crash import Processes

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own outbox database (the default path is under XDG_STATE_HOME)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


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


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Create ``files`` (relative path → text) under ``root``; returns ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
async def pg_schema() -> AsyncIterator[tuple[str, str]]:
    """``(url, schema)``: a fresh PostgreSQL schema for one test, dropped after it."""
    url = pg.database_url()
    await pg.check_reachable(url)
    schema = pg.new_schema()
    yield url, schema
    await pg.drop_schema(url, schema)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Sink and service processes for one test, all stopped (by their pids) at the end."""
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
