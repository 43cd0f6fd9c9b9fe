"""Capture mode: ``POST /v1/email`` to a service that keeps messages in its inbox.

Three services: ``--log-level WARNING`` with the outbox in memory, the same with the outbox on
disk (what users run), and the default INFO logging (unless --skip-info). When the SMTP part
runs too, a concurrency-1 run on the disk one: the HTTP floor under SMTP run (b). With
``--before REF``, the disk WARNING run of otp-service as of git ``REF`` just before the current
one: a before/after from one run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from bench import table
from bench.common import proc_memory_kib, request_body
from bench.harness import Bench
from bench.profiling import profile_report, profile_start
from bench.scenarios import Run, Scenario

CAPTURE_TARGET_RPS = 1500.0
DURABLE_TARGET_RPS = 1000.0  # capture mode with the SQLite outbox on disk


def capture_phase(
    bench: Bench,
    log_level: str,
    profile: bool,
    sequential: bool = False,
    memory: bool = False,
    before: str | None = None,
) -> dict[str, Any]:
    """One capture-mode service; with ``sequential``, also a concurrency-1 run afterwards (the
    HTTP floor under SMTP run (b)), measured after the memory reading. ``memory`` keeps the
    outbox in an in-memory SQLite database: the same code path without the disk, to show what
    durability costs. ``before``: otp-service as of that git ref instead of the current code."""
    args = bench.args
    config: dict[str, Any] = {"capture": {"max_messages": 1000}}
    if memory:
        config["store"] = {"path": ":memory:"}
    name = f"capture-{log_level.lower()}{'-memory' if memory else ''}{'-before' if before else ''}"
    env = bench.ref_env(before) if before else None
    service = bench.start_service(name, config, log_level, env=env)
    try:
        time.sleep(0.3)
        rss_start = proc_memory_kib(service.proc.pid)
        spy = profile_start(bench, service.proc.pid, name) if profile else None
        result = bench.loadgen(
            service, requests=args.requests, seconds=args.duration,
            concurrency=args.concurrency, warmup=args.warmup, expect="captured",
        )  # fmt: skip
        result["profile"] = profile_report(bench, spy, name)
        rss_end = proc_memory_kib(service.proc.pid)
        result["log_level"] = log_level
        result["store"] = "memory" if memory else "file"
        result["before"] = before
        result["rss_start_kib"] = rss_start.get("VmRSS")
        result["rss_end_kib"] = rss_end.get("VmRSS")
        result["rss_peak_kib"] = rss_end.get("VmHWM")
        if service.proc.poll() is not None:
            raise RuntimeError(f"the service died during the run:\n{service.log_tail()}")
        if sequential:
            result["sequential"] = bench.loadgen(
                service, requests=args.smtp_messages, seconds=args.smtp_duration,
                concurrency=1, warmup=50, expect="captured",
            )  # fmt: skip
        return result
    finally:
        bench.stop(service.proc)


def run(bench: Bench, parts: Sequence[str]) -> list[dict[str, Any]]:
    """The in-memory and on-disk WARNING services (the latter as of --before first), then the
    INFO one."""
    before = bench.args.before
    results = [
        capture_phase(bench, "WARNING", profile=False, memory=True),
        *([capture_phase(bench, "WARNING", profile=False, before=before)] if before else []),
        capture_phase(bench, "WARNING", profile=True, sequential="email" in parts),
    ]
    if not bench.args.skip_info:
        results.append(capture_phase(bench, "INFO", profile=False))
    return results


def summary(runs: list[dict[str, Any]]) -> list[str]:
    return [f"- capture body: `{json.dumps(request_body('email', 0))}`"] if runs else []


def _version(run: dict[str, Any]) -> str:
    """``, before (REF)`` for a run of otp-service as of --before, else nothing."""
    return f", before ({run['before']})" if run.get("before") else ""


def table_rows(runs: list[dict[str, Any]]) -> list[str]:
    lines = []
    for run in runs:
        memory = run.get("store") == "memory"
        target = CAPTURE_TARGET_RPS if memory else DURABLE_TARGET_RPS
        passed = "PASS" if run["rps"] >= target else "MISS"
        outbox = "outbox in memory (no disk)" if memory else "SQLite outbox on disk"
        lines.append(
            table.row(
                f"capture, --log-level {run['log_level']}, {outbox}{_version(run)}",
                run,
                f">= {target:,.0f} req/s: {passed}",
            )
        )
    for run in runs:
        if "sequential" in run:
            lines.append(
                table.row(
                    f"capture, --log-level {run['log_level']}, sequential (HTTP floor under (b))",
                    run["sequential"],
                )
            )
    return lines


def notes(runs: list[dict[str, Any]]) -> list[str]:
    by_store = {
        run.get("store"): run
        for run in runs
        if run["log_level"] == "WARNING" and not run.get("before")
    }
    if not {"memory", "file"} <= by_store.keys():
        return []
    added = (by_store["file"]["p99_ms"] or 0) - (by_store["memory"]["p99_ms"] or 0)
    return [f"- durability adds {added:+.2f} ms to p99 (disk outbox vs in-memory)"]


def memory_rows(runs: list[dict[str, Any]]) -> list[str]:
    return [
        f"| capture, --log-level {run['log_level']}, outbox {run.get('store', 'file')}"
        f"{_version(run)}, after "
        f"{run['requests'] + run['warmup_requests']:,} requests (inbox bounded at 1000) "
        f"| {table.mib(run['rss_start_kib'])} "
        f"| {table.mib(run['rss_end_kib'])} | {table.mib(run['rss_peak_kib'])} |"
        for run in runs
    ]


def runs(results: list[dict[str, Any]]) -> Iterator[tuple[str, Run]]:
    for run in results:
        yield f"capture {run['log_level']}", run
        if "sequential" in run:
            yield f"capture {run['log_level']} sequential", run["sequential"]


SCENARIO = Scenario(
    name="capture",
    key="capture",
    run=run,
    help="capture mode",
    summary=summary,
    table_rows=table_rows,
    notes=notes,
    memory_rows=memory_rows,
    runs=runs,
)
