"""What every part of the benchmark shares: request bodies, /proc readings, process stopping.

Kept free of third-party imports: the load generator (``python -m bench.loadgen``) imports it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# the repository (tests.support.fakes.serve runs from it)
ROOT = Path(__file__).resolve().parents[1]
BODY: dict[str, Any] = {
    "to": "user@example.com",
    "type": "SignIn",
    "payload": {"code": "123456", "locale": "en"},
}
BODY_KINDS = ("email", "email-ip", "sms-vonage", "sms-aliyun", "sms-twilio")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def client_ip(seq: int) -> str:
    """A distinct client address per request: IPv4 from 11.0.0.0 up, or a distinct IPv6 /64."""
    if seq % 2:
        return f"2001:db8:{seq >> 16 & 0xFFFF:x}:{seq & 0xFFFF:x}::1"
    n = 0x0B000000 + seq
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def phone_digits(kind: str, seq: int) -> str:
    """Request ``seq``'s number, as Logto sends it (country code, no '+'): a French mobile for
    Vonage and Twilio, a mainland China mobile for Aliyun. The digits of ``seq`` are reversed so the
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
    if kind == "email-ip":  # a new client address too: IPv4, or an IPv6 /64, in turn
        return {"to": f"user{seq}@example.com", "type": "SignIn", "payload": payload,
                "ip": client_ip(seq)}  # fmt: skip
    return {"to": phone_digits(kind, seq), "type": "SignIn", "payload": payload}


def proc_cpu_seconds(pid: int, children: bool = True) -> tuple[float, float] | None:
    """(user, system) CPU time of a process, in seconds (None when it is gone); with
    ``children``, plus its child processes': the live ones' (``serve --workers N``: the
    workers) and those that exited and were waited for (PostgreSQL's autovacuum workers and
    closed backends; without them, a child alive at the start of a window and gone at its end
    took its whole CPU time off the window's)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    if children:  # cutime, cstime: the children waited for
        user, system = user + int(fields[13]) / CLK_TCK, system + int(fields[14]) / CLK_TCK
        kids: list[str] = []
        for task in Path(f"/proc/{pid}/task").glob("*"):  # a child belongs to the thread
            with contextlib.suppress(OSError):  # that started it
                kids += (task / "children").read_text().split()
        for kid in kids:
            if (cpu := proc_cpu_seconds(int(kid), children=False)) is not None:
                user, system = user + cpu[0], system + cpu[1]
    return user, system


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
