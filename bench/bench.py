"""Benchmark otp-service: capture throughput, SMTP end to end, memory. See bench/README.md.

Run ``python bench/bench.py`` (``--help`` for options). Everything talks to 127.0.0.1 only and
every phase is bounded in count and time. Not a test: nothing imports this file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BODY = {"to": "user@example.com", "type": "SignIn", "payload": {"code": "123456", "locale": "en"}}
SMTP_SINK = "/usr/sbin/smtp-sink"
CAPTURE_TARGET_RPS = 1500.0
SMTP_TARGET_RATIO = 0.60
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proc_cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU time of a process, in seconds (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def machine_cpu() -> tuple[float, float, float]:
    """Whole machine, in seconds summed over CPUs: (total, busy, stolen by the hypervisor)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return (0.0, 0.0, 0.0)
    values += [0] * (8 - len(values))
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    idle = values[3] + values[4]
    steal = values[7]
    return (total / CLK_TCK, (total - idle - steal) / CLK_TCK, steal / CLK_TCK)


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) from /proc/<pid>/status, in KiB."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, wait: float = 5) -> None:
    """Stop one process we started, by its pid: ``sig`` first, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=wait)


# --------------------------------------------------------------------------- the load generator
# Runs in its own process (``bench.py _loadgen ...``) so it does not share the service's event
# loop; it prints one JSON object on stdout.


async def _drive(
    session: Any,
    url: str,
    body: bytes,
    count: int,
    concurrency: int,
    seconds: float,
    expect: bytes,
    latencies: list[float] | None,
) -> dict[str, Any]:
    remaining = count
    deadline = time.perf_counter() + seconds
    errors: Counter[str] = Counter()
    done = 0
    headers = {"Content-Type": "application/json"}

    async def worker() -> None:
        nonlocal remaining, done
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status != 200:
                        errors[f"HTTP {response.status}: {payload[:200]!r}"] += 1
                    elif expect not in payload:
                        errors[f"unexpected body: {payload[:200]!r}"] += 1
            except Exception as exc:
                errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            if latencies is not None:
                latencies.append(time.perf_counter() - started)
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"done": done, "errors": errors}


async def _loadgen(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    body = json.dumps(BODY).encode()
    expect = f'"status": "{args.expect}"'.encode()
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = await _drive(
            session, args.url, body, args.warmup, args.concurrency, args.warmup_seconds,
            expect, None,
        )  # fmt: skip
        latencies: list[float] = []
        service_cpu0 = proc_cpu_seconds(args.pid) if args.pid else None
        own_cpu0 = time.process_time()
        machine0 = machine_cpu()
        started = time.perf_counter()
        run = await _drive(
            session, args.url, body, args.requests, args.concurrency, args.seconds,
            expect, latencies,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        own_cpu = time.process_time() - own_cpu0
        machine1 = machine_cpu()
        service_cpu1 = proc_cpu_seconds(args.pid) if args.pid else None
    latencies.sort()
    service_cpu = service_sys = None
    if service_cpu0 is not None and service_cpu1 is not None:
        service_sys = service_cpu1[1] - service_cpu0[1]
        service_cpu = service_cpu1[0] - service_cpu0[0] + service_sys
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    machine_busy = machine1[1] - machine0[1]
    other = machine_busy - own_cpu - (service_cpu or 0.0)
    return {
        "requests": run["done"],
        "errors": sum(run["errors"].values()),
        "error_samples": dict(run["errors"].most_common(3)),
        "warmup_requests": warm["done"],
        "warmup_errors": sum(warm["errors"].values()),
        "seconds": elapsed,
        "rps": run["done"] / elapsed if elapsed > 0 else 0.0,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
        "max_ms": latencies[-1] * 1000 if latencies else None,
        "service_cpu_pct": 100 * service_cpu / elapsed if service_cpu is not None else None,
        "service_sys_cpu_pct": 100 * service_sys / elapsed if service_sys is not None else None,
        "loadgen_cpu_pct": 100 * own_cpu / elapsed,
        # Everything else on the machine (other people's tests, the SMTP sink, the kernel's
        # share not charged to a process), in % of one CPU; and CPU time the hypervisor kept.
        "other_cpu_pct": max(0.0, 100 * other / elapsed),
        "steal_pct": 100 * (machine1[2] - machine0[2]) / elapsed,
    }


def loadgen_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.py _loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--expect", default="captured")
    parser.add_argument("--pid", type=int, default=0, help="service pid, for its CPU time")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_loadgen(args))), flush=True)
    return 0


# --------------------------------------------------------------------------- processes we run


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def start_service(self, name: str, config: dict[str, Any], log_level: str) -> Service:
        config_path = self.workdir / f"{name}.json"
        config_path.write_text(json.dumps(config, indent=2))
        log_path = self.workdir / f"{name}.log"
        port = free_port()
        command = [
            sys.executable, "-m", "otp_service", "--log-level", log_level,
            "serve", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )  # fmt: skip
        self.procs.append(proc)
        service = Service(proc, port, log_path)
        self._wait_healthy(service)
        return service

    def _wait_healthy(self, service: Service, seconds: float = 20) -> None:
        import http.client

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if service.proc.poll() is not None:
                raise RuntimeError(f"the service exited early:\n{service.log_tail()}")
            connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=1)
            try:
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.05)
        raise RuntimeError(f"the service did not become healthy:\n{service.log_tail()}")

    def stop(self, proc: subprocess.Popen[Any]) -> None:
        stop_process(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.procs.clear()

    def start_sink(self) -> tuple[subprocess.Popen[bytes], int, str, Path]:
        """An SMTP server that discards mail: Postfix's smtp-sink, else aiosmtpd's Sink."""
        choice = self.args.sink
        port = free_port()
        out = self.workdir / "sink.out"
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
        self.procs.append(proc)
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

    def loadgen(
        self,
        service: Service,
        *,
        requests: int,
        seconds: float,
        concurrency: int,
        warmup: int,
        expect: str,
    ) -> dict[str, Any]:
        command = [
            sys.executable, str(Path(__file__).resolve()), "_loadgen",
            "--url", f"{service.url}/v1/email", "--requests", str(requests),
            "--seconds", str(seconds), "--concurrency", str(concurrency),
            "--warmup", str(warmup), "--expect", expect, "--pid", str(service.proc.pid),
        ]  # fmt: skip
        done = subprocess.run(
            command, capture_output=True, timeout=seconds + 5 + 60, check=False, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"the load generator failed:\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["concurrency"] = concurrency
        return result


# --------------------------------------------------------------------------- the phases


def profile_start(bench: Bench, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy on the service during one run, with --profile DIR (stacks to DIR/<name>.txt)."""
    if not bench.args.profile:
        return None
    path = Path(bench.args.profile) / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    spy = shutil.which("py-spy")
    if spy is None:
        print("note: --profile needs py-spy (pip install py-spy); not profiling", file=sys.stderr)
        return None
    # --gil: only samples holding the GIL, i.e. running Python; a thread blocked in a socket
    # call, or descheduled in one because the peer it woke took the CPU, is not counted.
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
               "--nonblocking", "--gil", "-o", str(path)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.procs.append(proc)
    time.sleep(1.0)  # let it attach
    return proc


