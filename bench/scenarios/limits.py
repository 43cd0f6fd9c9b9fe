"""Abuse limits under a flood of distinct keys: one million new recipients and client IPs.

One capture-mode service with the abuse limits on (per recipient and per IP, one-hour windows,
so every key stays live for the whole run), driven by ``POST /v1/email`` bodies that each name
a new recipient and a new client address (IPv4, or a new IPv6 /64, in turn). Measured: the
requests/s of the fresh service, then, after the rest of the million keys went in, the
requests/s of the same service again; and its memory (VmRSS) before, after and at its peak.
Target: the loaded rate is at least 90% of the fresh one, and memory stays bounded (the
counters are capped at ``limits.max_keys`` per window length). Only with ``--only limits``
(about ten minutes at 2,000 requests/s).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from typing import Any

from bench import table
from bench.common import proc_memory_kib
from bench.harness import Bench
from bench.scenarios import Run, Scenario

RATIO_TARGET = 0.90
LIMITS = {
    "enabled": True,
    "per_recipient": {"count": 10, "window_seconds": 3600},
    "per_ip": {"count": 60, "window_seconds": 3600},
    "per_sms_prefix": None,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit-keys", type=int, default=1_000_000,
        help="limits: distinct recipients (and client IPs) sent in all (default 1,000,000)",
    )  # fmt: skip
    parser.add_argument(
        "--limit-measure", type=int, default=20_000,
        help="limits: requests in each measured run, fresh and loaded (default 20,000)",
    )  # fmt: skip


def run(bench: Bench, parts: Sequence[str]) -> dict[str, Any]:
    args = bench.args
    measure, total = args.limit_measure, args.limit_keys
    service = bench.start_service("limits", {"limits": LIMITS}, "WARNING")
    try:
        time.sleep(0.3)
        rss_start = proc_memory_kib(service.proc.pid).get("VmRSS")

        def drive(requests: int, warmup: int = 0) -> dict[str, Any]:
            return bench.loadgen(
                service, requests=requests, seconds=requests / 200 + 30,
                concurrency=args.concurrency, warmup=warmup, expect="captured", kind="email-ip",
            )  # fmt: skip

        fresh = drive(measure, warmup=1000)
        rss_fresh = proc_memory_kib(service.proc.pid).get("VmRSS")
        fill = drive(max(0, total - 2 * measure - 1000))
        loaded = drive(measure)
        memory = proc_memory_kib(service.proc.pid)
        if service.proc.poll() is not None:
            raise RuntimeError(f"the service died during the run:\n{service.log_tail()}")
        sent = sum(r["requests"] + r["warmup_requests"] for r in (fresh, fill, loaded))
        return {
            "fresh": fresh, "fill": fill, "loaded": loaded, "keys": sent,
            "ratio": loaded["rps"] / fresh["rps"] if fresh["rps"] else 0.0,
            "rss_start_kib": rss_start, "rss_fresh_kib": rss_fresh,
            "rss_end_kib": memory.get("VmRSS"), "rss_peak_kib": memory.get("VmHWM"),
        }  # fmt: skip
    finally:
        bench.stop(service.proc)


def table_rows(result: dict[str, Any]) -> list[str]:
    if not result:
        return []
    passed = "PASS" if result["ratio"] >= RATIO_TARGET else "MISS"
    return [
        table.row("limits on, fresh service, a new recipient and IP per request", result["fresh"]),
        table.row(
            f"limits on, after {result['keys']:,} distinct recipients and IPs",
            result["loaded"],
            f"{result['ratio']:.0%} of fresh (>= 90%): {passed}",
        ),
    ]


def memory_rows(result: dict[str, Any]) -> list[str]:
    if not result:
        return []
    return [
        f"| limits on, {result['keys']:,} distinct recipients and IPs "
        f"| {table.mib(result['rss_start_kib'])} | {table.mib(result['rss_end_kib'])} "
        f"| {table.mib(result['rss_peak_kib'])} |"
    ]


def runs(result: dict[str, Any]) -> Iterator[tuple[str, Run]]:
    if result:
        yield "limits fresh", result["fresh"]
        yield "limits fill", result["fill"]
        yield "limits loaded", result["loaded"]


SCENARIO = Scenario(
    name="limits",
    key="limits",
    run=run,
    help="abuse limits under one million distinct recipients and IPs (about 10 minutes)",
    default=False,
    add_arguments=add_arguments,
    table_rows=table_rows,
    memory_rows=memory_rows,
    runs=runs,
)
