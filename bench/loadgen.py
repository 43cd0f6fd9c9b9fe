"""The load generator: a child process that POSTs Logto's bodies to the service.

    python -m bench.loadgen --url URL --requests N --seconds S --concurrency C [...]

Runs in its own process (started by :meth:`bench.harness.Bench.loadgen`) so it does not share
the service's event loop; it prints one JSON object on stdout: counts, latencies, and the CPU
of the service, itself, the provider fake and the rest of the machine over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from collections import Counter
from typing import Any

from bench.common import BODY_KINDS, machine_cpu, percentile, proc_cpu_seconds, request_body


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
    rate: float = 0.0,
) -> dict[str, Any]:
    """POST ``bodies`` in order from ``concurrency`` workers until done or ``seconds`` pass;
    with ``rate``, the n-th request starts no earlier than n / ``rate`` seconds in (an open
    loop at that rate, as long as ``concurrency`` requests in flight keep up)."""
    start = time.perf_counter()
    deadline = start + seconds
    errors: Counter[str] = Counter()
    done = issued = 0
    queue = iter(bodies)

    async def worker() -> None:
        nonlocal done, issued
        connection = _Connection(url)
        try:
            for body in queue:
                if rate:
                    slot = start + issued / rate
                    issued += 1
                    if slot > time.perf_counter():
                        await asyncio.sleep(slot - time.perf_counter())
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


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then measure: one JSON-able result (requests, errors, latencies, CPU)."""
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
    run = await _drive(
        args.url, bodies, args.concurrency, args.seconds, expect, latencies, rate=args.rate
    )
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
        "machine_cpu_pct": 100 * machine_busy / elapsed,  # the whole machine, of 100% per CPU
        "steal_pct": 100 * (machine1[2] - machine0[2]) / elapsed,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The load generator's options (what :meth:`bench.harness.Bench.loadgen` passes)."""
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
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
    parser.add_argument(
        "--rate", type=float, default=0.0, help="measured requests per second (0: closed loop)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(asyncio.run(run(parse_args(argv)))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
