"""The PostgreSQL the tests run against: ``OTP_TEST_DATABASE_URL``, by default the server these
machines run (``postgresql://postgres@127.0.0.1:5432/test``, trust authentication).

Each test run works in schemas of its own (``otp_test_<random>_<n>``), dropped when the test
ends. An unreachable server fails the tests that need it: it is never a reason to skip.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
RUN = secrets.token_hex(4)
_numbers = itertools.count(1)


def database_url() -> str:
    return os.environ.get("OTP_TEST_DATABASE_URL") or DEFAULT_URL


def new_schema() -> str:
    """A schema name no other test (or test run) uses."""
    return f"otp_test_{RUN}_{next(_numbers)}"


async def check_reachable(url: str) -> None:
    """Raise AssertionError with the fix when the test database cannot be reached."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise AssertionError(
            f"PostgreSQL for the tests is unreachable at {url} ({type(exc).__name__}: {exc}); "
            "start it, or point OTP_TEST_DATABASE_URL at one (these tests never skip)"
        ) from exc
    await conn.close()


async def drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def drop_schema_sync(url: str, schema: str) -> None:
    asyncio.run(drop_schema(url, schema))


async def _ensure(url: str) -> None:
    """Reach the test server; create its database when the server has no such database."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        parts = urlsplit(url)
        database = parts.path.lstrip("/")
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")), timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{database}"')
        finally:
            await admin.close()
        print(f"created database {database!r}")
        conn = await asyncpg.connect(url, timeout=5)
    version = await conn.fetchval("SHOW server_version")
    await conn.close()
    print(f"PostgreSQL {version} reachable for the tests")


def main() -> int:
    """``python -m tests.support.pg``: check (and prepare) the tests' PostgreSQL; exit 1 if unusable."""
    url = database_url()
    try:
        asyncio.run(_ensure(url))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        print(
            f"PostgreSQL for the tests is unusable at {url}: {type(exc).__name__}: {exc}\n"
            "  start it, or point OTP_TEST_DATABASE_URL at one (the tests never skip)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
