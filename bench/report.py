"""The Markdown report: a heading, the shared table, each scenario's section, memory, errors.

Every scenario contributes through its hooks (:class:`bench.scenarios.Scenario`), in the order
of ``bench.runner.SCENARIOS``; ``--json`` prints the report dict itself instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench import table
from bench.scenarios import Run, Scenario

MEMORY_HEADER = [
    "| service memory (VmRSS, MiB) | after start | after run | peak (VmHWM) |",
    "|---|--:|--:|--:|",
]


def markdown(report: dict[str, Any], scenarios: Sequence[Scenario]) -> str:
    """The report of one benchmark run, for the scenarios whose results it holds."""
    meta = report["meta"]
    present = [(scenario, report[scenario.key]) for scenario in scenarios if scenario.key in report]
    lines = [
        "## otp-service benchmark",
        "",
        f"- machine: {meta['cpus']} CPUs, {meta['platform']}; Python {meta['python']}, "
        f"aiohttp {meta['aiohttp']}, aiosmtplib {meta['aiosmtplib']}, vonage {meta['vonage']}, "
        f"alibabacloud-dysmsapi20170525 {meta['aliyun']}, twilio {meta.get('twilio', 'n/a')}, "
        f"otp-service {meta['otp_service']}",
        f"- parts run: {', '.join(meta['parts'])}",
        f"- load average (1/5/15 min) at start: {meta['loadavg_start']}, "
        f"at end: {meta['loadavg_end']}",
        "- the load generator (a minimal keep-alive HTTP/1.1 client, separate process) shares "
        "these CPUs with the "
        "service: req/s is a lower bound for the service alone; latencies include client-side "
        "queueing. CPU columns are % of one CPU during the measured window (200% = the whole "
        "machine); 'loadgen' is the client (the load-generator process; for (a) and (a2) this "
        "bench process, for the SMS (a) runs the process calling the SDK); 'other' is "
        "everything else on the machine (the SMTP sink, other people's jobs): when it is high, "
        "the numbers are depressed.",
        "- every request goes to a new recipient (`user<N>@example.com`, a new phone number): "
        "the service deduplicates a repeated (to, type, code) and limits messages per recipient",
    ]
    for note in meta.get("config_notes", []):
        lines.append(f"- note: {note}")
    for scenario, result in present:
        lines += scenario.summary(result)
    rows = [row for scenario, result in present for row in scenario.table_rows(result)]
    if rows:
        lines += ["", *table.HEADER, *rows]
    lines += smtp_ceiling(report)
    notes = [note for scenario, result in present for note in scenario.notes(result)]
    if notes:
        lines += ["", *notes]
    for scenario, result in present:
        lines += scenario.section(result)
    memory = [row for scenario, result in present for row in scenario.memory_rows(result)]
    if memory:
        lines += ["", *MEMORY_HEADER, *memory]
    runs: list[tuple[str, Run]] = [
        named for scenario, result in present for named in scenario.runs(result)
    ]
    samples = [(name, r["error_samples"]) for name, r in runs if r.get("error_samples")]
    if samples:
        lines += ["", "Errors seen:"]
        for name, errors in samples:
            for text, count in errors.items():
                lines.append(f"- {name}: {count} x {text}")
    for name, run in runs:
        profile = run.get("profile")
        if not profile:
            continue
        lines += [
            "",
            f"py-spy profile of the service during '{name}' ({profile['samples']} samples, "
            f"only samples running Python (--gil); raw stacks in {profile['file']}; profiling "
            "slows the run):",
            "",
            "| our code, inclusive | % of samples |",
            "|---|--:|",
        ]
        lines += [f"| `{p['function']}` | {p['pct']:.1f} |" for p in profile["own_code_inclusive"]]
        lines += ["", "| leaf function (any code), self | % of samples |", "|---|--:|"]
        lines += [f"| `{p['function']}` | {p['pct']:.1f} |" for p in profile["self_any_code"]]
    return "\n".join(lines)


def smtp_ceiling(report: dict[str, Any]) -> list[str]:
    """What the HTTP hop alone (capture's sequential run) allows SMTP's (b)/(a) to reach."""
    capture_runs: list[dict[str, Any]] = report.get("capture", [])
    smtp = report.get("smtp")
    lines: list[str] = []
    floor = next((run["sequential"] for run in capture_runs if "sequential" in run), None)
    if smtp and floor and smtp["baseline"]["rps"] and floor["rps"]:
        t_smtp, t_http = 1 / smtp["baseline"]["rps"], 1 / floor["rps"]
        lines += [
            "",
            f"Ceiling of (b)/(a) from the HTTP hop alone: a sequential message in (b) costs at "
            f"least (a)'s {t_smtp * 1000:.2f} ms plus the capture-mode HTTP round trip of "
            f"{t_http * 1000:.2f} ms, so (b)/(a) <= {100 * t_smtp / (t_smtp + t_http):.0f}% "
            "even if the service itself cost nothing.",
        ]
    return lines
