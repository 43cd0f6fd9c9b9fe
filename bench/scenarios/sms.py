"""SMS end to end, for Vonage, Aliyun and Twilio, each against its fake from
``tests/support/fakes``.

Per provider: (a) the bare SDK (:mod:`bench.scenarios.sdk`; for Twilio both of its HTTP clients,
aiohttp as the service uses it and requests on threads) and (b) the service configured with
Logto's connector JSON and ``sms.endpoints`` at the fake, both at concurrency 1 and
--sms-concurrency; and once, (h) the service capturing SMS: the HTTP and composing floor.
Each fake runs in its own process (``python -m tests.support.fakes.serve``) and counts what it got.
``--before REF`` adds (b) for otp-service as of git ``REF`` (started just before the current
one, against the same fake), for a before/after in one run; ``--sms-providers`` picks providers.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any

from bench import table
from bench.common import loadavg, proc_memory_kib
from bench.harness import Bench, Fake
from bench.profiling import profile_report, profile_start
from bench.scenarios import Run, Scenario
from bench.scenarios.sdk import SMS_PROVIDERS, SMS_TIMEOUT_SECONDS, logto_connector, sdk_baseline

SMS_TARGET_RATIO = 0.80  # at concurrency 50; at 1 it is a latency budget (see bench/README)
TWILIO = "twilio"
SDK_LABEL = {
    "vonage": "Vonage SDK (sync, threads)",
    "aliyun": "Aliyun SDK (async)",
    TWILIO: "Twilio SDK (aiohttp client)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sms-providers", default=",".join(SMS_PROVIDERS), metavar="NAME,...",
        help=f"SMS: the providers to run (default {','.join(SMS_PROVIDERS)})",
    )  # fmt: skip


def sms_service_config(provider: str, fake: Fake | None) -> dict[str, Any]:
    """The service with Logto's connector JSON for ``provider``, aimed at its fake."""
    if fake is None:
        return {"sms": {"provider": "capture"}, "capture": {"max_messages": 1000}}
    endpoint = dict(fake.info["endpoint"], timeout_seconds=SMS_TIMEOUT_SECONDS)
    return {
        "sms": {
            "provider": provider,
            provider: logto_connector(provider),
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


def service_runs(
    bench: Bench, fake: Fake, version: str, env: dict[str, str] | None
) -> list[dict[str, Any]]:
    """(b) at 1 and C: a service (``env``: another version of it) against ``fake``; the last
    run carries the service's memory under "rss"."""
    args, provider = bench.args, fake.provider
    slug = f"sms-{provider}" if version == "service" else f"sms-{provider}-{version}"
    service = bench.start_service(slug, sms_service_config(provider, fake), "WARNING", env=env)
    try:
        runs = []
        for concurrency in (1, args.sms_concurrency):
            name = f"{slug}-c{concurrency}"
            spy = profile_start(bench, service.proc.pid, name)
            run = bench.loadgen(
                service, requests=args.sms_messages, seconds=args.sms_duration,
                concurrency=concurrency, warmup=min(args.sms_warmup, args.sms_messages),
                expect="sent", path="/v1/sms", kind=f"sms-{provider}", fake_pid=fake.proc.pid,
            )  # fmt: skip
            run["profile"] = profile_report(bench, spy, name)
            run["loadavg"] = loadavg()
            runs.append(run)
        runs[-1]["rss"] = proc_memory_kib(service.proc.pid)
        if service.proc.poll() is not None:
            raise RuntimeError(f"the service died during the run:\n{service.log_tail()}")
    finally:
        bench.stop(service.proc)
    return runs


def ratio(b: dict[str, Any], a: dict[str, Any]) -> float | None:
    return b["rps"] / a["rps"] if a["rps"] else None


def before_keys(ref: str, runs: list[Run], baseline: list[Run]) -> dict[str, Any]:
    """The --before runs and their ratios, in the provider's result."""
    return {
        "before_ref": ref,
        "before_sequential": runs[0],
        "before_concurrent": runs[1],
        "before_ratio_sequential": ratio(runs[0], baseline[0]),
        "before_ratio_concurrent": ratio(runs[1], baseline[1]),
    }


def sms_provider_phase(bench: Bench, provider: str) -> dict[str, Any]:
    """(a) the bare SDK, (b) the service, both at 1 and C, against one fake of ``provider``."""
    args = bench.args
    fake = bench.start_fake(provider)
    try:
        baseline = [sdk_baseline(bench, fake, c) for c in (1, args.sms_concurrency)]
        # Twilio's SDK has two HTTP clients: the service uses the aiohttp one; this is the other.
        threads = (
            [sdk_baseline(bench, fake, c, "threads") for c in (1, args.sms_concurrency)]
            if provider == TWILIO
            else []
        )
        versions: dict[str, list[dict[str, Any]]] = {}
        rss: dict[str, int] = {}
        before = args.before
        for version in (["before"] if before else []) + ["service"]:
            versions[version] = service_runs(
                bench, fake, version, bench.ref_env(before) if version == "before" else None
            )
            rss = versions[version][-1].pop("rss")
    finally:
        bench.stop(fake.proc)
    runs = versions["service"]
    received = fake.received()
    sent_ok = sum(
        r["requests"] + r["warmup_requests"] - r["errors"] - r.get("warmup_errors", 0)
        for r in (*baseline, *threads, *(r for v in versions.values() for r in v))
    )

    return {
        "provider": provider,
        "baseline_sequential": baseline[0],
        "baseline_concurrent": baseline[1],
        "service_sequential": runs[0],
        "service_concurrent": runs[1],
        "ratio_sequential": ratio(runs[0], baseline[0]),
        "ratio_concurrent": ratio(runs[1], baseline[1]),
        **(
            {"baseline_threads_sequential": threads[0], "baseline_threads_concurrent": threads[1]}
            if threads
            else {}
        ),
        **(before_keys(before, versions["before"], baseline) if before else {}),
        "fake_received": received["sms"] if received else None,
        "messages_sent_ok": sent_ok,
        "rss_end_kib": rss.get("VmRSS"),
        "rss_peak_kib": rss.get("VmHWM"),
    }


def sms_phase(bench: Bench) -> dict[str, Any]:
    from otp_service.config.sms import SmsConfig

    return {
        "floor": sms_floor(bench),
        "providers": [
            sms_provider_phase(bench, provider)
            for provider in SMS_PROVIDERS
            if provider in bench.args.sms_providers.split(",")
        ],
        "vonage_concurrency": SmsConfig().vonage_concurrency,
        "timeout_seconds": SMS_TIMEOUT_SECONDS,
    }


def section(sms: dict[str, Any]) -> list[str]:
    """The SMS section: what was measured, the table, the ceiling from the HTTP hop."""
    head = [
        "",
        "### SMS end to end (provider fakes in their own process)",
        "",
        f"- (a) the provider's SDK called directly (its documented client, one per run; "
        f"Vonage: `{sms['timeout_seconds']}` s timeout, its default pool of 10 connections, 50 "
        "threads for concurrency 50; Aliyun: `RuntimeOptions(autoretry=False)`, "
        "`asyncio.gather` bounded by a semaphore; Twilio: (a) its aiohttp client and "
        "`create_async` gathered under a semaphore, (a') its requests client shared by 50 "
        "threads, pool widened to 50). (b) otp-service configured with Logto's "
        "connector JSON and `sms.endpoints` at the fake, `--log-level WARNING`, driven with "
        "`POST /v1/sms` (Logto's HTTP SMS body) by the load generator; each answer comes after "
        f"the fake accepted the message. Service defaults otherwise (`sms.vonage_concurrency` "
        f"{sms['vonage_concurrency']}). Target: (b)/(a) >= {SMS_TARGET_RATIO:.0%} at "
        "concurrency 50 (at 1 the ceiling below bounds it).",
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
    return lines + sms_rows(sms)


def cpu_per_message(r: dict[str, Any]) -> float | None:
    """CPU milliseconds per message of the run's own processes: service, client and fake."""
    parts: list[float] = [
        r[k] for k in ("service_cpu_pct", "loadgen_cpu_pct", "fake_cpu_pct") if r.get(k) is not None
    ]
    rps: float = r["rps"]
    return sum(parts) / 100 / rps * 1000 if parts and rps else None


def sms_rows(sms: dict[str, Any]) -> list[str]:
    floor = sms["floor"]
    lines: list[str] = []

    def row(name: str, r: dict[str, Any], target: str = "") -> None:
        lines.append(
            f"| {name} | {r['concurrency']} | {r['requests']:,} | {r['errors']} "
            f"| {table.num(r['rps'])} | {table.num(r['p50_ms'], 2)} | {table.num(r['p99_ms'], 2)} "
            f"| {table.num(r['max_ms'], 1)} | {table.service_cpu(r)} "
            f"| {table.pct(r.get('loadgen_cpu_pct'))} | {table.pct(r.get('fake_cpu_pct'))} "
            f"| {table.pct(r.get('other_cpu_pct'))} | {table.num(cpu_per_message(r), 2)} "
            f"| {target} |"
        )

    for key in ("sequential", "concurrent"):
        row("(h) service, SMS captured (HTTP + compose, no provider)", floor[key])
    for p in sms["providers"]:
        name = p["provider"]
        for key in ("sequential", "concurrent"):
            row(f"{name} (a) bare {SDK_LABEL[name]}", p[f"baseline_{key}"])
        for key in ("sequential", "concurrent"):
            if f"baseline_threads_{key}" in p:
                row(
                    f"{name} (a') bare SDK, requests client on threads",
                    p[f"baseline_threads_{key}"],
                )
        for key in ("sequential", "concurrent") if "before_ref" in p else ():
            row(
                f"{name} (b) service as of `{p['before_ref']}` (before)",
                p[f"before_{key}"],
                table.verdict(p[f"before_ratio_{key}"], SMS_TARGET_RATIO),
            )
        for key in ("sequential", "concurrent"):
            row(
                f"{name} (b) service → {name} fake, HTTP end to end",
                p[f"service_{key}"],
                table.verdict(p[f"ratio_{key}"], SMS_TARGET_RATIO),
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


def memory_rows(sms: dict[str, Any]) -> list[str]:
    return [
        f"| SMS service ({p['provider']}), after its (b) runs | - "
        f"| {table.mib(p['rss_end_kib'])} | {table.mib(p['rss_peak_kib'])} |"
        for p in sms["providers"]
    ]


def runs(sms: dict[str, Any]) -> Iterator[tuple[str, Run]]:
    for key in ("sequential", "concurrent"):
        yield f"sms capture {key}", sms["floor"][key]
    for p in sms["providers"]:
        for key in (
            "baseline_sequential", "baseline_concurrent",
            "baseline_threads_sequential", "baseline_threads_concurrent",
            "before_sequential", "before_concurrent", "service_sequential", "service_concurrent",
        ):  # fmt: skip
            if key in p:
                yield f"sms {p['provider']} {key}", p[key]


def run(bench: Bench, parts: Sequence[str]) -> dict[str, Any]:
    return sms_phase(bench)


SCENARIO = Scenario(
    name="sms",
    key="sms",
    run=run,
    help="SMS end to end, Vonage, Aliyun and Twilio fakes",
    skip_flag="skip_sms",
    add_arguments=add_arguments,
    section=section,
    memory_rows=memory_rows,
    runs=runs,
)
