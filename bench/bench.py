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
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BODY: dict[str, Any] = {
    "to": "user@example.com",
    "type": "SignIn",
    "payload": {"code": "123456", "locale": "en"},
}
SMTP_SINK = "/usr/sbin/smtp-sink"
CAPTURE_TARGET_RPS = 1500.0
DURABLE_TARGET_RPS = 1000.0  # capture mode with the SQLite outbox on disk
SMTP_TARGET_RATIO = 0.60
SMS_TARGET_RATIO = 0.70
SMS_PROVIDERS = ("vonage", "aliyun")
SMS_TIMEOUT_SECONDS = 5  # the provider timeout, in the bare SDK runs and in the service
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]  # the repository (tests.fakes.serve runs from it)

# Logto's Vonage and Aliyun SMS connector JSON, as an admin pastes it (test credentials).
LOGTO_SMS: dict[str, dict[str, Any]] = {
    "vonage": {
        "apiKey": "a1b2c3d4",
        "apiSecret": "VonageS3cretValue",
        "brandName": "Acme",
        "templates": [
            {"usageType": usage, "content": f"Your Acme {usage} code is {{{{code}}}}."}
            for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
        ],
    },
    "aliyun": {
        "accessKeyId": "LTAI5tBenchKeyId",
        "accessKeySecret": "AliyunS3cretValue",
        "signName": "Acme",
        "templates": [
            {"type": 2, "usageType": "SignIn",
             "templateCode": {"china": "SMS_100001", "overseas": "SMS_900001"}},
            {"type": 2, "usageType": "Register", "templateCode": "SMS_100002"},
            {"type": 2, "usageType": "ForgotPassword", "templateCode": "SMS_100003"},
            {"type": 2, "usageType": "Generic", "templateCode": "SMS_100000"},
        ],
    },
}  # fmt: skip
BODY_KINDS = ("email", "sms-vonage", "sms-aliyun")


def phone_digits(kind: str, seq: int) -> str:
    """Request ``seq``'s number, as Logto sends it (country code, no '+'): a French mobile for
    Vonage, a mainland China mobile for Aliyun. The digits of ``seq`` are reversed so the
    number's leading digits (the service's per-range limit key) change from one to the next."""
    if kind == "sms-aliyun":
        return "8613" + f"{seq % 10**9:09d}"[::-1]  # +86 13x xxxx xxxx
    return "3361" + f"{seq % 10**7:07d}"[::-1]  # +33 6 1x xx xx xx (not every 6x is valid)


def request_body(kind: str, seq: int) -> dict[str, Any]:
    """Logto's connector body for request ``seq``: BODY, but a new recipient every time, since
    the service deduplicates the same (to, type, code) and limits messages per recipient."""
    payload = {"code": "123456", "locale": "en"}
    if kind == "email":
        return {"to": f"user{seq}@example.com", "type": "SignIn", "payload": payload}
    return {"to": phone_digits(kind, seq), "type": "SignIn", "payload": payload}


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


class _Connection:
    """A minimal HTTP/1.1 keep-alive client: pre-encoded requests, Content-Length answers.

    The load generator shares the machine with the service; aiohttp's client costs about as
    much CPU per request as the service's own HTTP layer, which would cap what a
    concurrency-1 run can show. This one costs a few microseconds.
    """

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.head = (
            f"POST {parsed.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _drive(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    seconds: float,
    expect: bytes,
    latencies: list[float] | None,
    ok: tuple[int, ...] = (200,),
) -> dict[str, Any]:
    """POST ``bodies`` in order from ``concurrency`` workers until done or ``seconds`` pass."""
    deadline = time.perf_counter() + seconds
    errors: Counter[str] = Counter()
    done = 0
    queue = iter(bodies)

    async def worker() -> None:
        nonlocal done
        connection = _Connection(url)
        try:
            for body in queue:
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                try:
                    status, payload = await connection.post(body)
                    if status not in ok:
                        errors[f"HTTP {status}: {payload[:200]!r}"] += 1
                    elif expect not in payload:
                        errors[f"unexpected body: {payload[:200]!r}"] += 1
                except Exception as exc:
                    connection.close()
                    errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                if latencies is not None:
                    latencies.append(time.perf_counter() - started)
                done += 1
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"done": done, "errors": errors}


