"""SMTP end to end (``--only email``): otp-service sending into an SMTP server that discards mail.

(a) bare aiosmtplib sending the service's bytes on one reused connection; (a2) the same with
each message composed and built by otp-service's code; (b) the service configured with Logto's
SMTP connector JSON at concurrency 1; (c) the same at --smtp-concurrency. The sink is Postfix's
smtp-sink when installed, else aiosmtpd's Sink handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import table
from bench.common import BODY, machine_cpu, percentile, proc_memory_kib, version
from bench.harness import Bench
from bench.profiling import profile_report, profile_start
from bench.scenarios import Run, Scenario
from tests.support.ports import free_port

SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_TARGET_RATIO = 0.60


def start_sink(bench: Bench) -> tuple[subprocess.Popen[bytes], int, str, Path]:
    """An SMTP server that discards mail: Postfix's smtp-sink, else aiosmtpd's Sink."""
    choice = bench.args.sink
    port = free_port()
    out = bench.workdir / "sink.out"
    use_postfix = choice == "smtp-sink" or (choice == "auto" and os.access(SMTP_SINK, os.X_OK))
    if use_postfix:
        # -c: running counters (read back to check what arrived); -u: drop root privileges.
        command = [SMTP_SINK, "-c", "-u", "nobody", f"127.0.0.1:{port}", "1000"]
        label = f"Postfix smtp-sink ({SMTP_SINK})"
    else:
        command = [
            sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
            "-c", "aiosmtpd.handlers.Sink",
        ]  # fmt: skip
        label = f"aiosmtpd {version('aiosmtpd')} Sink handler (python -m aiosmtpd)"
    with out.open("wb") as sink_out:
        proc = subprocess.Popen(
            command, stdout=sink_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    bench.procs.append(proc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the SMTP sink exited: {out.read_text(errors='replace')}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=1) as sock,
        ):
            if sock.recv(64).startswith(b"220"):
                return proc, port, label, out
        time.sleep(0.05)
    raise RuntimeError("the SMTP sink did not answer")


async def _smtp_baseline(
    port: int,
    mail: bytes,
    sender: str,
    to: str,
    count: int,
    seconds: float,
    make: Callable[[], bytes] | None = None,
) -> dict[str, Any]:
    """Sequential sends on one connection: ``mail`` every time, or a new one from ``make``."""
    import aiosmtplib

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, local_hostname="bench", start_tls=False
    ) as smtp:
        await smtp.sendmail(sender, [to], mail)  # warm-up: one message
        deadline = time.perf_counter() + seconds
        own_cpu0, machine0 = time.process_time(), machine_cpu()
        started = time.perf_counter()
        for _ in range(count):
            if time.perf_counter() >= deadline:
                break
            t0 = time.perf_counter()
            try:
                await smtp.sendmail(sender, [to], make() if make else mail)
            except aiosmtplib.SMTPException as exc:
                errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        own_cpu, machine1 = time.process_time() - own_cpu0, machine_cpu()
    latencies.sort()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    other = machine1[1] - machine0[1] - own_cpu
    return {
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_samples": dict(errors.most_common(3)),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
        "max_ms": latencies[-1] * 1000 if latencies else None,
        "concurrency": 1,
        "service_cpu_pct": None,
        "loadgen_cpu_pct": 100 * own_cpu / elapsed if elapsed > 0 else None,
        "other_cpu_pct": max(0.0, 100 * other / elapsed) if elapsed > 0 else None,
        "steal_pct": 100 * (machine1[2] - machine0[2]) / elapsed if elapsed > 0 else None,
    }


def _mail_bytes(mail: Any) -> bytes:
    """What goes after DATA: ``mime.build_email`` gives an ``Email`` with ``data`` (earlier
    versions an ``email.message.EmailMessage``)."""
    data = getattr(mail, "data", None)
    return data if isinstance(data, bytes) else bytes(mail.as_bytes())


def _baseline_mail(
    smtp_connector: dict[str, Any],
) -> tuple[bytes, str, str, int, Callable[[], bytes]]:
    """The very message the service would send for BODY, built with the service's own code;
    and a function that composes and builds a new one, as the service does per request."""
    from otp_service.config import parse_config
    from otp_service.message.compose import Composer, SendRequest
    from otp_service.providers.mime import build_email, sender
    from otp_service.services import build_library

    config = parse_config({"email": {"provider": "smtp", "smtp": smtp_connector}})
    assert config.email.smtp is not None
    composer = Composer(build_library(config))
    message = composer.compose("email", SendRequest(BODY["to"], BODY["type"], BODY["payload"]))
    smtp = config.email.smtp
    mail = _mail_bytes(build_email(message, smtp))
    request = SendRequest(BODY["to"], BODY["type"], BODY["payload"])

    def make() -> bytes:
        return _mail_bytes(build_email(composer.compose("email", request), smtp))

    return mail, sender(message, smtp).address, message.to, len(mail), make


def _service_runs(
    bench: Bench, connector: dict[str, Any], version: str, before: str | None
) -> tuple[Run, Run, dict[str, int]]:
    """(b) and (c) against one service (``version`` "before": otp-service as of git ``before``)
    and its memory after them."""
    args = bench.args
    env = bench.ref_env(before) if version == "before" and before else None
    name = f"smtp-{version}"
    service = bench.start_service(
        name, {"email": {"provider": "smtp", "smtp": connector}}, "WARNING", env=env
    )
    try:
        spy = profile_start(bench, service.proc.pid, name) if env is None else None
        sequential = bench.loadgen(
            service, requests=args.smtp_messages, seconds=args.smtp_duration,
            concurrency=1, warmup=20, expect="sent",
        )  # fmt: skip
        sequential["profile"] = profile_report(bench, spy, name)
        concurrent = bench.loadgen(
            service, requests=args.smtp_messages, seconds=args.smtp_duration,
            concurrency=args.smtp_concurrency, warmup=100, expect="sent",
        )  # fmt: skip
        return sequential, concurrent, proc_memory_kib(service.proc.pid)
    finally:
        bench.stop(service.proc)


def smtp_phase(bench: Bench) -> dict[str, Any]:
    from otp_service.config import PoolConfig

    args = bench.args
    sink, port, label, sink_out = start_sink(bench)
    try:
        connector = {
            "host": "127.0.0.1", "port": port, "fromEmail": "bench@example.com",
            "name": "bench", "ignoreTLS": True,
        }  # fmt: skip
        mail, envelope_from, to, size, make = _baseline_mail(connector)
        baseline = asyncio.run(
            _smtp_baseline(port, mail, envelope_from, to, args.smtp_messages, args.smtp_duration)
        )
        baseline_built = asyncio.run(
            _smtp_baseline(
                port, mail, envelope_from, to, args.smtp_messages, args.smtp_duration, make
            )
        )
        before = args.before
        versions = {
            version: _service_runs(bench, connector, version, before)
            for version in (["before"] if before else []) + ["service"]
        }
    finally:
        bench.stop(sink)
    sequential, concurrent, rss = versions["service"]
    accepted = None
    counters = re.findall(r"mesg=(\d+)", sink_out.read_text(errors="replace"))
    if counters:
        accepted = int(counters[-1])
    served = [run for seq, conc, _ in versions.values() for run in (seq, conc)]
    sent = (
        2 + baseline["requests"] + baseline_built["requests"] - baseline_built["errors"]
        - baseline["errors"]
        + sum(r["requests"] + r["warmup_requests"] - r["errors"] - r["warmup_errors"]
              for r in served)
    )  # fmt: skip
    return {
        "sink": label,
        "message_bytes": size,
        "pool_size": PoolConfig().size,
        "baseline": baseline,
        "baseline_built": baseline_built,
        "service_sequential": sequential,
        "service_concurrent": concurrent,
        "ratio": sequential["rps"] / baseline["rps"] if baseline["rps"] else None,
        **_before_keys(before, versions),
        "sink_accepted": accepted,
        "messages_sent_ok": sent,
        "rss_end_kib": rss.get("VmRSS"),
        "rss_peak_kib": rss.get("VmHWM"),
    }


def _before_keys(
    before: str | None, versions: dict[str, tuple[Run, Run, dict[str, int]]]
) -> dict[str, Any]:
    """The --before runs, in the result."""
    if not before:
        return {}
    sequential, concurrent, _ = versions["before"]
    return {
        "before_ref": before,
        "before_sequential": sequential,
        "before_concurrent": concurrent,
    }


def summary(smtp: dict[str, Any]) -> list[str]:
    return [
        f"- SMTP sink: {smtp['sink']}; message {smtp['message_bytes']} bytes; "
        f"service pool size {smtp['pool_size']}; sink counted "
        f"{smtp['sink_accepted'] if smtp['sink_accepted'] is not None else 'n/a'} "
        f"messages, {smtp['messages_sent_ok']} sent OK"
    ]


def table_rows(smtp: dict[str, Any]) -> list[str]:
    rows = [
        table.row("(a) bare aiosmtplib, 1 reused connection, sequential", smtp["baseline"]),
        table.row(
            "(a2) as (a), but each message composed and built by otp_service "
            "(compose + mime.build_email)",
            smtp["baseline_built"],
        ),
    ]
    if "before_ref" in smtp:
        rows += [
            table.row(f"(b) as of {smtp['before_ref']} (before)", smtp["before_sequential"]),
            table.row(f"(c) as of {smtp['before_ref']} (before)", smtp["before_concurrent"]),
        ]
    return [
        *rows,
        table.row(
            "(b) service → SMTP, HTTP end to end, sequential",
            smtp["service_sequential"],
            table.verdict(smtp["ratio"], SMTP_TARGET_RATIO),
        ),
        table.row(
            f"(c) service → SMTP, HTTP end to end, pool {smtp['pool_size']}",
            smtp["service_concurrent"],
        ),
    ]


def memory_rows(smtp: dict[str, Any]) -> list[str]:
    return [
        f"| SMTP service, after (b) and (c) | - | {table.mib(smtp['rss_end_kib'])} "
        f"| {table.mib(smtp['rss_peak_kib'])} |"
    ]


def runs(smtp: dict[str, Any]) -> Iterator[tuple[str, Run]]:
    for key in (
        "baseline", "baseline_built", "before_sequential", "before_concurrent",
        "service_sequential", "service_concurrent",
    ):  # fmt: skip
        if key in smtp:
            yield key, smtp[key]


def run(bench: Bench, parts: Sequence[str]) -> dict[str, Any]:
    return smtp_phase(bench)


SCENARIO = Scenario(
    name="email",
    key="smtp",
    run=run,
    help="SMTP end to end",
    skip_flag="skip_smtp",
    summary=summary,
    table_rows=table_rows,
    memory_rows=memory_rows,
    runs=runs,
)