def profile_report(
    bench: Bench, proc: subprocess.Popen[bytes] | None, name: str
) -> dict[str, Any] | None:
    """Stop py-spy and sum its collapsed stacks: own-code functions, inclusive and self."""
    if proc is None:
        return None
    stop_process(proc, signal.SIGINT, wait=15)
    bench.procs.remove(proc)
    path = Path(bench.args.profile) / f"{name}.txt"
    if not path.exists():
        return None
    total = 0
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        seen: set[str] = set()
        for frame in frames:
            if "otp_service" in frame and frame not in seen and not _entry_frame(frame):
                seen.add(frame)
                inclusive[_frame_name(frame)] += count
        leaf[_frame_name(frames[-1])] += count
    return {
        "file": str(path),
        "samples": total,
        "own_code_inclusive": [
            {"function": name, "pct": 100 * n / total} for name, n in inclusive.most_common(12)
        ],
        "self_any_code": [
            {"function": name, "pct": 100 * n / total} for name, n in leaf.most_common(12)
        ],
    }


def _entry_frame(frame: str) -> bool:
    """Frames around the whole server (the CLI and ``__main__``), in every sample."""
    return "otp_service/cli.py" in frame or "otp_service/__main__.py" in frame


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; drop the line number.
    match = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame or "(no Python frame)"
    function, path = match.groups()
    marker = path.rfind("site-packages/")
    if marker >= 0:
        path = path[marker + len("site-packages/") :]
    elif "otp_service/" in path:
        path = path[path.rfind("otp_service/") :]
    else:
        path = Path(path).name
    return f"{function} ({path})"


