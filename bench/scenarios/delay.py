"""SMTP over network distance (``--only delay``): otp-service next to Logto's own SMTP connector.

A sink that requires STARTTLS and AUTH (``bench.tls_sink``, advertising PIPELINING), reached
through ``bench.delay_proxy`` adding each round-trip time of ``--delay-rtts`` (0: direct) to
the SMTP traffic only. Per round-trip time, in one run:

- Logto's SMTP connector (``@logto/connector-smtp`` from ``bench/logto``, run by Node the way
  Logto core calls it: a new nodemailer transport per message) at concurrency 1 and 20;
- otp-service (``POST /v1/email``, each answer after the sink accepted the message) at
  concurrency 1 after a warm-up (its connection is warm) and at concurrency 20;
- with ``--before REF``, the same for otp-service as of git ``REF`` (its ``otp_service``
  and ``templates`` exported into the bench's folder and put first on ``PYTHONPATH``).

Reported: latency at concurrency 1 in milliseconds and in round trips (p50 ÷ RTT), and
messages/s at concurrency 20, with the load average when each run started (the machine may be
shared). Targets: ≤ 2.3 round trips at concurrency 1 warm; ≥ 5 times Logto's connector at
concurrency 20 and 20 ms.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.common import ROOT, loadavg
from bench.harness import Bench
from bench.scenarios import Run, Scenario

LOGTO_DIR = ROOT / "bench" / "logto"
ROUND_TRIPS_TARGET = 2.3
LOGTO_RATIO_TARGET = 5.0
TEMPLATES = [
    {"usageType": usage, "contentType": "text/plain", "subject": "Your sign-in code",
     "content": "Your verification code is {{code}}. It expires in 10 minutes."}
    for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
]  # fmt: skip


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--delay-rtts", default="0,20,80",
        help="delay: round-trip times in ms added to the SMTP traffic (default 0,20,80)",
    )  # fmt: skip
    parser.add_argument(
        "--delay-seconds", type=float, default=8.0,
        help="delay: stop each run after this many seconds (default 8)",
    )  # fmt: skip
    parser.add_argument(
        "--delay-messages", type=int, default=400,
        help="delay: at most this many messages per run (default 400)",
    )  # fmt: skip


def _start(bench: Bench, module: str, name: str, *extra: str) -> tuple[Any, dict[str, Any]]:
    """A helper process (``python -m module``) that writes a port file; returns it and the file."""
    port_file = bench.workdir / f"{name}.json"
    out = bench.workdir / f"{name}.out"
    with out.open("wb") as sink_out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port-file", str(port_file), *extra],
            stdout=sink_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
    bench.procs.append(proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{module} exited: {out.read_text(errors='replace')[-2000:]}")
        if port_file.exists() and port_file.stat().st_size:
            return proc, json.loads(port_file.read_text())
        time.sleep(0.05)
    raise RuntimeError(f"{module} did not start")


def _last_json(path: Path) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads(path.read_text().strip().splitlines()[-1])
        return found
    except (OSError, ValueError, IndexError):
        return None


def _connector(port: int, ca_pem: str) -> dict[str, Any]:
    """Logto's SMTP connector JSON for the sink: STARTTLS required, AUTH LOGIN."""
    return {
        "host": "127.0.0.1", "port": port, "auth": {"user": "bench", "pass": "bench-password"},
        "fromEmail": "bench@example.com", "templates": TEMPLATES, "requireTLS": True,
        "name": "bench", "tls": {"ca": ca_pem},
    }  # fmt: skip


Probe = Callable[[], "dict[str, int] | None"]


def _proxy_probe(bench: Bench, proc: Any, name: str) -> Probe:
    """Reads the proxy's counters now (SIGUSR1, then its ``*.counts.json``)."""
    path = (bench.workdir / f"{name}.json").with_suffix(".counts.json")

    def probe() -> dict[str, int] | None:
        path.unlink(missing_ok=True)
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                counts: dict[str, int] = json.loads(path.read_text())
                return counts
            time.sleep(0.01)
        return None

    return probe


def _counted(run: Run, before: dict[str, int] | None, after: dict[str, int] | None) -> None:
    """Round trips the proxy counted during ``run``, per message (warm-up ones included)."""
    if before is None or after is None:
        return
    messages = run["requests"] + run.get("warmup_requests", 0)
    messages -= run["errors"] + run.get("warmup_errors", 0)
    trips = after["round_trips"] - before["round_trips"]
    run["round_trips_counted"] = trips
    run["connections_counted"] = after["connections"] - before["connections"]
    run["round_trips_per_message"] = trips / messages if messages > 0 else None


