"""The benchmark package (``python -m bench``) imports, parses its options, drives the service.

Cheap checks only: nothing here measures or asserts on timing. The benchmark itself is run by
hand (bench/README.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import bench
from bench import loadgen, runner
from bench.report import markdown
from tests.support.service import ClientFactory

BENCH = Path(bench.__file__).resolve().parent


def test_bench_every_module_imports() -> None:
    """Every bench module, the SDK children and the load generator included, imports cleanly."""
    names = [
        info.name
        for info in pkgutil.walk_packages([str(BENCH)], prefix="bench.")
        if not info.name.endswith("__main__")  # runs the benchmark when imported
    ]
    assert {"bench.loadgen", "bench.scenarios.sdk_vonage", "bench.scenarios.sdk_aliyun"} <= set(
        names
    )
    for name in names:
        importlib.import_module(name)


def test_bench_files_under_400_lines() -> None:
    """No file of the benchmark grows past 400 lines (a bigger one is two modules)."""
    long = {
        str(path.relative_to(BENCH)): n
        for path in BENCH.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def test_bench_options_select_the_parts() -> None:
    """Without --only every default scenario runs in order (the ten-minute limits flood and the
    stores-and-workers comparison only when asked for); --only and --skip-* narrow it down."""
    names = [scenario.name for scenario in runner.SCENARIOS]
    assert names == ["capture", "email", "sms", "limits", "replicas", "delay", "cpu", "workers"]
    assert runner.selected(runner.parse_args([])) == ["capture", "email", "sms"]
    assert runner.selected(runner.parse_args(["--only", "limits"])) == ["limits"]
    assert runner.selected(runner.parse_args(["--only", "replicas"])) == ["replicas"]
    assert runner.selected(runner.parse_args(["--only", "delay"])) == ["delay"]
    assert runner.selected(runner.parse_args(["--only", "sms"])) == ["sms"]
    assert runner.selected(runner.parse_args(["--skip-smtp", "--skip-sms"])) == ["capture"]
    args = runner.parse_args([])
    assert (args.requests, args.concurrency, args.smtp_messages, args.sms_messages) == (
        20000,
        50,
        2000,
        1000,
    )


@pytest.mark.parametrize("option", [["--requests", "0"], ["--duration", "0"], ["--only", "x"]])
def test_bench_options_refused_when_out_of_range(option: list[str]) -> None:
    """A zero count, a zero duration or an unknown part stops with a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        runner.parse_args(option)
    assert exit_info.value.code == 2


async def test_bench_loadgen_drives_the_service_without_errors(service: ClientFactory) -> None:
    """The load generator's email and SMS bodies are accepted by the capture-mode service, and
    its result renders as a row of the report's table."""
    client = await service({"capture": {"max_messages": 100}, "limits": {"enabled": False}})
    results = {}
    for kind, path in (
        ("email", "/v1/email"),
        ("sms-vonage", "/v1/sms"),
        ("sms-aliyun", "/v1/sms"),
    ):
        args = loadgen.parse_args(
            ["--url", str(client.make_url(path)), "--requests", "8", "--seconds", "60",
             "--concurrency", "3", "--warmup", "2", "--kind", kind]
        )  # fmt: skip
        results[kind] = await loadgen.run(args)
    for kind, result in results.items():
        assert (result["requests"], result["warmup_requests"]) == (8, 2), kind
        assert (result["errors"], result["warmup_errors"]) == (0, 0), (kind, result)
    messages = (await (await client.get("/v1/messages?limit=100")).json())["messages"]
    assert len(messages) == 30

    run = results["email"] | {"concurrency": 3, "log_level": "WARNING", "store": "file"}
    run |= {"rss_start_kib": None, "rss_end_kib": None, "rss_peak_kib": None}
    report = {"meta": runner.meta(["capture"]) | {"loadavg_end": "n/a"}, "capture": [run]}
    text = markdown(report, runner.SCENARIOS)
    assert "| capture, --log-level WARNING, SQLite outbox on disk | 3 | 8 | 0 |" in text
    assert "| service memory (VmRSS, MiB) |" in text


async def test_delay_proxy_relays_bytes_in_order_both_ways() -> None:
    """The delay scenario's proxy passes every byte, in order, each way, and closes after."""
    import asyncio

    from bench.delay_proxy import DelayProxy

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello\r\n")
        while data := await reader.read(1024):
            writer.write(data.upper())
        writer.close()
        await writer.wait_closed()

    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = DelayProxy(("127.0.0.1", target.sockets[0].getsockname()[1]), rtt=0.004)
    front = await asyncio.get_running_loop().create_server(proxy.client, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*front.sockets[0].getsockname()[:2])
    chunks = [f"line {i};".encode() for i in range(50)]
    for chunk in chunks:
        writer.write(chunk)
    expected = b"220 hello\r\n" + b"".join(chunks).upper()
    writer.write_eof()  # the proxy passes it on; the echo server then hangs up, and so does it
    async with asyncio.timeout(10):
        received = await reader.read()
        while proxy.tasks:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    writer.close()
    await writer.wait_closed()

    assert received == expected
    front.close()
    target.close()
    await front.wait_closed()
    await target.wait_closed()


def test_bench_cpu_of_a_process_counts_its_children_that_exited() -> None:
    """A child that worked and exited within the window still counts (PostgreSQL's autovacuum
    workers and closed backends under the postmaster): the parent's CPU with children grows by
    the child's 0.4 s, not by the little the parent itself did while waiting."""
    import os
    import subprocess
    import sys

    from bench.common import proc_cpu_seconds

    burn = "import time\nwhile time.process_time() < 0.4: pass"
    before = proc_cpu_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    after = proc_cpu_seconds(os.getpid())
    assert before is not None and after is not None
    assert sum(after) - sum(before) >= 0.35
