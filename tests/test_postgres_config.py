"""``store.url`` and friends: validation, ``check-config`` without the password, ``migrate``,
the schema version check, and the example files for replicas."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from otp_service.cli import main
from otp_service.config import parse_config
from otp_service.errors import ConfigError
from otp_service.store.migrations import (
    LATEST,
    MIGRATIONS,
    SchemaTooNewError,
    migrate,
    schema_version,
)
from otp_service.store.postgres import PostgresStore

from .support import ROOT

SECRET = "Sup3rS3cretPw"


def test_migrations_are_numbered_one_to_latest_in_order() -> None:
    """Migrations run in order and each once: numbered 1..LATEST without a gap (a gap would let
    a database reach a later version and never get the missing one)."""
    assert [version for version, _, _ in MIGRATIONS] == list(range(1, LATEST + 1))


def test_store_url_selects_postgresql_with_defaults() -> None:
    """store.url picks PostgreSQL with the default schema and pool size; no url: SQLite."""
    store = parse_config({"store": {"url": "postgresql://otp:pw@db:5432/logto"}}).store
    assert (store.backend, store.schema, store.pool_size) == ("postgresql", "otp_service", 10)
    assert parse_config({}).store.backend == "sqlite"


@pytest.mark.parametrize(
    ("store", "where"),
    [
        ({"url": "mysql://u:p@h/d"}, "store.url"),
        ({"url": "postgresql://u:p@h:99999/d"}, "store.url"),
        ({"url": "postgresql:///d"}, "store.url"),
        ({"url": "postgresql://h/d", "schema": "Robert'); DROP"}, "store.schema"),
        ({"url": "postgresql://h/d", "pool_size": 0}, "store.pool_size"),
    ],
)
def test_store_config_refuses_bad_values(store: dict[str, Any], where: str) -> None:
    """A URL that is not PostgreSQL's, a bad port, no host, an odd schema name or pool size
    is a config error naming the field."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"store": store})
    assert where in {p.path for p in caught.value.problems}


def test_check_config_masks_the_database_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check-config prints where the store is, never the password in the URL, even when the
    URL is wrong."""
    monkeypatch.setenv("DATABASE_URL", f"postgresql://otp:{SECRET}@db.internal:5432/logto")
    path = tmp_path / "config.yaml"
    path.write_text("store:\n  url: ${DATABASE_URL}\n")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr()
    assert "postgresql://otp:***@db.internal:5432/logto" in out.out
    assert SECRET not in out.out + out.err
    monkeypatch.setenv("DATABASE_URL", f"postgres://otp:{SECRET}@db.internal:notaport/logto")
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr()
    assert "store.url" in out.err and SECRET not in out.out + out.err


@pytest.mark.postgres
def test_migrate_command_applies_then_has_nothing_to_do(
    tmp_path: Path, pg_schema: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """otp-service migrate creates the schema once; run again, it has nothing to apply."""
    url, schema = pg_schema
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"store": {"url": url, "schema": schema}}))
    assert main(["migrate", "--config", str(path)]) == 0
    versions = ", ".join(str(version) for version, _, _ in MIGRATIONS)
    assert f"applied {versions}" in capsys.readouterr().out
    assert main(["migrate", "--config", str(path)]) == 0
    assert "nothing to apply" in capsys.readouterr().out


@pytest.mark.postgres
async def test_concurrent_migrations_apply_each_version_once(pg_schema: tuple[str, str]) -> None:
    """Five replicas starting together migrate under the advisory lock: one applies, the
    others find it done."""
    url, schema = pg_schema
    connections = [await asyncpg.connect(url) for _ in range(5)]
    try:
        applied = await asyncio.gather(*(migrate(conn, schema) for conn in connections))
        assert sorted(map(len, applied)) == [0, 0, 0, 0, len(MIGRATIONS)]
        assert await schema_version(connections[0], schema) == LATEST
    finally:
        for conn in connections:
            await conn.close()


@pytest.mark.postgres
async def test_message_bodies_are_compressed_with_lz4_where_the_server_has_it(
    pg_schema: tuple[str, str],
) -> None:
    """Bodies (about 4 KB of JSON an email) use lz4, cheaper than pglz; a server built without
    lz4 keeps its default and still migrates."""
    url, schema = pg_schema
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn, schema)
        try:
            await conn.execute("SET default_toast_compression = 'lz4'")
            expected = "l"
        except asyncpg.PostgresError:
            expected = ""
        for table in ("messages", "captured"):
            method = await conn.fetchval(
                "SELECT attcompression::text FROM pg_attribute "
                "WHERE attrelid = to_regclass($1) AND attname = 'body'",
                f'"{schema}".{table}',
            )
            assert method == expected, table
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_schema_newer_than_the_code_is_refused(pg_schema: tuple[str, str]) -> None:
    """A database migrated by a newer release is refused at start with a clear message."""
    url, schema = pg_schema
    store = PostgresStore(url, schema=schema, pool_size=1)
    await store.open()
    async with store.connection() as conn:
        await conn.execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, 'future')",
            LATEST + 1,
        )
    await store.close()
    with pytest.raises(SchemaTooNewError, match="newer than this otp-service"):
        await PostgresStore(url, schema=schema, pool_size=1).open()


@pytest.mark.parametrize("example", ["postgres.yaml", "kubernetes.yaml"])
def test_replica_examples_validate(example: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replica examples in examples/ are valid configurations as written."""
    for name, value in {"DATABASE_URL": "postgresql://otp:pw@db:5432/logto",
                        "OTP_SERVICE_TOKEN": "0123456789abcdef0123", "SMTP_PASSWORD": "x"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    docs = list(yaml.safe_load_all((ROOT / "examples" / example).read_text()))
    data = docs[0]["data"]["config.yaml"] if example == "kubernetes.yaml" else yaml.dump(docs[0])
    from otp_service.config.settings import expand_env

    problems: list[Any] = []
    config = parse_config(expand_env(yaml.safe_load(data), "", problems))
    assert not problems and config.store.backend == "postgresql"