async def _loadgen(args: argparse.Namespace) -> dict[str, Any]:
    # A new recipient per request: the service deduplicates the same (to, type, code) and
    # limits messages per recipient; numbering continues across warm-up and measured requests.
    warm_bodies = [json.dumps(request_body(args.kind, args.seq + i)).encode()
                   for i in range(args.warmup)]  # fmt: skip
    bodies = [json.dumps(request_body(args.kind, args.seq + args.warmup + i)).encode()
              for i in range(args.requests)]  # fmt: skip
    expect = f'"status": "{args.expect}"'.encode()
    warm = await _drive(args.url, warm_bodies, args.concurrency, args.warmup_seconds, expect, None)
    latencies: list[float] = []
    service_cpu0 = proc_cpu_seconds(args.pid) if args.pid else None
    fake_cpu0 = proc_cpu_seconds(args.fake_pid) if args.fake_pid else None
    own_cpu0 = time.process_time()
    machine0 = machine_cpu()
    started = time.perf_counter()
    run = await _drive(args.url, bodies, args.concurrency, args.seconds, expect, latencies)
    elapsed = time.perf_counter() - started
    own_cpu = time.process_time() - own_cpu0
    machine1 = machine_cpu()
    service_cpu1 = proc_cpu_seconds(args.pid) if args.pid else None
    fake_cpu1 = proc_cpu_seconds(args.fake_pid) if args.fake_pid else None
    latencies.sort()
    service_cpu = service_sys = None
    if service_cpu0 is not None and service_cpu1 is not None:
        service_sys = service_cpu1[1] - service_cpu0[1]
        service_cpu = service_cpu1[0] - service_cpu0[0] + service_sys
    fake_cpu = None
    if fake_cpu0 is not None and fake_cpu1 is not None:
        fake_cpu = sum(fake_cpu1) - sum(fake_cpu0)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    machine_busy = machine1[1] - machine0[1]
    other = machine_busy - own_cpu - (service_cpu or 0.0) - (fake_cpu or 0.0)
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
        "fake_cpu_pct": 100 * fake_cpu / elapsed if fake_cpu is not None else None,
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
    parser.add_argument("--kind", choices=BODY_KINDS, default="email", help="see request_body")
    parser.add_argument("--seq", type=int, default=0, help="number of the first request")
    parser.add_argument("--pid", type=int, default=0, help="service pid, for its CPU time")
    parser.add_argument("--fake-pid", type=int, default=0, help="provider fake pid, its CPU")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_loadgen(args))), flush=True)
    return 0


# --------------------------------------------------------------------------- bare SMS SDKs
# The baseline of the SMS runs, in its own process too (``bench.py _sdk ...``): the provider's
# SDK called directly, the way its documentation shows, against the same fake as the service.


def sms_message(provider: str, seq: int) -> dict[str, str]:
    """What the service would hand the provider for ``request_body("sms-<provider>", seq)``,
    built with otp-service's own config and composer (the same text and template code)."""
    from otp_service.config import parse_config
    from otp_service.message.compose import Composer, SendRequest
    from otp_service.providers.aliyun import aliyun_number, is_mainland
    from otp_service.services import build_library

    config = parse_config({"sms": {"provider": provider, provider: LOGTO_SMS[provider]}})
    body = request_body(f"sms-{provider}", seq)
    message = Composer(build_library(config), config.sms).compose(
        "sms", SendRequest(body["to"], body["type"], body["payload"])
    )
    if provider == "vonage":
        assert config.sms.vonage is not None
        return {"to": message.to.lstrip("+"), "from": config.sms.vonage.brand_name,
                "text": message.text}  # fmt: skip
    aliyun = config.sms.aliyun
    assert aliyun is not None
    template = aliyun.template(message.type)
    assert template is not None
    mainland = is_mainland(message, aliyun.strict_phone_region_number_check)
    return {
        "phone_numbers": aliyun_number(message, mainland),
        "sign_name": aliyun.sign_name,
        "template_code": template.china if mainland else template.overseas,
        "template_param": json.dumps(dict(message.params), ensure_ascii=False),
    }


def _sdk_result(
    latencies: list[float],
    errors: Counter[str],
    elapsed: float,
    own_cpu: float,
    fake_cpu: float | None,
    machine: tuple[tuple[float, float, float], tuple[float, float, float]],
    concurrency: int,
    warmup: int,
) -> dict[str, Any]:
    latencies.sort()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    other = machine[1][1] - machine[0][1] - own_cpu - (fake_cpu or 0.0)
    per = 100 / elapsed if elapsed > 0 else 0.0
    return {
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_samples": dict(errors.most_common(3)),
        "warmup_requests": warmup,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
        "max_ms": latencies[-1] * 1000 if latencies else None,
        "concurrency": concurrency,
        "service_cpu_pct": None,
        "loadgen_cpu_pct": own_cpu * per,
        "fake_cpu_pct": fake_cpu * per if fake_cpu is not None else None,
        "other_cpu_pct": max(0.0, other * per),
        "steal_pct": (machine[1][2] - machine[0][2]) * per,
    }


