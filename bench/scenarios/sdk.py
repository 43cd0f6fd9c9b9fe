"""SMS run (a): the provider's SDK called directly, in a child process, against the same fake.

The parent side is :func:`sdk_baseline`; the child is ``python -m bench.scenarios.sdk_vonage``
or ``sdk_aliyun`` (the way each SDK's documentation shows), which prints one JSON object.
The connector JSON is Logto's, from the builders in ``tests/support/fakes``, and the text, number
format, sign name and template code are what otp-service's own composer makes of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine_cpu, percentile, proc_cpu_seconds, request_body
from bench.harness import Bench, Fake
from tests.support.fakes.aliyun import logto_aliyun_json
from tests.support.fakes.twilio import logto_twilio_json
from tests.support.fakes.vonage import logto_vonage_json

SMS_PROVIDERS = ("vonage", "aliyun", "twilio")
SMS_TIMEOUT_SECONDS = 5  # the provider timeout, in the bare SDK runs and in the service


def logto_connector(provider: str) -> dict[str, Any]:
    """Logto's SMS connector JSON for ``provider``, as an admin pastes it (test credentials)."""
    builders = {"vonage": logto_vonage_json, "aliyun": logto_aliyun_json,
                "twilio": logto_twilio_json}  # fmt: skip
    return builders[provider]()


def sms_message(provider: str, seq: int) -> dict[str, str]:
    """What the service would hand the provider for ``request_body("sms-<provider>", seq)``,
    built with otp-service's own config and composer (the same text and template code)."""
    from otp_service.config import parse_config
    from otp_service.message.compose import Composer, SendRequest
    from otp_service.providers.aliyun import aliyun_number, is_mainland
    from otp_service.services import build_library

    config = parse_config({"sms": {"provider": provider, provider: logto_connector(provider)}})
    body = request_body(f"sms-{provider}", seq)
    message = Composer(build_library(config), config.sms).compose(
        "sms", SendRequest(body["to"], body["type"], body["payload"])
    )
    if provider == "vonage":
        assert config.sms.vonage is not None
        return {"to": message.to.lstrip("+"), "from": config.sms.vonage.brand_name,
                "text": message.text}  # fmt: skip
    if provider == "twilio":
        assert config.sms.twilio is not None
        return {"to": message.to, "body": message.text,
                "messaging_service_sid": config.sms.twilio.messaging_service_sid}  # fmt: skip
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


def sdk_result(
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


class Meter:
    """CPU of this process, of the fake and of the machine over a measured window."""

    def __init__(self, fake_pid: int) -> None:
        self.fake_pid = fake_pid

    def __enter__(self) -> Meter:
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


class Refused(Exception):
    """An SDK call that returned an error answer instead of raising: counted under its text."""


def _count_error(errors: Counter[str], exc: Exception) -> None:
    errors[str(exc) if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}"[:200]] += 1


def _measured(
    args: argparse.Namespace,
    meter: Meter,
    latencies: list[float],
    errors: Counter[str],
    warm_errors: int,
) -> dict[str, Any]:
    result = sdk_result(
        latencies, errors, meter.elapsed, meter.own, meter.fake,
        (meter.machine0, meter.machine1), args.concurrency, args.warmup,
    )  # fmt: skip
    result["warmup_errors"] = warm_errors
    return result


def drive_threads(
    args: argparse.Namespace, prepare: Callable[[int], Callable[[], object]]
) -> dict[str, Any]:
    """A synchronous SDK's run: ``--warmup`` calls, then ``--count`` measured ones (each part
    within ``--seconds``), made by ``--concurrency`` threads sharing one client. ``prepare(seq)``
    gives the call for message ``seq``; the call alone is timed."""
    from concurrent.futures import ThreadPoolExecutor

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
                call = prepare(seq)
                started = time.perf_counter()
                try:
                    call()
                except Exception as exc:
                    _count_error(errors, exc)
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
    with Meter(args.fake_pid) as meter:
        run(args.seq + args.warmup, args.count, args.seconds, latencies)
    return _measured(args, meter, latencies, errors, warm_errors)


async def drive_async(
    args: argparse.Namespace, prepare: Callable[[int], Awaitable[object]]
) -> dict[str, Any]:
    """An async SDK's run: ``--warmup`` calls, then ``--count`` measured ones (each part within
    ``--seconds``), gathered under a semaphore of ``--concurrency``. ``prepare(seq)`` gives the
    awaitable for message ``seq``; awaiting it alone is timed."""
    errors: Counter[str] = Counter()
    gate = asyncio.Semaphore(args.concurrency)

    async def one(seq: int, deadline: float, latencies: list[float] | None) -> None:
        async with gate:
            if time.perf_counter() >= deadline:
                return
            call = prepare(seq)
            started = time.perf_counter()
            try:
                await call
            except Exception as exc:
                _count_error(errors, exc)
            if latencies is not None:
                latencies.append(time.perf_counter() - started)

    async def run(first: int, count: int, latencies: list[float] | None) -> None:
        deadline = time.perf_counter() + args.seconds
        await asyncio.gather(*(one(first + i, deadline, latencies) for i in range(count)))

    await run(args.seq, args.warmup, None)
    warm_errors = sum(errors.values())
    errors.clear()
    latencies: list[float] = []
    with Meter(args.fake_pid) as meter:
        await run(args.seq + args.warmup, args.count, latencies)
    return _measured(args, meter, latencies, errors, warm_errors)


def child_args(provider: str, argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The child's options, and what the fake wrote to its port file (host, ca_file ...)."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.scenarios.sdk_{provider}")
    parser.add_argument("--fake-info", type=Path, required=True, help="the fake's port file")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--seq", type=int, default=0)
    parser.add_argument("--fake-pid", type=int, default=0)
    parser.add_argument("--client", default=None, help="which of the SDK's HTTP clients")
    args = parser.parse_args(argv)
    info = json.loads(args.fake_info.read_text())
    return args, info


def report(result: dict[str, Any]) -> int:
    print(json.dumps(result), flush=True)
    return 0


def sdk_baseline(
    bench: Bench, fake: Fake, concurrency: int, client: str | None = None
) -> dict[str, Any]:
    """SMS run (a): the bare SDK against ``fake``, in a child process (``client``: which of
    the SDK's HTTP clients, when it has several)."""
    args = bench.args
    warmup = min(args.sms_warmup, args.sms_messages)
    command = [
        sys.executable, "-m", f"bench.scenarios.sdk_{fake.provider}",
        "--fake-info", str(bench.workdir / f"fake-{fake.provider}.json"),
        "--count", str(args.sms_messages), "--seconds", str(args.sms_duration),
        "--concurrency", str(concurrency), "--warmup", str(warmup),
        "--seq", str(bench.take_seq(args.sms_messages + warmup)), "--fake-pid", str(fake.proc.pid),
    ]  # fmt: skip
    if client is not None:
        command += ["--client", client]
    env = dict(os.environ)
    if fake.info.get("ca_file"):
        env["REQUESTS_CA_BUNDLE"] = fake.info["ca_file"]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, check=False, cwd=ROOT,
        timeout=2 * args.sms_duration + 60,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the {fake.provider} SDK baseline failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