def _logto(bench: Bench, connector: dict[str, Any], concurrency: int, probe: Probe) -> Run:
    args = bench.args
    job = {
        "config": connector, "count": args.delay_messages, "concurrency": concurrency,
        "seconds": args.delay_seconds, "warmup": 0, "seq": bench.take_seq(args.delay_messages),
    }  # fmt: skip
    load, before = loadavg(), probe()
    done = subprocess.run(
        ["node", "send_smtp.mjs", json.dumps(job)], capture_output=True, text=True,
        timeout=args.delay_seconds + 120, check=False, cwd=LOGTO_DIR,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"Logto's SMTP connector failed:\n{done.stderr[-2000:]}")
    result: Run = json.loads(done.stdout.strip().splitlines()[-1])
    result["loadavg"] = load
    _counted(result, before, probe())
    return result


def _service(
    bench: Bench, name: str, connector: dict[str, Any], env: dict[str, str] | None, probe: Probe
) -> dict[str, Run]:
    args = bench.args
    config = {"email": {"provider": "smtp", "smtp": connector}, "templates": {"bundled": False}}
    service = bench.start_service(name, config, "WARNING", env=env)
    try:
        runs: dict[str, Run] = {}
        for concurrency, warmup in ((1, 3), (20, 40)):
            load, before = loadavg(), probe()
            run = bench.loadgen(
                service, requests=args.delay_messages, seconds=args.delay_seconds,
                concurrency=concurrency, warmup=warmup, expect="sent",
            )  # fmt: skip
            run["loadavg"] = load
            _counted(run, before, probe())
            runs[f"c{concurrency}"] = run
        return runs
    finally:
        bench.stop(service.proc)


def run(bench: Bench, parts: Sequence[str]) -> dict[str, Any]:
    args = bench.args
    if shutil.which("node") is None or not (LOGTO_DIR / "node_modules").is_dir():
        raise RuntimeError(
            "the delay scenario needs Node and Logto's SMTP connector: "
            "npm ci --prefix bench/logto --no-audit --no-fund"
        )
    rtts = [float(item) for item in str(args.delay_rtts).split(",") if item.strip()]
    sink, info = _start(bench, "bench.tls_sink", "tls-sink")
    ca_pem = Path(info["ca_file"]).read_text()
    versions: list[tuple[str, dict[str, str] | None]] = [("service", None)]
    if args.before:
        versions.insert(0, (f"before ({args.before})", bench.ref_env(args.before)))
    rows: list[dict[str, Any]] = []
    proxies: list[dict[str, Any] | None] = []
    try:
        for rtt in rtts:
            # 0 ms goes through the proxy too (no delay): the same path, and counted.
            proxy, proxy_info = _start(
                bench, "bench.delay_proxy", f"proxy-{rtt:g}", "--target-port",
                str(info["port"]), "--rtt-ms", str(rtt),
            )  # fmt: skip
            port = proxy_info["port"]
            probe = _proxy_probe(bench, proxy, f"proxy-{rtt:g}")
            connector = _connector(port, ca_pem)
            row: dict[str, Any] = {"rtt_ms": rtt, "logto": {}, "versions": {}}
            for concurrency in (1, 20):
                row["logto"][f"c{concurrency}"] = _logto(bench, connector, concurrency, probe)
            for label, env in versions:
                slug = "before" if env else "service"
                name = f"delay-{slug}-{rtt:g}"
                row["versions"][label] = _service(bench, name, connector, env, probe)
            rows.append(row)
            bench.stop(proxy)
            proxies.append(_last_json(bench.workdir / f"proxy-{rtt:g}.out"))
    finally:
        bench.stop(sink)
    return {
        "rows": rows,
        "sink": _last_json(bench.workdir / "tls-sink.out"),
        "proxies": proxies,
        "delay": "an in-process TCP delay proxy (bench/delay_proxy.py): this kernel has no netem",
    }


def _trips(run: Run, rtt: float) -> str:
    """p50 in ms and in round trips (p50 / RTT), and the round trips the proxy counted."""
    p50 = run.get("p50_ms")
    if p50 is None:
        return "n/a"
    text = f"{p50:.1f} ms" + (f" = {p50 / rtt:.2f} RT" if rtt > 0 else "")
    counted = run.get("round_trips_per_message")
    return text + (f"; {counted:.2f} counted" if counted is not None else "")


