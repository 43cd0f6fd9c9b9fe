"""What a second worker costs (``--only workers``): CPU per accepted message with 1 and 2
workers on PostgreSQL, the service's and PostgreSQL's own, and how busy the machine is.

PostgreSQL is a cluster of the bench's own (``initdb`` in the bench's folder, as the tests'
:class:`tests.support.pg_cluster.PgCluster`), so every process under its postmaster (backends,
WAL writer, checkpointer) is ours and its CPU, read from /proc, is PostgreSQL's cost alone.
Runs alternate 1 worker, 2 workers, ``--workers-rounds`` times (A/B back to back: a machine
shared with other jobs drifts), each on a fresh schema, dropped after its run, with a
``CHECKPOINT`` before each (one run's autovacuum and dirty pages never land in another's
window); capture (``POST /v1/email``, limits off). Targets (issue 17): service CPU per
message with 2 workers at most 1.1x that with 1; the machine at least 185% busy (of 200%) with
2. ``--workers-rate R`` sends R requests/s in every run (equal throughput below saturation)
instead of a closed loop. ``--before REF`` adds, in each round, a 1-worker run of otp-service
as of git ``REF`` (PostgreSQL's CPU per message before/after).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import table
from bench.common import loadavg
from bench.harness import Bench
from bench.scenarios import Run, Scenario

CONTENTION_TARGET = 1.1  # service CPU per message, 2 workers / 1 worker
BUSY_TARGET = 185.0  # % of the machine's 200% with 2 workers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers-rounds", type=int, default=2,
        help="workers: rounds of (1 worker, 2 workers) runs, back to back (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--workers-rate", type=float, default=0.0, metavar="R",
        help="workers: send R requests/s in every run instead of as many as the service takes "
        "(equal throughput for 1 and 2 workers, below saturation)",
    )  # fmt: skip


def _postmaster(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split("\n", 1)[0])


def per_message(run: Run, key: str) -> float | None:
    """CPU milliseconds per accepted message from a ``*_cpu_pct`` reading."""
    pct = run.get(key)
    return None if pct is None or not run["rps"] else 10 * pct / run["rps"]


def _sql(url: str, statement: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def run(bench: Bench, parts: Sequence[str]) -> dict[str, Any]:
    from tests.support.pg_cluster import PgCluster

    args = bench.args
    cluster = PgCluster()
    runs: list[dict[str, Any]] = []
    try:
        cluster.init()
        cluster.start()
        postmaster = _postmaster(cluster.data)
        versions = [("before", 1), ("service", 1), ("service", 2)]
        for round_ in range(max(1, args.workers_rounds)):
            for version, workers in versions if args.before else versions[1:]:
                env = bench.ref_env(args.before) if version == "before" else None
                name = f"workers-{version}-{workers}w-{round_ + 1}"
                schema = f"bench_{round_}_{version}_{workers}"
                config = {
                    "capture": {"max_messages": 1000},
                    "store": {"url": cluster.url, "schema": schema, "pool_size": 10},
                }  # fmt: skip
                # The last run's dirty pages written now, not in this run's window.
                _sql(cluster.url, "CHECKPOINT")
                extra = ["--workers", str(workers)] if workers > 1 else []
                service = bench.start_service(name, config, "WARNING", extra_args=extra, env=env)
                load = loadavg()
                try:
                    result = bench.loadgen(
                        service, requests=args.requests, seconds=args.duration,
                        concurrency=args.concurrency, warmup=min(500, args.requests // 4),
                        expect="captured", fake_pid=postmaster, rate=args.workers_rate,
                    )  # fmt: skip
                finally:
                    bench.stop(service.proc)
                    # Its tables gone: no autovacuum of them in a later run's window.
                    _sql(cluster.url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                result |= {"workers": workers, "round": round_ + 1, "loadavg": load,
                           "postgres_cpu_pct": result.get("fake_cpu_pct"),
                           "before": args.before if version == "before" else None}  # fmt: skip
                result["service_ms"] = per_message(result, "service_cpu_pct")
                result["postgres_ms"] = per_message(result, "postgres_cpu_pct")
                runs.append(result)
    finally:
        cluster.remove()
    return {"runs": runs}


def _median(runs: list[Run], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def section(results: dict[str, Any]) -> list[str]:
    if not results:
        return []
    lines = [
        "", "### A second worker's cost (PostgreSQL, capture)", "",
        "| run | workers | req/s | service CPU | service ms/msg | PostgreSQL CPU "
        "| PostgreSQL ms/msg | machine busy | load avg before |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]  # fmt: skip
    for r in results["runs"]:
        version = f" (before, {r['before']})" if r.get("before") else ""
        lines.append(
            f"| {r['round']} | {r['workers']}{version} | {table.num(r['rps'])} "
            f"| {table.pct(r.get('service_cpu_pct'))} | {table.num(r['service_ms'], 3)} "
            f"| {table.pct(r.get('postgres_cpu_pct'))} | {table.num(r['postgres_ms'], 3)} "
            f"| {table.pct(r.get('machine_cpu_pct'))} | {r['loadavg']} |"
        )
    before = [r for r in results["runs"] if r.get("before")]
    one = [r for r in results["runs"] if r["workers"] == 1 and not r.get("before")]
    two = [r for r in results["runs"] if r["workers"] == 2]
    s1, s2 = _median(one, "service_ms"), _median(two, "service_ms")
    ratio = s2 / s1 if s1 and s2 else None
    busy = _median(two, "machine_cpu_pct")
    verdict = "n/a" if ratio is None else ("PASS" if ratio <= CONTENTION_TARGET else "MISS")
    busy_verdict = "n/a" if busy is None else ("PASS" if busy >= BUSY_TARGET else "MISS")
    lines += [
        "",
        f"- service CPU per message, 2 workers / 1 (medians): {table.num(ratio, 2)}x "
        f"(<= {CONTENTION_TARGET}x: {verdict})",
        f"- machine busy with 2 workers (median): {table.pct(busy)} (>= {BUSY_TARGET:.0f}%: "
        f"{busy_verdict}); other jobs on the machine count here too",
        "- PostgreSQL CPU per message (medians): 1 worker "
        f"{table.num(_median(one, 'postgres_ms'), 3)}"
        f" ms, 2 workers {table.num(_median(two, 'postgres_ms'), 3)} ms",
    ]
    if before:
        lines.append(
            f"- PostgreSQL CPU per message, 1 worker, before ({before[0]['before']}, medians): "
            f"{table.num(_median(before, 'postgres_ms'), 3)} ms; the service's "
            f"{table.num(_median(before, 'service_ms'), 3)} ms"
        )
    return lines


def runs(results: dict[str, Any]) -> Iterator[tuple[str, Run]]:
    for r in results.get("runs", []):
        before = " before" if r.get("before") else ""
        yield f"workers {r['workers']}{before} (round {r['round']})", r


SCENARIO = Scenario(
    name="workers",
    key="workers",
    run=run,
    help="CPU per message with 1 and 2 workers on PostgreSQL, the service's and PostgreSQL's",
    default=False,
    add_arguments=add_arguments,
    section=section,
    runs=runs,
)
