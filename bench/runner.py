"""The runner: which scenarios exist, the options, the order they run in, the output.

``python -m bench`` runs every scenario of :data:`SCENARIOS` (in that order) whose ``default``
is true and whose skip option is not given; ``--only NAME`` runs one. Each result goes under
``report[scenario.key]``; the report is printed as Markdown (:mod:`bench.report`) or JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import loadavg, version
from bench.harness import Bench
from bench.report import markdown
from bench.scenarios import Scenario, capture, cpu, delay, limits, replicas, sms, smtp, workers

# The parts of the benchmark, in the order they run and are reported. A new scenario is a
# module in bench/scenarios/ with a SCENARIO, listed here (see bench/README.md).
SCENARIOS: list[Scenario] = [capture.SCENARIO, smtp.SCENARIO, sms.SCENARIO, limits.SCENARIO,
                              replicas.SCENARIO, delay.SCENARIO, cpu.SCENARIO,
                              workers.SCENARIO]  # fmt: skip


def parse_args(
    argv: list[str] | None = None, scenarios: Sequence[Scenario] = SCENARIOS
) -> argparse.Namespace:
    """The options of every scenario; the first error exits with a usage message."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark otp-service (127.0.0.1 only, bounded)."
    )
    optional = [s.name for s in scenarios if not s.default]
    parser.add_argument(
        "--only",
        choices=[s.name for s in scenarios],
        help="run one part: "
        + ", ".join(f"{s.name} ({s.help})" if s.help else s.name for s in scenarios)
        + "; default: all"
        + (f" but {', '.join(optional)}" if optional else ""),
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=20000,
        help="capture: measured requests per run (default 20000)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="capture: stop a run after this many seconds (default 10)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="capture: concurrent requests (default 50)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1000, help="capture: unmeasured requests first (default 1000)"
    )
    parser.add_argument(
        "--smtp-messages", type=int, default=2000, help="SMTP: messages per run (default 2000)"
    )
    parser.add_argument(
        "--smtp-duration",
        type=float,
        default=20.0,
        help="SMTP: stop a run after this many seconds (default 20)",
    )
    parser.add_argument(
        "--smtp-concurrency", type=int, default=20, help="SMTP: concurrency of run (c) (default 20)"
    )
    parser.add_argument(
        "--sink",
        choices=("auto", "smtp-sink", "aiosmtpd"),
        default="auto",
        help="SMTP sink: Postfix smtp-sink if installed (auto), or aiosmtpd",
    )
    parser.add_argument(
        "--sms-messages", type=int, default=1000, help="SMS: messages per run (default 1000)"
    )
    parser.add_argument(
        "--sms-duration",
        type=float,
        default=20.0,
        help="SMS: stop a run after this many seconds (default 20)",
    )
    parser.add_argument(
        "--sms-concurrency",
        type=int,
        default=50,
        help="SMS: the concurrent runs' concurrency (default 50)",
    )
    parser.add_argument(
        "--sms-warmup", type=int, default=100, help="SMS: unmeasured messages first (default 100)"
    )
    parser.add_argument(
        "--keep-limits",
        action="store_true",
        help="keep the service's default abuse limits (default: limits.enabled false)",
    )
    parser.add_argument(
        "--skip-info", action="store_true", help="skip the capture run with default INFO logging"
    )
    parser.add_argument("--skip-smtp", action="store_true", help="skip the SMTP runs")
    parser.add_argument("--skip-sms", action="store_true", help="skip the SMS runs")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="profile the service with py-spy during the WARNING capture run, SMTP run (b) and "
        "the concurrent SMS (b) runs; raw stacks go to DIR (numbers from a profiled run are "
        "lower)",
    )
    parser.add_argument(
        "--before",
        metavar="REF",
        help="also run otp-service as of this git ref, back to back with the current code "
        "(capture, email, sms, delay, cpu, workers): a before/after from one run",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    for scenario in scenarios:
        if scenario.add_arguments is not None:
            scenario.add_arguments(parser)
    args = parser.parse_args(argv)
    for name in (
        "requests", "concurrency", "smtp_messages", "smtp_concurrency", "sms_messages",
        "sms_concurrency",
    ):  # fmt: skip
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.sms_messages > 10**6 or args.sms_warmup < 0:
        parser.error("--sms-messages must be at most 1000000, --sms-warmup at least 0")
    if not all(0 < d <= 600 for d in (args.duration, args.smtp_duration, args.sms_duration)):
        parser.error("durations must be between 0 and 600 seconds")
    return args


def selected(args: argparse.Namespace, scenarios: Sequence[Scenario] = SCENARIOS) -> list[str]:
    """The names of the parts this invocation runs, in order."""
    if args.only:
        return [args.only]
    return [
        s.name for s in scenarios if s.default and not (s.skip_flag and getattr(args, s.skip_flag))
    ]


def meta(parts: list[str]) -> dict[str, Any]:
    """The machine, the versions and the parts of a run, as the report's heading shows them."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "aiosmtplib": version("aiosmtplib"),
        "vonage": version("vonage"),
        "aliyun": version("alibabacloud-dysmsapi20170525"),
        "twilio": version("twilio"),
        "otp_service": version("otp-service"),
        "parts": parts,
        "loadavg_start": loadavg(),
    }


def main(argv: list[str] | None = None, scenarios: Sequence[Scenario] = SCENARIOS) -> int:
    """Run the selected scenarios and print the report; 0 when every part ran."""
    args = parse_args(argv, scenarios)
    parts = selected(args, scenarios)
    report: dict[str, Any] = {"meta": meta(parts)}
    with tempfile.TemporaryDirectory(prefix="otp-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            for scenario in scenarios:
                if scenario.name in parts:
                    report[scenario.key] = scenario.run(bench, parts)
        finally:
            bench.cleanup()
            signal.signal(signal.SIGTERM, previous)
        report["meta"]["config_notes"] = bench.config_notes
    report["meta"]["loadavg_end"] = loadavg()
    print(json.dumps(report, indent=2) if args.json else markdown(report, scenarios))
    return 0
