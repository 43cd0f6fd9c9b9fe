"""SIGTERM under load on the real ``otp-service serve`` process: requests already sent are
answered, new ones get the documented 503 ``shutting_down`` until the listener closes, and no
connection is cut mid-request."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from .support.processes import HTTP_TIMEOUT, Processes

pytestmark = pytest.mark.slow


def capture_config(folder: Path) -> Path:
    config = {
        "server": {"drain_seconds": 1.0},
        "store": {"path": str(folder / "outbox.sqlite3")},
        "limits": {"enabled": False},
    }
    path = folder / "capture.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


async def test_sigterm_answers_every_request_sent_and_503s_new_ones(
    processes: Processes,
) -> None:
    """20 keep-alive clients post without pause (pausing only as a 503's Retry-After asks)
    while SIGTERM arrives: every request gets an answer (200 captured, or 503 shutting_down)
    until connections are refused; none is cut off mid-request, and the process exits 0."""
    config = capture_config(processes.folder)
    service = processes.service(config)
    outcomes: Counter[str] = Counter()

    async def client(number: int) -> None:
        async with aiohttp.ClientSession() as http:  # keep-alive, as Logto's client
            for n in range(100_000):
                body = {"to": f"u{number}-{n}@example.com", "type": "SignIn",
                        "payload": {"code": f"{n % 1000000:06d}"}}  # fmt: skip
                try:
                    async with http.post(
                        f"{service.url}/v1/email", json=body, timeout=HTTP_TIMEOUT
                    ) as response:
                        answer = await response.json()
                        outcomes[str(response.status)] += 1
                        retry_after = 0.0
                        if response.status == 503:
                            assert answer["error"]["code"] == "shutting_down"
                            retry_after = float(response.headers["Retry-After"])
                            assert retry_after >= 2  # after the listener closed (drain 1 s)
                    await asyncio.sleep(retry_after)  # as a well-behaved client does
                except aiohttp.ClientConnectorError:
                    outcomes["refused"] += 1  # the listener is closed: a clear refusal
                    return
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcomes[f"cut: {type(exc).__name__}: {exc}"] += 1
                    return

    async with aiohttp.ClientSession() as http:
        await service.ready(http)
    clients = [asyncio.create_task(client(n)) for n in range(20)]
    await asyncio.sleep(1.0)
    service.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*clients), 30)
    assert await service.exit_code(20) == 0, service.log_text()
    cut = {k: v for k, v in outcomes.items() if k.startswith("cut")}
    assert cut == {}, outcomes
    assert outcomes["200"] > 0 and outcomes["503"] > 0 and outcomes["refused"] == 20, outcomes