class _Meter:
    """CPU of this process, of the fake and of the machine over a measured window."""

    def __init__(self, fake_pid: int) -> None:
        self.fake_pid = fake_pid

    def __enter__(self) -> _Meter:
        self.fake0 = proc_cpu_seconds(self.fake_pid) if self.fake_pid else None
        self.own0, self.machine0 = time.process_time(), machine_cpu()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.started
        self.own = time.process_time() - self.own0
        self.machine1 = machine_cpu()
        fake1 = proc_cpu_seconds(self.fake_pid) if self.fake_pid else None
        self.fake = sum(fake1) - sum(self.fake0) if fake1 and self.fake0 else None


def _vonage_sdk(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """Vonage's synchronous SDK: one client; ``concurrency`` threads share it."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    from vonage import Auth, HttpClientOptions, Vonage
    from vonage_sms import SmsMessage

    # requests reads REQUESTS_CA_BUNDLE on every request (set globally on these machines):
    # point it at the fake's test CA. The parent sets it for this process only.
    assert os.environ.get("REQUESTS_CA_BUNDLE") == info["ca_file"]
    discarded = Counter[str]()

    class _Count(logging.Handler):  # urllib3: "Connection pool is full, discarding connection"
        def emit(self, record: logging.LogRecord) -> None:
            discarded[record.getMessage().split(",")[0]] += 1

    pool_log = logging.getLogger("urllib3.connectionpool")
    pool_log.addHandler(_Count())
    pool_log.propagate = False
    connector = LOGTO_SMS["vonage"]
    client = Vonage(
        Auth(api_key=connector["apiKey"], api_secret=connector["apiSecret"]),
        HttpClientOptions(rest_host=info["host"], timeout=SMS_TIMEOUT_SECONDS),
    )
    template = sms_message("vonage", 0)
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def run(first: int, count: int, seconds: float, latencies: list[float] | None) -> None:
        numbers = iter(range(first, first + count))
        deadline = time.perf_counter() + seconds

        def worker() -> None:
            while time.perf_counter() < deadline:
                with lock:
                    seq = next(numbers, None)
                if seq is None:
                    return
                to = phone_digits("sms-vonage", seq)
                started = time.perf_counter()
                try:
                    client.sms.send(
                        SmsMessage(to=to, from_=template["from"], text=template["text"])
                    )
                except Exception as exc:
                    errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                if latencies is not None:
                    latencies.append(time.perf_counter() - started)

        if args.concurrency == 1:
            worker()
            return
        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="sdk") as pool:
            for future in [pool.submit(worker) for _ in range(args.concurrency)]:
                future.result()

    run(args.seq, args.warmup, args.seconds, None)
    warm_errors = sum(errors.values())
    errors.clear()
    latencies: list[float] = []
    with _Meter(args.fake_pid) as meter:
        run(args.seq + args.warmup, args.count, args.seconds, latencies)
    result = _sdk_result(
        latencies, errors, meter.elapsed, meter.own, meter.fake,
        (meter.machine0, meter.machine1), args.concurrency, args.warmup,
    )  # fmt: skip
    result["warmup_errors"] = warm_errors
    result["discarded_connections"] = sum(discarded.values())
    return result


async def _aliyun_sdk(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """Aliyun's async SDK: one client; asyncio.gather bounded by a semaphore."""
    from alibabacloud_dysmsapi20170525 import models as sms_models
    from alibabacloud_dysmsapi20170525.client import Client
    from alibabacloud_tea_openapi import utils_models as open_api_models
    from darabonba.runtime import RuntimeOptions

    connector = LOGTO_SMS["aliyun"]
    client = Client(
        open_api_models.Config(
            access_key_id=connector["accessKeyId"],
            access_key_secret=connector["accessKeySecret"],
            endpoint=info["host"],
            protocol="http",
            read_timeout=SMS_TIMEOUT_SECONDS * 1000,
            connect_timeout=SMS_TIMEOUT_SECONDS * 1000,
        )
    )
    runtime = RuntimeOptions(autoretry=False)
    template = sms_message("aliyun", 0)
    errors: Counter[str] = Counter()
    gate = asyncio.Semaphore(args.concurrency)

    async def one(seq: int, deadline: float, latencies: list[float] | None) -> None:
        async with gate:
            if time.perf_counter() >= deadline:
                return
            request = sms_models.SendSmsRequest(
                phone_numbers=phone_digits("sms-aliyun", seq)[2:],  # mainland: without 86
                sign_name=template["sign_name"],
                template_code=template["template_code"],
                template_param=template["template_param"],
            )
            started = time.perf_counter()
            try:
                response = await client.send_sms_with_options_async(request, runtime)
                if response.body is None or response.body.code != "OK":
                    code = response.body.code if response.body is not None else "empty"
                    errors[f"business error {code}"] += 1
            except Exception as exc:
                errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            if latencies is not None:
                latencies.append(time.perf_counter() - started)

    async def run(first: int, count: int, latencies: list[float] | None) -> None:
        deadline = time.perf_counter() + args.seconds
        await asyncio.gather(*(one(first + i, deadline, latencies) for i in range(count)))

    await run(args.seq, args.warmup, None)
    warm_errors = sum(errors.values())
    errors.clear()
    latencies: list[float] = []
    with _Meter(args.fake_pid) as meter:
        await run(args.seq + args.warmup, args.count, latencies)
    result = _sdk_result(
        latencies, errors, meter.elapsed, meter.own, meter.fake,
        (meter.machine0, meter.machine1), args.concurrency, args.warmup,
    )  # fmt: skip
    result["warmup_errors"] = warm_errors
    return result


def sdk_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.py _sdk")
    parser.add_argument("--provider", choices=SMS_PROVIDERS, required=True)
    parser.add_argument("--fake-info", type=Path, required=True, help="the fake's port file")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--seq", type=int, default=0)
    parser.add_argument("--fake-pid", type=int, default=0)
    args = parser.parse_args(argv)
    info = json.loads(args.fake_info.read_text())
    if args.provider == "vonage":
        result = _vonage_sdk(args, info)
    else:
        result = asyncio.run(_aliyun_sdk(args, info))
    print(json.dumps(result), flush=True)
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
class Fake:
    """A provider fake in its own process (``python -m tests.fakes.serve``)."""

    provider: str
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]  # what it wrote to its port file: host, endpoint, ca_file, pid
    out_path: Path

    def received(self) -> dict[str, int] | None:
        """What it counted, printed on exit ({"requests", "sms"}); None if it did not say."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            counted: dict[str, int] = json.loads(
                self.out_path.read_text(errors="replace").strip().splitlines()[-1]
            )
            return counted
        return None


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    seq: int = 0  # the next request number: every request goes to a new recipient
    rejected_keys: set[str] = field(default_factory=set)  # config keys check-config refused
    config_notes: list[str] = field(default_factory=list)

    def take_seq(self, count: int) -> int:
        start = self.seq
        self.seq += count
        return start

    def service_config(self, name: str, config: dict[str, Any]) -> Path:
        """Write ``config`` plus the bench's own keys, and have ``check-config`` validate it.

        Added (when the service accepts them): ``store.path`` in the bench's temporary folder,
        so runs start empty and leave nothing behind, and ``limits.enabled: false`` (unless
        --keep-limits). A key check-config refuses is dropped, once, with a note.
        """
        extra: dict[str, Any] = {"store": {"path": str(self.workdir / f"{name}.sqlite3")}}
        if not self.args.keep_limits:
            extra["limits"] = {"enabled": False}
        path = self.workdir / f"{name}.json"
        while True:
            full = {k: v for k, v in extra.items() if k not in self.rejected_keys} | config
            path.write_text(json.dumps(full, indent=2))
            done = subprocess.run(
                [sys.executable, "-m", "otp_service", "check-config", str(path)],
                capture_output=True, text=True, timeout=60, check=False, cwd=self.workdir,
            )  # fmt: skip
            if done.returncode == 0:
                return path
            problems = re.findall(r"^\s*- ([^:\s]+):", done.stderr, re.M)
            refused = {
                key for key in extra if key not in self.rejected_keys
                and any(p == key or p.startswith(f"{key}.") for p in problems)
            }  # fmt: skip
            if not refused:
                raise RuntimeError(f"check-config refused {path}:\n{done.stderr[-3000:]}")
            self.rejected_keys |= refused
            self.config_notes.append(
                f"the service's check-config refused {', '.join(sorted(refused))}: "
                "run without (" + "; ".join(done.stderr.strip().splitlines()[1:3]) + ")"
            )

    def start_service(self, name: str, config: dict[str, Any], log_level: str) -> Service:
        config_path = self.service_config(name, config)
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

    def start_fake(self, provider: str) -> Fake:
        """A provider fake in another process; returns once it wrote its endpoint."""
        port_file = self.workdir / f"fake-{provider}.json"
        out_path = self.workdir / f"fake-{provider}.out"
        command = [sys.executable, "-m", "tests.fakes.serve", provider, "--port-file",
                   str(port_file)]  # fmt: skip
        with out_path.open("wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
            )
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the {provider} fake exited:\n{out_path.read_text(errors='replace')}"
                )
            if port_file.exists():
                return Fake(provider, proc, json.loads(port_file.read_text()), out_path)
            time.sleep(0.05)
        raise RuntimeError(f"the {provider} fake did not write {port_file}")

    def loadgen(
        self,
        service: Service,
        *,
        requests: int,
        seconds: float,
        concurrency: int,
        warmup: int,
        expect: str,
        path: str = "/v1/email",
        kind: str = "email",
        fake_pid: int = 0,
    ) -> dict[str, Any]:
        command = [
            sys.executable, str(Path(__file__).resolve()), "_loadgen",
            "--url", f"{service.url}{path}", "--requests", str(requests),
            "--seconds", str(seconds), "--concurrency", str(concurrency),
            "--warmup", str(warmup), "--expect", expect, "--pid", str(service.proc.pid),
            "--kind", kind, "--seq", str(self.take_seq(requests + warmup)),
            "--fake-pid", str(fake_pid),
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
    bench: Bench, log_level: str, profile: bool, sequential: bool = False, memory: bool = False
) -> dict[str, Any]:
    """One capture-mode service; with ``sequential``, also a concurrency-1 run afterwards (the
    HTTP floor under SMTP run (b)), measured after the memory reading. ``memory`` keeps the
    outbox in an in-memory SQLite database: the same code path without the disk, to show what
    durability costs."""
    args = bench.args
    config: dict[str, Any] = {"capture": {"max_messages": 1000}}
    if memory:
        config["store"] = {"path": ":memory:"}
    name = f"capture-{log_level.lower()}{'-memory' if memory else ''}"
    service = bench.start_service(name, config, log_level)
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


def sdk_baseline(bench: Bench, fake: Fake, concurrency: int) -> dict[str, Any]:
    """SMS run (a): the bare SDK against ``fake``, in a child process."""
    args = bench.args
    warmup = min(args.sms_warmup, args.sms_messages)
    command = [
        sys.executable, str(Path(__file__).resolve()), "_sdk", "--provider", fake.provider,
        "--fake-info", str(bench.workdir / f"fake-{fake.provider}.json"),
        "--count", str(args.sms_messages), "--seconds", str(args.sms_duration),
        "--concurrency", str(concurrency), "--warmup", str(warmup),
        "--seq", str(bench.take_seq(args.sms_messages + warmup)), "--fake-pid", str(fake.proc.pid),
    ]  # fmt: skip
    env = dict(os.environ)
    if fake.info.get("ca_file"):
        env["REQUESTS_CA_BUNDLE"] = fake.info["ca_file"]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, check=False,
        timeout=2 * args.sms_duration + 60,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the {fake.provider} SDK baseline failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def sms_service_config(provider: str, fake: Fake | None) -> dict[str, Any]:
    """The service with Logto's connector JSON for ``provider``, aimed at its fake."""
    if fake is None:
        return {"sms": {"provider": "capture"}, "capture": {"max_messages": 1000}}
    endpoint = dict(fake.info["endpoint"], timeout_seconds=SMS_TIMEOUT_SECONDS)
    return {
        "sms": {
            "provider": provider,
            provider: LOGTO_SMS[provider],
            "endpoints": {provider: endpoint},
        }
    }


