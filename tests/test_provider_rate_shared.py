"""``limits.provider_rate`` and ``sms.receipt_query_rate`` are the operator's numbers: two
replicas of two workers each, sharing one PostgreSQL store, deliver at most that rate to each
provider in total, and ask Aliyun about receipts at most that rate in total.

Measured where it matters, at the providers: the arrival times the SMTP sink and the fakes
record. The bound checked is the one GCRA promises (at most ``1 + rate * t`` sends start in any
``t`` seconds), with room for the time between a send's turn and its arrival at the provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from .support.fakes import started
from .support.fakes.aliyun import FakeAliyun, logto_aliyun_json
from .support.fakes.vonage import FakeVonage, logto_vonage_json
from .support.pace import most_in_window, paced_bound
from .support.processes import HTTP_TIMEOUT, Processes, message_id, wait_for
from .support.replicas import Supervised, email, replica_config, sms

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
RATE = 10.0  # per second, per provider
EACH = 40  # messages per channel
WINDOW = 2.0  # seconds
SLACK = 0.3  # seconds a send may take from its turn to its arrival at the provider
QUERY_RATE = 4.0  # receipt queries per second, for the whole service
WAITING = 20  # SMS waiting for a receipt, each process's round asks about them all


@pytest.fixture
def vonage() -> Iterator[FakeVonage]:
    with started(FakeVonage) as server:
        yield server


@pytest.fixture
def aliyun() -> Iterator[FakeAliyun]:
    with started(FakeAliyun) as server:
        yield server


@pytest.fixture
def supervised() -> Iterator[list[Supervised]]:
    running: list[Supervised] = []
    yield running
    for one in running:
        one.kill()


async def test_provider_rate_holds_across_two_replicas_of_two_workers(
    processes: Processes, vonage: FakeVonage, aliyun: FakeAliyun, pg_schema: tuple[str, str],
    supervised: list[Supervised],
) -> None:  # fmt: skip
    """provider_rate 10/s for smtp and vonage, 2 replicas x 2 workers, 40 emails and 40 SMS sent
    at once: every one is delivered (queued ones wait their turn), and in no 2 s window do the
    SMTP sink or the Vonage fake receive more than 10 * 2 + 1 (plus arrival jitter)."""
    sink = processes.sink()
    sms_section = {
        "provider": "vonage", "vonage": logto_vonage_json(),
        "endpoints": {"vonage": vonage.endpoint(timeout_seconds=5)},
    }  # fmt: skip
    config = replica_config(
        processes.folder, pg_schema, sink, aliyun,
        sms=sms_section, limits={"enabled": False, "provider_rate": {"smtp": RATE, "vonage": RATE}},
    )  # fmt: skip
    replicas = [
        Supervised(config, 2, Path(processes.folder / f"replica-{n}.log")) for n in range(2)
    ]
    supervised.extend(replicas)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=80)) as http:
        for replica in replicas:
            await replica.ready(http)
            await wait_for(lambda r=replica: len(r.workers()) == 2, 30, "two workers")  # type: ignore[misc]

        async def send(number: int) -> str:
            channel = "sms" if number % 2 else "email"
            body = sms(number) if channel == "sms" else email(number)
            url = f"{replicas[number // 2 % 2].url}/v1/{channel}"
            async with http.post(url, json=body, timeout=HTTP_TIMEOUT) as response:
                assert response.status in (200, 202), await response.text()
                answer: str = (await response.json())["id"]
                return answer

        ids = await asyncio.gather(*(send(number) for number in range(2 * EACH)))
        emails = {message_id(i) for i in ids[0::2]}
        await wait_for(lambda: len(vonage.sms) >= EACH, 60, "every SMS at Vonage")
        await wait_for(lambda: emails <= {r["message_id"] for r in sink.events("data")}, 60, "mail")

    sms_times = [r.at for r in vonage.requests if r.path == "/sms/json"]
    mail_times = [r["at"] for r in sink.events("data") if r["message_id"] in emails]
    assert len(sms_times) == EACH and len(mail_times) == EACH  # each once, none failed
    bound = paced_bound(RATE, WINDOW, SLACK)
    for what, times in (("Vonage", sms_times), ("SMTP sink", mail_times)):
        most = most_in_window(times, WINDOW)
        span = max(times) - min(times)
        print(f"\n{what}: {len(times)} in {span:.2f} s, at most {most} in {WINDOW:g} s")
        assert most <= bound, (what, most, sorted(times))


async def test_receipt_query_rate_holds_across_two_replicas_of_two_workers(
    processes: Processes, aliyun: FakeAliyun, pg_schema: tuple[str, str],
    supervised: list[Supervised],
) -> None:  # fmt: skip
    """sms.receipt_query_rate 4/s, 2 replicas x 2 workers, each worker polling Aliyun every
    second about the same 20 waiting SMS: in no 2 s window does the Aliyun fake receive more
    than 4 * 2 + 1 QuerySendDetails calls (plus arrival jitter), not 4 per process."""
    sms_section = {
        "provider": "aliyun", "aliyun": logto_aliyun_json(),
        "endpoints": {"aliyun": aliyun.endpoint(timeout_seconds=5)},
        "receipt_poll_seconds": 1, "receipt_query_rate": QUERY_RATE,
    }  # fmt: skip
    config = replica_config(processes.folder, pg_schema, processes.sink(), aliyun, sms=sms_section)
    replicas = [
        Supervised(config, 2, Path(processes.folder / f"replica-{n}.log")) for n in range(2)
    ]
    supervised.extend(replicas)
    async with aiohttp.ClientSession() as http:
        for replica in replicas:
            await replica.ready(http)
            await wait_for(lambda r=replica: len(r.workers()) == 2, 30, "two workers")  # type: ignore[misc]
        for number in range(WAITING):
            url = f"{replicas[number % 2].url}/v1/sms"
            async with http.post(url, json=sms(number), timeout=HTTP_TIMEOUT) as response:
                assert response.status in (200, 202), await response.text()
        await wait_for(lambda: len(aliyun.sms) >= WAITING, 60, "every SMS at Aliyun")
        # At 4/s for the four processes together, 16 calls take about 4 s.
        await wait_for(lambda: len(aliyun.query_times) >= 16, 60, "16 receipt queries")

    times = aliyun.query_times
    most = most_in_window(times, WINDOW)
    print(f"\nQuerySendDetails: {len(times)} in {max(times) - min(times):.2f} s, "
          f"at most {most} in {WINDOW:g} s")  # fmt: skip
    assert most <= paced_bound(QUERY_RATE, WINDOW, SLACK), sorted(times)
