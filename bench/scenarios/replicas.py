"""Stores and workers (``--only replicas``): capture and SMTP throughput with the SQLite outbox
(one process), with PostgreSQL and one worker, and with PostgreSQL and two workers
(``serve --workers 2``), in one run on the same machine.

PostgreSQL is ``OTP_BENCH_DATABASE_URL`` (default: the server these machines run, database
``test``); each service gets a schema of its own, dropped afterwards. Targets (issue 9): two
workers >= 1.6x one worker; one PostgreSQL worker >= 0.8x SQLite.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

from bench import table
from bench.harness import Bench
from bench.profiling import profile_report, profile_start
from bench.scenarios import Run, Scenario
from bench.scenarios.smtp import start_sink

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
WORKERS_TARGET = 1.6  # 2 workers / 1 worker
POSTGRES_TARGET = 0.8  # PostgreSQL 1 worker / SQLite
VARIANTS = [("SQLite, 1 process", False, 1), ("PostgreSQL, 1 worker", True, 1),
            ("PostgreSQL, 2 workers", True, 2)]  # fmt: skip


def database_url() -> str:
    return os.environ.get("OTP_BENCH_DATABASE_URL") or DEFAULT_URL


def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def _measure(
    bench: Bench, name: str, config: dict[str, Any], postgres: bool, workers: int,
    expect: str, concurrency: int, requests: int, seconds: float,
) -> dict[str, Any]:  # fmt: skip
    schema = f"otp_bench_{secrets.token_hex(4)}"
    if postgres:
        config = config | {"store": {"url": database_url(), "schema": schema, "pool_size": 10}}
    extra = ["--workers", str(workers)] if workers > 1 else []
    service = bench.start_service(name, config, "WARNING", extra_args=extra)
    try:
        spy = profile_start(bench, service.proc.pid, name) if workers == 1 else None
        result = bench.loadgen(
            service, requests=requests, seconds=seconds, concurrency=concurrency,
            warmup=min(500, requests // 4), expect=expect,
        )  # fmt: skip
        result["profile"] = profile_report(bench, spy, name)
        return result
    finally:
        bench.stop(service.proc)
        if postgres:
            _drop_schema(database_url(), schema)


def run(bench: Bench, parts: Sequence[str]) -> dict[str, Any]:
    args = bench.args
    sink, port, label, _ = start_sink(bench)
    connector = {"host": "127.0.0.1", "port": port, "fromEmail": "bench@example.com",
                 "name": "bench", "ignoreTLS": True}  # fmt: skip
    results: dict[str, Any] = {"sink": label, "capture": [], "smtp": []}
    try:
        for label_, postgres, workers in VARIANTS:
            slug = f"{'pg' if postgres else 'sqlite'}-{workers}w"
            capture = _measure(
                bench, f"replicas-capture-{slug}", {"capture": {"max_messages": 1000}},
                postgres, workers, "captured", args.concurrency, args.requests, args.duration,
            )  # fmt: skip
            smtp = _measure(
                bench, f"replicas-smtp-{slug}", {"email": {"provider": "smtp", "smtp": connector}},
                postgres, workers, "sent", args.smtp_concurrency, args.smtp_messages,
                args.smtp_duration,
            )  # fmt: skip
            results["capture"].append(capture | {"label": label_, "workers": workers})
            results["smtp"].append(smtp | {"label": label_, "workers": workers})
    finally:
        bench.stop(sink)
    return results


def _ratios(runs: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    sqlite, pg1, pg2 = (r["rps"] for r in runs)
    return (pg2 / pg1 if pg1 else None, pg1 / sqlite if sqlite else None)


def _verdict(ratio: float | None, target: float) -> str:
    return "n/a" if ratio is None else ("PASS" if ratio >= target else "MISS")


def section(results: dict[str, Any]) -> list[str]:
    if not results:
        return []
    lines = ["", "### Stores and workers (SQLite, PostgreSQL 1 and 2 workers)", "",
             f"SMTP sink: {results['sink']}. PostgreSQL: `{database_url().split('@')[-1]}`.",
             "", *table.HEADER]  # fmt: skip
    for kind in ("capture", "smtp"):
        for run_ in results[kind]:
            lines.append(table.row(f"{kind}, {run_['label']}", run_))
    lines += [
        "",
        "- service CPU sums the supervisor and its workers; 'other' is mostly PostgreSQL "
        "(and the SMTP sink in the smtp rows): on a 2-core machine the load generator and "
        "PostgreSQL share the cores with the workers",
    ]
    for kind in ("capture", "smtp"):
        workers, postgres = _ratios(results[kind])
        verdict_w = "n/a" if workers is None else ("PASS" if workers >= WORKERS_TARGET else "MISS")
        verdict_p = (
            "n/a" if postgres is None else ("PASS" if postgres >= POSTGRES_TARGET else "MISS")
        )
        lines.append(
            f"- {kind}: 2 workers / 1 worker = {table.num(workers, 2)}x (>= {WORKERS_TARGET}x: "
            f"{verdict_w}); PostgreSQL 1 worker / SQLite = {table.num(postgres, 2)}x "
            f"(>= {POSTGRES_TARGET}x: {verdict_p})"
        )
    return lines


def runs(results: dict[str, Any]) -> Iterator[tuple[str, Run]]:
    for kind in ("capture", "smtp"):
        for run_ in results.get(kind, []):
            yield f"{kind} {run_['label']}", run_


SCENARIO = Scenario(
    name="replicas",
    key="replicas",
    run=run,
    help="SQLite vs PostgreSQL with 1 and 2 workers, capture and SMTP",
    default=False,
    section=section,
    runs=runs,
)