def sms_floor(bench: Bench) -> dict[str, Any]:
    """The service with SMS captured: POST /v1/sms without a provider call, at 1 and C."""
    args = bench.args
    service = bench.start_service("sms-capture", sms_service_config("capture", None), "WARNING")
    try:
        runs = [
            bench.loadgen(
                service,
                requests=args.sms_messages,
                seconds=args.sms_duration,
                concurrency=concurrency,
                warmup=min(args.sms_warmup, args.sms_messages),
                expect="captured",
                path="/v1/sms",
                kind="sms-vonage",
            )
            for concurrency in (1, args.sms_concurrency)
        ]
    finally:
        bench.stop(service.proc)
    return {"sequential": runs[0], "concurrent": runs[1]}


def sms_provider_phase(bench: Bench, provider: str) -> dict[str, Any]:
    """(a) the bare SDK, (b) the service, both at 1 and C, against one fake of ``provider``."""
    args = bench.args
    fake = bench.start_fake(provider)
    try:
        baseline = [sdk_baseline(bench, fake, c) for c in (1, args.sms_concurrency)]
        service = bench.start_service(
            f"sms-{provider}", sms_service_config(provider, fake), "WARNING"
        )
        try:
            runs = []
            for concurrency in (1, args.sms_concurrency):
                name = f"sms-{provider}-c{concurrency}"
                spy = profile_start(bench, service.proc.pid, name)
                run = bench.loadgen(
                    service, requests=args.sms_messages, seconds=args.sms_duration,
                    concurrency=concurrency, warmup=min(args.sms_warmup, args.sms_messages),
                    expect="sent", path="/v1/sms", kind=f"sms-{provider}",
                    fake_pid=fake.proc.pid,
                )  # fmt: skip
                run["profile"] = profile_report(bench, spy, name)
                runs.append(run)
            rss = proc_memory_kib(service.proc.pid)
            if service.proc.poll() is not None:
                raise RuntimeError(f"the service died during the run:\n{service.log_tail()}")
        finally:
            bench.stop(service.proc)
    finally:
        bench.stop(fake.proc)
    received = fake.received()
    sent_ok = sum(
        r["requests"] + r["warmup_requests"] - r["errors"] - r.get("warmup_errors", 0)
        for r in (*baseline, *runs)
    )

    def ratio(b: dict[str, Any], a: dict[str, Any]) -> float | None:
        return b["rps"] / a["rps"] if a["rps"] else None

    return {
        "provider": provider,
        "baseline_sequential": baseline[0],
        "baseline_concurrent": baseline[1],
        "service_sequential": runs[0],
        "service_concurrent": runs[1],
        "ratio_sequential": ratio(runs[0], baseline[0]),
        "ratio_concurrent": ratio(runs[1], baseline[1]),
        "fake_received": received["sms"] if received else None,
        "messages_sent_ok": sent_ok,
        "rss_end_kib": rss.get("VmRSS"),
        "rss_peak_kib": rss.get("VmHWM"),
    }