def section(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    labels = list(rows[0]["versions"]) if rows else []
    sink = result.get("sink") or {}
    lines = [
        "## SMTP over network distance (STARTTLS + AUTH on the sink)",
        "",
        f"Delay: {result['delay']}; sink: aiosmtpd with STARTTLS and AUTH required, PIPELINING "
        f"advertised (counted {sink.get('messages', 'n/a')} messages on "
        f"{sink.get('connections', 'n/a')} connections, {sink.get('resumed', 'n/a')} of which "
        "resumed an earlier TLS session). "
        "C=1: p50 from request to the sink's acceptance, in ms and in round trips (÷ RTT), "
        "and the round trips per message the proxy counted (one per TCP connection, one each "
        "time the client spoke after the server; the service's 3 warm-up messages and its "
        "connection set-up included), "
        "which load on the machine does not change; "
        "otp-service's connection is warm. C=20: messages/s. Load average (1, 5, 15 min) "
        "when each run started: the machine may be shared, so read figures side by side.",
        "",
        "| RTT | Logto C=1 | "
        + " | ".join(f"{label} C=1" for label in labels)
        + " | Logto C=20 | "
        + " | ".join(f"{label} C=20" for label in labels)
        + " | service ÷ Logto, C=20 | load |",
        "| --: |" + " --: |" * (2 * len(labels) + 3) + " --- |",
    ]
    for row in rows:
        rtt = row["rtt_ms"]
        logto = row["logto"]
        versions = row["versions"]
        service = versions.get("service", {})
        ratio = (
            service["c20"]["rps"] / logto["c20"]["rps"]
            if service and logto["c20"].get("rps")
            else None
        )
        cells = [f"{rtt:g} ms", _trips(logto["c1"], rtt)]
        cells += [_trips(versions[label]["c1"], rtt) for label in labels]
        cells.append(f"{logto['c20']['rps']:.0f}")
        cells += [f"{versions[label]['c20']['rps']:.0f}" for label in labels]
        cells.append(f"{ratio:.1f}x" if ratio else "n/a")
        cells.append(service.get("c20", {}).get("loadavg", "n/a") if service else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines += _cpu_table(rows, labels)
    errors = sum(run.get("errors", 0) for row in rows for run in _all_runs(row))
    lines += [
        "",
        f"Targets: C=1 ≤ {ROUND_TRIPS_TARGET} round trips warm; C=20 at 20 ms ≥ "
        f"{LOGTO_RATIO_TARGET:g}x Logto's connector. Errors in all runs: {errors}.",
        "",
    ]
    return lines


def _cpu_per_message(run: Run, key: str) -> float | None:
    """Milliseconds of one process's CPU per message (``key``: its CPU % over the run)."""
    pct, done = run.get(key), run.get("requests", 0) - run.get("errors", 0)
    return pct * run["seconds"] * 10 / done if pct is not None and done > 0 else None


def _cpu_table(rows: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """C=20 CPU per message of Logto's Node process and of each service: unlike messages/s,
    it hardly depends on what else the machine runs, so a shared machine can compare it."""
    lines = [
        "",
        "C=20, CPU per message (ms; Logto: its Node process, the service: its process; the "
        "sink and the proxy not included):",
        "",
        "| RTT | Logto | " + " | ".join(labels) + " | Logto ÷ service |",
        "| --: |" + " --: |" * (len(labels) + 2),
    ]
    for row in rows:
        logto = _cpu_per_message(row["logto"]["c20"], "loadgen_cpu_pct")
        ours = [_cpu_per_message(row["versions"][label]["c20"], "service_cpu_pct")
                for label in labels]  # fmt: skip
        service = ours[labels.index("service")] if "service" in labels else None
        cells = [f"{row['rtt_ms']:g} ms"] + [
            f"{value:.2f}" if value is not None else "n/a" for value in [logto, *ours]
        ]
        cells.append(f"{logto / service:.1f}x" if logto and service else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _all_runs(row: dict[str, Any]) -> Iterator[Run]:
    yield from row["logto"].values()
    for runs in row["versions"].values():
        yield from runs.values()


def runs(result: dict[str, Any]) -> Iterator[tuple[str, Run]]:
    for row in result["rows"]:
        for key, run in row["logto"].items():
            yield f"delay {row['rtt_ms']:g} ms Logto {key}", run
        for label, versions in row["versions"].items():
            for key, run in versions.items():
                yield f"delay {row['rtt_ms']:g} ms {label} {key}", run


SCENARIO = Scenario(
    name="delay",
    key="delay",
    run=run,
    help="SMTP with STARTTLS+AUTH over 0/20/80 ms next to Logto's SMTP connector (needs Node)",
    default=False,
    add_arguments=add_arguments,
    section=section,
    runs=runs,
)
