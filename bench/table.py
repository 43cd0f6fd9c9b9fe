"""Number formats and the row of the shared Markdown table (capture and SMTP runs share it)."""

from __future__ import annotations

from typing import Any

HEADER = [
    "| scenario | conc. | requests | errors | req/s | p50 ms | p99 ms | max ms "
    "| service CPU | loadgen CPU | other CPU | target |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
]


def num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def service_cpu(r: dict[str, Any]) -> str:
    """The service's CPU, with its kernel share when there is one."""
    sys_cpu = r.get("service_sys_cpu_pct")
    return f"{pct(r.get('service_cpu_pct'))}{f' ({pct(sys_cpu)} sys)' if sys_cpu else ''}"


def row(name: str, r: dict[str, Any], target: str = "") -> str:
    """One run as a row of :data:`HEADER`."""
    return (
        f"| {name} | {r['concurrency']} | {r['requests']:,} | {r['errors']} "
        f"| {num(r['rps'])} | {num(r['p50_ms'], 2)} | {num(r['p99_ms'], 2)} "
        f"| {num(r['max_ms'], 1)} | {service_cpu(r)} "
        f"| {pct(r.get('loadgen_cpu_pct'))} | {pct(r.get('other_cpu_pct'))} | {target} |"
    )


def verdict(ratio: float | None, target: float) -> str:
    """``(b)/(a) = 87% (>= 60%): PASS`` for a ratio against its target."""
    passed = "n/a" if ratio is None else ("PASS" if ratio >= target else "MISS")
    return (
        f"(b)/(a) = {num(None if ratio is None else 100 * ratio, 0)}% (>= {target:.0%}): {passed}"
    )