def sms_phase(bench: Bench) -> dict[str, Any]:
    from otp_service.config.sms import SmsConfig

    return {
        "floor": sms_floor(bench),
        "providers": [sms_provider_phase(bench, provider) for provider in SMS_PROVIDERS],
        "vonage_concurrency": SmsConfig().vonage_concurrency,
        "timeout_seconds": SMS_TIMEOUT_SECONDS,
    }


# --------------------------------------------------------------------------- output


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    capture_runs: list[dict[str, Any]] = report.get("capture", [])
    smtp = report.get("smtp")
    sms = report.get("sms")
    notes: list[str] = []
    lines = [
        "## otp-service benchmark",
        "",
        f"- machine: {meta['cpus']} CPUs, {meta['platform']}; Python {meta['python']}, "
        f"aiohttp {meta['aiohttp']}, aiosmtplib {meta['aiosmtplib']}, vonage {meta['vonage']}, "
        f"alibabacloud-dysmsapi20170525 {meta['aliyun']}, otp-service {meta['otp_service']}",
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
    if capture_runs:
        lines.append(f"- capture body: `{json.dumps(request_body('email', 0))}`")
    if smtp:
        lines.append(
            f"- SMTP sink: {smtp['sink']}; message {smtp['message_bytes']} bytes; "
            f"service pool size {smtp['pool_size']}; sink counted "
            f"{smtp['sink_accepted'] if smtp['sink_accepted'] is not None else 'n/a'} "
            f"messages, {smtp['messages_sent_ok']} sent OK"
        )

    def row(name: str, r: dict[str, Any], target: str = "") -> None:
        sys_cpu = r.get("service_sys_cpu_pct")
        lines.append(
            f"| {name} | {r['concurrency']} | {r['requests']:,} | {r['errors']} "
            f"| {_num(r['rps'])} | {_num(r['p50_ms'], 2)} | {_num(r['p99_ms'], 2)} "
            f"| {_num(r['max_ms'], 1)} | {_pct(r.get('service_cpu_pct'))}"
            f"{f' ({_pct(sys_cpu)} sys)' if sys_cpu else ''} "
            f"| {_pct(r.get('loadgen_cpu_pct'))} | {_pct(r.get('other_cpu_pct'))} | {target} |"
        )

    if capture_runs or smtp:
        lines += [
            "",
            "| scenario | conc. | requests | errors | req/s | p50 ms | p99 ms | max ms "
            "| service CPU | loadgen CPU | other CPU | target |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
    for run in capture_runs:
        memory = run.get("store") == "memory"
        target = CAPTURE_TARGET_RPS if memory else DURABLE_TARGET_RPS
        passed = "PASS" if run["rps"] >= target else "MISS"
        outbox = "outbox in memory (no disk)" if memory else "SQLite outbox on disk"
        row(
            f"capture, --log-level {run['log_level']}, {outbox}",
            run,
            f">= {target:,.0f} req/s: {passed}",
        )
    by_store = {run.get("store"): run for run in capture_runs if run["log_level"] == "WARNING"}
    if {"memory", "file"} <= by_store.keys():
        added = (by_store["file"]["p99_ms"] or 0) - (by_store["memory"]["p99_ms"] or 0)
        notes.append(f"- durability adds {added:+.2f} ms to p99 (disk outbox vs in-memory)")
    for run in capture_runs:
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
    if notes:
        lines += ["", *notes]
    if sms:
        lines += _sms_markdown(sms)
    lines += _memory_markdown(report)
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


def _sms_markdown(sms: dict[str, Any]) -> list[str]:
    """The SMS section: what was measured, the table, the ceiling from the HTTP hop."""
    head = [
        "",
        "### SMS end to end (provider fakes in their own process)",
        "",
        f"- (a) the provider's SDK called directly (its documented client, one per run; "
        f"Vonage: `{sms['timeout_seconds']}` s timeout, its default pool of 10 connections, 50 "
        "threads for concurrency 50; Aliyun: `RuntimeOptions(autoretry=False)`, "
        "`asyncio.gather` bounded by a semaphore). (b) otp-service configured with Logto's "
        "connector JSON and `sms.endpoints` at the fake, `--log-level WARNING`, driven with "
        "`POST /v1/sms` (Logto's HTTP SMS body) by the load generator; each answer comes after "
        f"the fake accepted the message. Service defaults otherwise (`sms.vonage_concurrency` "
        f"{sms['vonage_concurrency']}). Target: (b)/(a) >= {SMS_TARGET_RATIO:.0%} at each "
        "concurrency.",
        "- 'fake CPU' is the provider fake's process (an aiohttp server; TLS for Vonage).",
    ]
    for p in sms["providers"]:
        discarded = [
            p[k].get("discarded_connections")
            for k in ("baseline_sequential", "baseline_concurrent")
        ]
        head.append(
            f"- {p['provider']}: the fake counted "
            f"{p['fake_received'] if p['fake_received'] is not None else 'n/a'} messages, "
            f"{p['messages_sent_ok']:,} sent OK"
            + (
                f"; the bare SDK discarded {discarded[1]:,} pooled connections at concurrency "
                f"{p['baseline_concurrent']['concurrency']} (urllib3: 'Connection pool is full')"
                if discarded[1]
                else ""
            )
        )
    lines = [
        *head,
        "",
        "| scenario | conc. | requests | errors | req/s | p50 ms | p99 ms | max ms "
        "| service CPU | loadgen CPU | fake CPU | other CPU | CPU ms/msg | target |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    return lines + _sms_rows(sms)


def cpu_per_message(r: dict[str, Any]) -> float | None:
    """CPU milliseconds per message of the run's own processes: service, client and fake."""
    parts: list[float] = [
        r[k] for k in ("service_cpu_pct", "loadgen_cpu_pct", "fake_cpu_pct") if r.get(k) is not None
    ]
    rps: float = r["rps"]
    return sum(parts) / 100 / rps * 1000 if parts and rps else None


def _sms_rows(sms: dict[str, Any]) -> list[str]:
    floor = sms["floor"]
    lines: list[str] = []

    def row(name: str, r: dict[str, Any], target: str = "") -> None:
        sys_cpu = r.get("service_sys_cpu_pct")
        lines.append(
            f"| {name} | {r['concurrency']} | {r['requests']:,} | {r['errors']} "
            f"| {_num(r['rps'])} | {_num(r['p50_ms'], 2)} | {_num(r['p99_ms'], 2)} "
            f"| {_num(r['max_ms'], 1)} | {_pct(r.get('service_cpu_pct'))}"
            f"{f' ({_pct(sys_cpu)} sys)' if sys_cpu else ''} "
            f"| {_pct(r.get('loadgen_cpu_pct'))} | {_pct(r.get('fake_cpu_pct'))} "
            f"| {_pct(r.get('other_cpu_pct'))} | {_num(cpu_per_message(r), 2)} | {target} |"
        )

    for key in ("sequential", "concurrent"):
        row("(h) service, SMS captured (HTTP + compose, no provider)", floor[key])
    for p in sms["providers"]:
        name = p["provider"]
        sdk = "Vonage SDK (sync, threads)" if name == "vonage" else "Aliyun SDK (async)"
        for key in ("sequential", "concurrent"):
            row(f"{name} (a) bare {sdk}", p[f"baseline_{key}"])
        for key in ("sequential", "concurrent"):
            ratio = p[f"ratio_{key}"]
            verdict = "n/a" if ratio is None else ("PASS" if ratio >= SMS_TARGET_RATIO else "MISS")
            row(
                f"{name} (b) service → {name} fake, HTTP end to end",
                p[f"service_{key}"],
                f"(b)/(a) = {_num(None if ratio is None else 100 * ratio, 0)}% "
                f"(>= {SMS_TARGET_RATIO:.0%}): {verdict}",
            )
    ceilings = []
    h = floor["sequential"]["rps"]
    for p in sms["providers"]:
        a = p["baseline_sequential"]["rps"]
        if a and h:
            t_a, t_h = 1 / a, 1 / h
            ceilings.append(
                f"{p['provider']} {100 * t_a / (t_a + t_h):.0f}% ({t_a * 1000:.2f} ms + "
                f"{t_h * 1000:.2f} ms)"
            )
    if ceilings:
        lines += [
            "",
            "Ceiling of sequential (b)/(a) from the HTTP hop and composing alone ((a)'s time per "
            "message plus (h)'s sequential round trip, as if sending cost the service nothing "
            f"extra): {'; '.join(ceilings)}.",
        ]
    return lines


def _memory_markdown(report: dict[str, Any]) -> list[str]:
    capture_runs: list[dict[str, Any]] = report.get("capture", [])
    smtp, sms = report.get("smtp"), report.get("sms")
    lines = [
        "",
        "| service memory (VmRSS, MiB) | after start | after run | peak (VmHWM) |",
        "|---|--:|--:|--:|",
    ]
    for run in capture_runs:
        lines.append(
            f"| capture, --log-level {run['log_level']}, outbox {run.get('store', 'file')}, after "
            f"{run['requests'] + run['warmup_requests']:,} requests (inbox bounded at 1000) "
            f"| {_mib(run['rss_start_kib'])} "
            f"| {_mib(run['rss_end_kib'])} | {_mib(run['rss_peak_kib'])} |"
        )
    if smtp:
        lines.append(
            f"| SMTP service, after (b) and (c) | - | {_mib(smtp['rss_end_kib'])} "
            f"| {_mib(smtp['rss_peak_kib'])} |"
        )
    for p in sms["providers"] if sms else []:
        lines.append(
            f"| SMS service ({p['provider']}), after its (b) runs | - "
            f"| {_mib(p['rss_end_kib'])} | {_mib(p['rss_peak_kib'])} |"
        )
    return lines if len(lines) > 3 else []


def _all_runs(report: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for run in report.get("capture", []):
        yield f"capture {run['log_level']}", run
        if "sequential" in run:
            yield f"capture {run['log_level']} sequential", run["sequential"]
    if report.get("smtp"):
        for key in ("baseline", "baseline_built", "service_sequential", "service_concurrent"):
            yield key, report["smtp"][key]
    sms = report.get("sms")
    if sms:
        for key in ("sequential", "concurrent"):
            yield f"sms capture {key}", sms["floor"][key]
        for p in sms["providers"]:
            for key in (
                "baseline_sequential", "baseline_concurrent",
                "service_sequential", "service_concurrent",
            ):  # fmt: skip
                yield f"sms {p['provider']} {key}", p[key]


# --------------------------------------------------------------------------- main

PARTS = ("capture", "email", "sms")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.py", description="Benchmark otp-service (127.0.0.1 only, bounded)."
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        help="run one part: capture (capture mode), email (SMTP end to end), sms (SMS end to "
        "end, Vonage and Aliyun fakes); default: all",
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
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        parts = [args.only]
    else:
        skipped = {"email": args.skip_smtp, "sms": args.skip_sms}
        parts = [part for part in PARTS if not skipped.get(part)]
    report: dict[str, Any] = {
        "meta": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True),
            "python": platform.python_version(),
            "aiohttp": version("aiohttp"),
            "aiosmtplib": version("aiosmtplib"),
            "vonage": version("vonage"),
            "aliyun": version("alibabacloud-dysmsapi20170525"),
            "otp_service": version("otp-service"),
            "parts": parts,
            "loadavg_start": loadavg(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="otp-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            if "capture" in parts:
                report["capture"] = [
                    capture_phase(bench, "WARNING", profile=False, memory=True),
                    capture_phase(bench, "WARNING", profile=True, sequential="email" in parts),
                ]
                if not args.skip_info:
                    report["capture"].append(capture_phase(bench, "INFO", profile=False))
            if "email" in parts:
                report["smtp"] = smtp_phase(bench)
            if "sms" in parts:
                report["sms"] = sms_phase(bench)
        finally:
            bench.cleanup()
            signal.signal(signal.SIGTERM, previous)
        report["meta"]["config_notes"] = bench.config_notes
    report["meta"]["loadavg_end"] = loadavg()
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_loadgen":
        sys.exit(loadgen_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "_sdk":
        sys.exit(sdk_main(sys.argv[2:]))
    sys.exit(main())
