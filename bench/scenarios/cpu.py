"""CPU per captured request (``--only cpu``): the service against a bare aiohttp+JSON endpoint.

Back to back, ``--cpu-rounds`` times (default 2) in alternation: the reference
(``bench.reference_app``: parse Logto's body, answer JSON, nothing else) and the service in
capture mode (``--log-level WARNING``, the SQLite outbox on disk, limits off), each driven by
the load generator at ``--cpu-concurrency`` (20) for ``--duration`` seconds or ``--requests``.
Reported: each process's CPU time per request (its CPU, children included, over the requests
it answered) and the ratio service ÷ reference per round, with the load average when each
run started: the machine may be shared, so the ratio, measured seconds apart, is the figure
to read. Target: at most 3 times. ``--before REF`` also runs otp-service as of git ``REF``
in each round, alternating which of the two goes first: a before/after from one run.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from bench.common import ROOT, loadavg
from bench.harness import Bench, Service
from bench.profiling import profile_report, profile_start
from bench.scenarios import Run, Scenario
from tests.support.ports import free_port

CPU_RATIO_TARGET = 3.0


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--cpu-rounds", type=int, default=2,
        help="cpu: reference/service pairs, back to back (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--cpu-concurrency", type=int, default=20,
        help="cpu: concurrency of each run (default 20)",
    )  # fmt: skip


def cpu_ms(run: Run) -> float | None:
    """CPU milliseconds of the measured process per request it answered."""
    pct, answered = run.get("service_cpu_pct"), run["requests"] - run["errors"]
    if pct is None or answered <= 0:
        return None
    return float(pct) / 100 * run["seconds"] * 1000 / answered


def _reference(bench: Bench) -> Service:
    port = free_port()
    log_path = bench.workdir / "reference.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.reference_app", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
    bench.procs.append(proc)
    service = Service(proc, port, log_path)
    bench._wait_healthy(service)
    return service


def _measure(bench: Bench, service: Service) -> Run:
    args = bench.args
    load = loadavg()
    run = bench.loadgen(
        service, requests=args.requests, seconds=args.duration,
        concurrency=args.cpu_concurrency, warmup=args.warmup, expect="captured",
    )  # fmt: skip
    run["loadavg"] = load
    run["cpu_ms"] = cpu_ms(run)
    return run


def _service(bench: Bench, name: str, env: dict[str, str] | None, profile: bool) -> Run:
    service = bench.start_service(name, {"capture": {"max_messages": 1000}}, "WARNING", env=env)
    try:
        spy = profile_start(bench, service.proc.pid, name) if profile else None
        own = _measure(bench, service)
        own["profile"] = profile_report(bench, spy, name)
    finally:
        bench.stop(service.proc)
    return own


def run(bench: Bench, parts: Sequence[str]) -> dict[str, Any]:
    before = bench.args.before
    env = bench.ref_env(before) if before else None
    rounds = []
    for number in range(bench.args.cpu_rounds):
        reference = _reference(bench)
        try:
            ref = _measure(bench, reference)
        finally:
            bench.stop(reference.proc)
        item: dict[str, Any] = {"reference": ref}
        # Alternated: before first in odd rounds, after first in even ones.
        order = [("before", env), ("service", None)] if before else [("service", None)]
        for slug, environment in order if number % 2 == 0 else order[::-1]:
            own = _service(bench, f"cpu-{slug}-{number}", environment, number == 0)
            ratio = own["cpu_ms"] / ref["cpu_ms"] if own["cpu_ms"] and ref["cpu_ms"] else None
            item[slug], item[f"{slug}_ratio"] = own, ratio
        rounds.append(item)
    return {"rounds": rounds, "concurrency": bench.args.cpu_concurrency, "before": before}


def section(result: dict[str, Any]) -> list[str]:
    lines = [
        "## CPU per captured request",
        "",
        f"`POST /v1/email` at concurrency {result['concurrency']}, back to back: a bare "
        "aiohttp+JSON endpoint (`bench/reference_app.py`) and the service (capture mode, "
        "WARNING, SQLite outbox on disk). CPU of the process (children included) per answered "
        "request; load average (1, 5, 15 min) when each run started.",
        "",
        "| round | reference CPU/req | service CPU/req | service ÷ reference | reference req/s "
        "| service req/s | load (reference; service) |",
        "| --: | --: | --: | --: | --: | --: | --- |",
    ]
    for number, item in enumerate(result["rounds"], 1):
        ref = item["reference"]
        for slug in ("before", "service"):
            if slug not in item:
                continue
            own, ratio = item[slug], item[f"{slug}_ratio"]
            label = f"{number}, before ({result['before']})" if slug == "before" else f"{number}"
            lines.append(
                f"| {label} | {_ms(ref['cpu_ms'])} | {_ms(own['cpu_ms'])} | "
                f"{f'{ratio:.2f}' if ratio else 'n/a'} | {ref['rps']:,.0f} | {own['rps']:,.0f} "
                f"| {ref['loadavg']}; {own['loadavg']} |"
            )
    lines += ["", f"Target: service ÷ reference ≤ {CPU_RATIO_TARGET:g}.", ""]
    return lines


def _ms(value: float | None) -> str:
    return f"{value:.3f} ms" if value is not None else "n/a"


def runs(result: dict[str, Any]) -> Iterator[tuple[str, Run]]:
    for number, item in enumerate(result["rounds"], 1):
        yield f"cpu reference {number}", item["reference"]
        if "before" in item:
            yield f"cpu before {number}", item["before"]
        yield f"cpu service {number}", item["service"]


SCENARIO = Scenario(
    name="cpu",
    key="cpu",
    run=run,
    help="CPU per captured request against a bare aiohttp+JSON endpoint",
    default=False,
    add_arguments=add_arguments,
    section=section,
    runs=runs,
)