def capture_phase(
    bench: Bench, log_level: str, profile: bool, sequential: bool = False
) -> dict[str, Any]:
    """One capture-mode service; with ``sequential``, also a concurrency-1 run afterwards (the
    HTTP floor under SMTP run (b)), measured after the memory reading."""
    args = bench.args
    config = {"capture": {"max_messages": 1000}}
    service = bench.start_service(f"capture-{log_level.lower()}", config, log_level)
    try:
        time.sleep(0.3)
        rss_start = proc_memory_kib(service.proc.pid)
        name = f"capture-{log_level.lower()}"
        spy = profile_start(bench, service.proc.pid, name) if profile else None
        result = bench.loadgen(
            service, requests=args.requests, seconds=args.duration,
            concurrency=args.concurrency, warmup=args.warmup, expect="captured",
        )  # fmt: skip
        result["profile"] = profile_report(bench, spy, name)
        rss_end = proc_memory_kib(service.proc.pid)
        result["log_level"] = log_level
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


async def _smtp_baseline(
    port: int,
    mail: Any,
    sender: str,
    to: str,
    count: int,
    seconds: float,
    make: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Sequential sends on one connection: ``mail`` every time, or a new one from ``make``."""
    import aiosmtplib

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, local_hostname="bench", start_tls=False
    ) as smtp:
        await smtp.send_message(mail, sender=sender, recipients=[to])  # warm-up: one message
        deadline = time.perf_counter() + seconds
        own_cpu0, machine0 = time.process_time(), machine_cpu()
        started = time.perf_counter()
        for _ in range(count):
            if time.perf_counter() >= deadline:
                break
            t0 = time.perf_counter()
            try:
                await smtp.send_message(make() if make else mail, sender=sender, recipients=[to])
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


def _baseline_mail(
    smtp_connector: dict[str, Any],
) -> tuple[Any, str, str, int, Callable[[], Any]]:
    """The very message the service would send for BODY, built with the service's own code;
    and a function that composes and builds a new one, as the service does per request."""
    from otp_service.compose import Composer, SendRequest
    from otp_service.config import parse_config
    from otp_service.mime import build_email, sender
    from otp_service.services import build_library

    config = parse_config({"email": {"provider": "smtp", "smtp": smtp_connector}})
    assert config.email.smtp is not None
    composer = Composer(build_library(config))
    message = composer.compose("email", SendRequest(BODY["to"], BODY["type"], BODY["payload"]))
    smtp = config.email.smtp
    mail = build_email(message, smtp)
    request = SendRequest(BODY["to"], BODY["type"], BODY["payload"])

    def make() -> Any:
        return build_email(composer.compose("email", request), smtp)

    return mail, sender(message, smtp).address, message.to, len(mail.as_bytes()), make


def smtp_phase(bench: Bench) -> dict[str, Any]:
    from otp_service.config import PoolConfig

    args = bench.args
    sink, port, label, sink_out = bench.start_sink()
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
        service = bench.start_service(
            "smtp", {"email": {"provider": "smtp", "smtp": connector}}, "WARNING"
        )
        try:
            spy = profile_start(bench, service.proc.pid, "smtp-sequential")
            sequential = bench.loadgen(
                service, requests=args.smtp_messages, seconds=args.smtp_duration,
                concurrency=1, warmup=20, expect="sent",
            )  # fmt: skip
            sequential["profile"] = profile_report(bench, spy, "smtp-sequential")
            concurrent = bench.loadgen(
                service, requests=args.smtp_messages, seconds=args.smtp_duration,
                concurrency=args.smtp_concurrency, warmup=100, expect="sent",
            )  # fmt: skip
            rss = proc_memory_kib(service.proc.pid)
        finally:
            bench.stop(service.proc)
    finally:
        bench.stop(sink)
    accepted = None
    counters = re.findall(r"mesg=(\d+)", sink_out.read_text(errors="replace"))
    if counters:
        accepted = int(counters[-1])
    sent = (
        2 + baseline["requests"] + baseline_built["requests"] - baseline_built["errors"]
        + sequential["requests"] + sequential["warmup_requests"]
        + concurrent["requests"] + concurrent["warmup_requests"]
        - baseline["errors"] - sequential["errors"] - sequential["warmup_errors"]
        - concurrent["errors"] - concurrent["warmup_errors"]
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
        "sink_accepted": accepted,
        "messages_sent_ok": sent,
        "rss_end_kib": rss.get("VmRSS"),
        "rss_peak_kib": rss.get("VmHWM"),
    }


# --------------------------------------------------------------------------- output


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "## otp-service benchmark",
        "",
        f"- machine: {meta['cpus']} CPUs, {meta['platform']}; Python {meta['python']}, "
        f"aiohttp {meta['aiohttp']}, aiosmtplib {meta['aiosmtplib']}, otp-service "
        f"{meta['otp_service']}",
        f"- load average (1/5/15 min) at start: {meta['loadavg_start']}, "
        f"at end: {meta['loadavg_end']}",
        "- the load generator (aiohttp client, separate process) shares these CPUs with the "
        "service: req/s is a lower bound for the service alone; latencies include client-side "
        "queueing. CPU columns are % of one CPU during the measured window (200% = the whole "
        "machine); 'loadgen' is the client (the load-generator process; for (a) and (a2) this "
        "bench process); 'other' is everything else on the machine (the SMTP sink, other "
        "people's jobs): when it is high, the numbers are depressed.",
        f"- capture body: `{json.dumps(BODY)}`",
    ]
    smtp = report.get("smtp")
    if smtp:
        lines.append(
            f"- SMTP sink: {smtp['sink']}; message {smtp['message_bytes']} bytes; "
            f"service pool size {smtp['pool_size']}; sink counted "
            f"{smtp['sink_accepted'] if smtp['sink_accepted'] is not None else 'n/a'} "
            f"messages, {smtp['messages_sent_ok']} sent OK"
        )
    lines += [
        "",
        "| scenario | conc. | requests | errors | req/s | p50 ms | p99 ms | max ms "
        "| service CPU | loadgen CPU | other CPU | target |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}%"

    def row(name: str, r: dict[str, Any], target: str = "") -> None:
        lines.append(
            f"| {name} | {r['concurrency']} | {r['requests']:,} | {r['errors']} "
            f"| {_num(r['rps'])} | {_num(r['p50_ms'], 2)} | {_num(r['p99_ms'], 2)} "
            f"| {_num(r['max_ms'], 1)} | {pct(r.get('service_cpu_pct'))}"
            f"{f' ({pct(sys_cpu)} sys)' if (sys_cpu := r.get('service_sys_cpu_pct')) else ''} "
            f"| {pct(r.get('loadgen_cpu_pct'))} | {pct(r.get('other_cpu_pct'))} | {target} |"
        )

    for run in report["capture"]:
        passed = "PASS" if run["rps"] >= CAPTURE_TARGET_RPS else "MISS"
        row(
            f"capture, --log-level {run['log_level']}",
            run,
            f">= {CAPTURE_TARGET_RPS:,.0f} req/s: {passed}",
        )
    for run in report["capture"]:
        if "sequential" in run:
            row(
                f"capture, --log-level {run['log_level']}, sequential (HTTP floor under (b))",
                run["sequential"],
            )
    if smtp:
        row("(a) bare aiosmtplib, 1 reused connection, sequential", smtp["baseline"])
        row(
            "(a2) as (a), but each message composed and built by otp_service "
            "(compose + mime.build_email)",
            smtp["baseline_built"],
        )
        ratio = smtp["ratio"]
        verdict = "n/a" if ratio is None else ("PASS" if ratio >= SMTP_TARGET_RATIO else "MISS")
        row(
            "(b) service → SMTP, HTTP end to end, sequential",
            smtp["service_sequential"],
            f"(b)/(a) = {_num(None if ratio is None else 100 * ratio, 0)}% "
            f"(>= {SMTP_TARGET_RATIO:.0%}): {verdict}",
        )
        row(
            f"(c) service → SMTP, HTTP end to end, pool {smtp['pool_size']}",
            smtp["service_concurrent"],
        )
    floor = next((run["sequential"] for run in report["capture"] if "sequential" in run), None)
    if smtp and floor and smtp["baseline"]["rps"] and floor["rps"]:
        t_smtp, t_http = 1 / smtp["baseline"]["rps"], 1 / floor["rps"]
        lines += [
            "",
            f"Ceiling of (b)/(a) from the HTTP hop alone: a sequential message in (b) costs at "
            f"least (a)'s {t_smtp * 1000:.2f} ms plus the capture-mode HTTP round trip of "
            f"{t_http * 1000:.2f} ms, so (b)/(a) <= {100 * t_smtp / (t_smtp + t_http):.0f}% "
            "even if the service itself cost nothing.",
        ]
    lines += [
        "",
        "| service memory (VmRSS, MiB) | after start | after run | peak (VmHWM) |",
        "|---|--:|--:|--:|",
    ]
    for run in report["capture"]:
        lines.append(
            f"| capture, --log-level {run['log_level']}, after "
            f"{run['requests'] + run['warmup_requests']:,} requests (inbox bounded at 1000) "
            f"| {_mib(run['rss_start_kib'])} "
            f"| {_mib(run['rss_end_kib'])} | {_mib(run['rss_peak_kib'])} |"
        )
    if smtp:
        lines.append(
            f"| SMTP service, after (b) and (c) | - | {_mib(smtp['rss_end_kib'])} "
            f"| {_mib(smtp['rss_peak_kib'])} |"
        )
    samples = [
        (name, r["error_samples"]) for name, r in _all_runs(report) if r.get("error_samples")
    ]
    if samples:
        lines += ["", "Errors seen:"]
        for name, errors in samples:
            for text, count in errors.items():
                lines.append(f"- {name}: {count} x {text}")
    for name, run in _all_runs(report):
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


def _all_runs(report: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for run in report["capture"]:
        yield f"capture {run['log_level']}", run
        if "sequential" in run:
            yield f"capture {run['log_level']} sequential", run["sequential"]
    if report.get("smtp"):
        for key in ("baseline", "baseline_built", "service_sequential", "service_concurrent"):
            yield key, report["smtp"][key]


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.py", description="Benchmark otp-service (127.0.0.1 only, bounded)."
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
        "--skip-info", action="store_true", help="skip the capture run with default INFO logging"
    )
    parser.add_argument("--skip-smtp", action="store_true", help="skip the SMTP runs")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="profile the service with py-spy during the WARNING capture run and SMTP run (b); "
        "raw stacks go to DIR (numbers from a profiled run are lower)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "smtp_messages", "smtp_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.duration <= 600 or not 0 < args.smtp_duration <= 600:
        parser.error("durations must be between 0 and 600 seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "meta": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True),
            "python": platform.python_version(),
            "aiohttp": version("aiohttp"),
            "aiosmtplib": version("aiosmtplib"),
            "otp_service": version("otp-service"),
            "loadavg_start": loadavg(),
        },
        "capture": [],
    }
    with tempfile.TemporaryDirectory(prefix="otp-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            report["capture"].append(
                capture_phase(bench, "WARNING", profile=True, sequential=not args.skip_smtp)
            )
            if not args.skip_info:
                report["capture"].append(capture_phase(bench, "INFO", profile=False))
            if not args.skip_smtp:
                report["smtp"] = smtp_phase(bench)
        finally:
            bench.cleanup()
            signal.signal(signal.SIGTERM, previous)
    report["meta"]["loadavg_end"] = loadavg()
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_loadgen":
        sys.exit(loadgen_main(sys.argv[2:]))
    sys.exit(main())
