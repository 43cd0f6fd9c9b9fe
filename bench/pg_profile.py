"""What PostgreSQL does per captured message, version by version (issue 17):

    python -m bench.pg_profile --versions 69c267d,now --requests 20000 --rounds 2

Starts a PostgreSQL cluster of its own with ``pg_stat_statements`` (``track = all``, so the
statements inside ``accept_messages`` count too), then for each version (``now``: this
checkout; anything else: a git ref, run as :meth:`bench.harness.Bench.ref_env` does) and
round: the service with one worker, capture mode, limits off, on a fresh schema; 1000
requests of warm-up; then the measured requests (the bench's load generator, concurrency 50).
Reported per accepted message: the statements run (calls, time, rows), commits, WAL bytes and
records, WAL flushes, and the CPU of every process under the postmaster, in the window and
after it (5 s later; a ``VACUUM`` of the run's tables and a ``CHECKPOINT``: the work the
window leaves behind). ``--json FILE`` keeps every figure. ``pg_stat_statements`` itself costs
some CPU: compare versions with each other, not with ``python -m bench --only workers``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import CLK_TCK
from bench.harness import Bench
from bench.runner import parse_args
from tests.support.pg_cluster import PgCluster

Snapshot = dict[str, Any]


class StatCluster(PgCluster):
    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=on "
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all "
            "-c track_io_timing=on"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds under the postmaster: its own, its reaped children's, each live child's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    out = {"postmaster": (int(fields[11]) + int(fields[12])) / CLK_TCK,
           "exited children": (int(fields[13]) + int(fields[14])) / CLK_TCK}  # fmt: skip
    kids: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += (task / "children").read_text().split()
    for kid in kids:
        try:
            stat = Path(f"/proc/{kid}/stat").read_text().rpartition(")")[2].split()
            name = Path(f"/proc/{kid}/cmdline").read_text().replace("\0", " ").strip()
        except OSError:
            continue
        out[f"{kid} {name[:50]}"] = (int(stat[11]) + int(stat[12])) / CLK_TCK
    return out


def cpu_total(before: dict[str, float], after: dict[str, float]) -> float:
    """The CPU between two readings: a child that exited between them moved its time from its
    own entry to the postmaster's exited children, so the totals' difference is right."""
    return sum(after.values()) - sum(before.values())


async def sql(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def snapshot(url: str, schema: str) -> Snapshot:
    conn = await asyncpg.connect(url)
    try:
        statements = await conn.fetch(
            "SELECT queryid, toplevel, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query,"
            " calls, total_exec_time, rows, shared_blks_hit, wal_bytes::float8 AS wal_bytes "
            "FROM pg_stat_statements"
        )
        wal = await conn.fetchrow(
            "SELECT wal_records, wal_fpi, wal_bytes::float8 AS wal_bytes, wal_sync FROM pg_stat_wal"
        )
        database = await conn.fetchrow(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, blks_hit "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        tables = await conn.fetch(
            "SELECT relname, seq_scan, idx_scan, n_tup_hot_upd, n_dead_tup "
            "FROM pg_stat_user_tables WHERE schemaname = $1",
            schema,
        )
        return {
            "statements": {(r["queryid"], r["toplevel"]): dict(r) for r in statements},
            "wal": dict(wal or {}), "database": dict(database or {}),
            "tables": {r["relname"]: dict(r) for r in tables},
        }  # fmt: skip
    finally:
        await conn.close()


def _counts(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if isinstance(v, int)}


def per_message(a: Snapshot, b: Snapshot, n: int) -> dict[str, Any]:
    statements = []
    for key, row in b["statements"].items():
        old = a["statements"].get(key, {})
        calls = row["calls"] - old.get("calls", 0)
        if calls > 0 and row["toplevel"]:
            statements.append({
                "query": row["query"], "calls": calls / n,
                "ms": (row["total_exec_time"] - old.get("total_exec_time", 0)) / n,
                "rows": (row["rows"] - old.get("rows", 0)) / n,
                "wal_bytes": (row["wal_bytes"] - old.get("wal_bytes", 0)) / n,
            })  # fmt: skip
    statements.sort(key=lambda s: -s["ms"])
    return {
        "statements": statements,
        "wal": {k: (b["wal"][k] - a["wal"][k]) / n for k in b["wal"]},
        "database": {k: (b["database"][k] - a["database"][k]) / n for k in b["database"]},
        "tables": {t: _counts(a["tables"].get(t, {}), row) for t, row in b["tables"].items()},
    }


def profile(bench: Bench, cluster: PgCluster, postmaster: int, version: str, round_: int,
            requests: int) -> dict[str, Any]:  # fmt: skip
    env = None if version == "now" else bench.ref_env(version)
    schema = f"profile_{round_}_{version}".replace("-", "_").replace("/", "_")
    config = {"capture": {"max_messages": 1000},
              "store": {"url": cluster.url, "schema": schema, "pool_size": 10}}  # fmt: skip
    asyncio.run(sql(cluster.url, "CHECKPOINT"))
    service = bench.start_service(f"profile-{version}-{round_}", config, "WARNING", env=env)
    try:
        bench.loadgen(service, requests=1000, seconds=30, concurrency=50, warmup=0,
                      expect="captured", fake_pid=postmaster)  # fmt: skip
        time.sleep(2)
        asyncio.run(sql(cluster.url, "SELECT pg_stat_statements_reset()"))
        s0, c0 = asyncio.run(snapshot(cluster.url, schema)), tree_cpu(postmaster)
        result = bench.loadgen(service, requests=requests, seconds=60, concurrency=50, warmup=0,
                               expect="captured", fake_pid=postmaster)  # fmt: skip
        c1, s1 = tree_cpu(postmaster), asyncio.run(snapshot(cluster.url, schema))
        time.sleep(5)
        s2 = asyncio.run(snapshot(cluster.url, schema))
    finally:
        bench.stop(service.proc)
    tables = ", ".join(f"{schema}.{t}" for t in ("messages", "attempts", "captured"))
    asyncio.run(sql(cluster.url, f"VACUUM {tables}", "CHECKPOINT"))
    c3 = tree_cpu(postmaster)
    asyncio.run(sql(cluster.url, f"DROP SCHEMA {schema} CASCADE"))
    n = result["requests"]
    return {
        "version": version, "round": round_ + 1, "messages": n, "rps": result["rps"],
        "cpu_ms": 1000 * cpu_total(c0, c1) / n,
        "cpu_ms_after": 1000 * cpu_total(c1, c3) / n,  # 5 s later, VACUUM, CHECKPOINT
        "window": per_message(s0, s1, n), "after": per_message(s1, s2, n),
    }  # fmt: skip


def report(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| version | round | req/s | CPU ms/msg | + after | statements/msg | commits/msg "
        "| WAL B/msg | WAL records/msg | WAL flushes/msg | statement ms/msg |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in runs:
        w = r["window"]
        counted = [s for s in w["statements"] if s["query"] not in ("BEGIN", "COMMIT")]
        lines.append(
            f"| {r['version']} | {r['round']} | {r['rps']:,.0f} | {r['cpu_ms']:.3f} "
            f"| {r['cpu_ms_after']:.3f} | {sum(s['calls'] for s in counted):.2f} "
            f"| {w['database']['xact_commit']:.3f} | {w['wal']['wal_bytes']:,.0f} "
            f"| {w['wal']['wal_records']:.1f} | {w['wal']['wal_sync']:.3f} "
            f"| {sum(s['ms'] for s in w['statements']):.3f} |"
        )
    for r in runs:
        lines += ["", f"{r['version']}, round {r['round']}: statements per message", "",
                  "| calls | ms | rows | WAL B | statement |", "|--:|--:|--:|--:|---|"]  # fmt: skip
        for s in r["window"]["statements"]:
            if s["ms"] >= 0.0005:
                lines.append(f"| {s['calls']:.3f} | {s['ms']:.4f} | {s['rows']:.2f} "
                             f"| {s['wal_bytes']:,.0f} | `{s['query']}` |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_profile", description=__doc__)
    parser.add_argument("--versions", default="now", help="comma-separated: now and/or git refs")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    cluster = StatCluster()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(parse_args(["--only", "workers"]), Path(tmp))
        try:
            cluster.init()
            cluster.start()
            asyncio.run(sql(cluster.url, "CREATE EXTENSION pg_stat_statements"))
            postmaster = int((cluster.data / "postmaster.pid").read_text().split("\n", 1)[0])
            for round_ in range(args.rounds):
                for version in args.versions.split(","):
                    runs.append(profile(bench, cluster, postmaster, version, round_,
                                        args.requests))  # fmt: skip
        finally:
            bench.cleanup()
            cluster.remove()
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1, default=str))
    print(report(runs))


if __name__ == "__main__":
    main()
