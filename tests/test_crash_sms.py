"""SMS across a crash: at most once. The real ``otp-service serve`` process is killed with
``kill -9`` while SMS attempts are at the Vonage fake (the real SDK calls it) and while a burst
of mixed email and SMS is being delivered; what counts is what the SMTP sink and the SMS fake
received, and what the next start says about each accepted message.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support.fakes import Recorded, Reply
from .support.fakes.vonage import FakeVonage, logto_vonage_json
from .support.processes import (
    FROM_DOMAIN,
    HTTP_TIMEOUT,
    TEMPLATES,
    Processes,
    SinkProcess,
    get_status,
    message_id,
    wait_for,
    wait_status,
)

pytestmark = pytest.mark.slow


class SlowVonage(FakeVonage):
    """The Vonage fake, answering every SMS ``delay`` seconds late (it has it at once)."""

    delay = 0.0

    def default_reply(self, request: Recorded) -> Reply:
        return replace(super().default_reply(request), delay=self.delay)


@pytest.fixture
def slow_vonage() -> Iterator[SlowVonage]:
    fake = SlowVonage().start()
    try:
        yield fake
    finally:
        fake.stop()


def mixed_config(folder: Path, sink: SinkProcess, vonage: FakeVonage) -> Path:
    """Email over SMTP to the sink, SMS through Vonage to the fake, outbox in ``folder``."""
    config = {
        "email": {"provider": "smtp", "smtp": {
            "host": "127.0.0.1", "port": sink.port, "fromEmail": f"Acme <no-reply@{FROM_DOMAIN}>",
            "templates": TEMPLATES, "name": "otp.test.example", "connectionTimeout": 2000,
            "greetingTimeout": 2000, "socketTimeout": 5000}, "pool": {"size": 4}},
        "sms": {"provider": "vonage", "vonage": logto_vonage_json(),
                "endpoints": {"vonage": vonage.endpoint(timeout_seconds=10)}},
        "templates": {"bundled": False},
        "store": {"path": str(folder / "outbox.sqlite3")},
        "limits": {"enabled": False},
        "delivery": {"wait_seconds": 0.2, "retry_delay_seconds": 0.05, "backoff_max_seconds": 0.5,
                     "poll_seconds": 0.05, "timeout_seconds": 10},
    }  # fmt: skip
    path = folder / "mixed.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def sms_body(number: int) -> dict[str, Any]:
    return {"to": f"+336{number:08d}", "type": "SignIn", "payload": {"code": f"{number:06d}"}}


def texts_by_ref(vonage: FakeVonage) -> Counter[str]:
    """How many SMS requests reached Vonage per message id (the SDK's client-ref)."""
    return Counter(form.get("client-ref", "") for form in vonage.sms)


async def test_sms_cut_off_by_kill_9_mid_attempt_is_unknown_and_never_resent(
    processes: Processes, slow_vonage: SlowVonage
) -> None:
    """An SMS whose attempt was at Vonage when the service was killed is, after the restart,
    failed with provider_outcome_unknown and an unknown attempt, and is never sent again."""
    slow_vonage.delay = 30
    sink = processes.sink()
    config = mixed_config(processes.folder, sink, slow_vonage)
    first = processes.service(config)
    async with aiohttp.ClientSession() as http:
        await first.ready(http)
        async with http.post(f"{first.url}/v1/sms", json=sms_body(1), timeout=HTTP_TIMEOUT) as r:
            assert r.status == 202, await r.text()
            answer = await r.json()
        await wait_for(lambda: len(slow_vonage.sms) == 1, 10, "the SMS at Vonage")
        first.process.send_signal(signal.SIGKILL)
        assert await first.exit_code(10) == -signal.SIGKILL

        slow_vonage.delay = 0
        second = processes.service(config)
        await second.ready(http)
        record = await wait_status(http, second, answer["id"], "failed", 10)
        assert "provider_outcome_unknown" in record["error"]
        assert record["attempts"][-1]["outcome"] == "unknown"
        assert record["attempts"][-1]["provider"] == "vonage"
        await asyncio.sleep(1.0)  # many worker rounds: none may send it again
        assert texts_by_ref(slow_vonage)[answer["id"]] == 1


BURST = 500


async def test_kill_9_mid_mixed_burst_loses_no_email_and_texts_no_sms_twice(
    processes: Processes, slow_vonage: SlowVonage, record_property: Callable[[str, object], None]
) -> None:
    """500 requests, email and SMS alternating, with a slow SMTP sink and a slow Vonage; a
    kill -9 halfway. After the restart every accepted email reached the sink (a copy may be
    repeated, same Message-ID), and no accepted SMS reached Vonage twice: each was texted once,
    or is failed as provider_outcome_unknown."""
    slow_vonage.delay = 0.05
    sink = processes.sink(delay=0.03)
    config = mixed_config(processes.folder, sink, slow_vonage)
    first = processes.service(config)
    accepted: dict[str, str] = {}  # answered id -> channel
    killed: list[bool] = []
    kill_at: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=60)) as http:
        await first.ready(http)

        async def one(number: int) -> None:
            channel = "sms" if number % 2 else "email"
            body = sms_body(number) if channel == "sms" else {
                "to": f"user{number}@example.com", "type": "SignIn",
                "payload": {"code": f"{number:06d}"}}  # fmt: skip
            try:
                async with http.post(
                    f"{first.url}/v1/{channel}", json=body, timeout=HTTP_TIMEOUT
                ) as response:
                    if response.status in (200, 202):
                        accepted[(await response.json())["id"]] = channel
            except (aiohttp.ClientError, TimeoutError):
                return
            if len(accepted) >= BURST // 2 and not killed:
                killed.append(True)
                first.process.send_signal(signal.SIGKILL)
                kill_at.append(time.time())

        await asyncio.gather(*(one(n) for n in range(BURST)))
        assert killed and await first.exit_code(10) == -signal.SIGKILL

        slow_vonage.delay = 0
        sink.set_delay(0)
        second = processes.service(config)
        await second.ready(http)
        emails = {i for i, c in accepted.items() if c == "email"}
        sms = {i for i, c in accepted.items() if c == "sms"}
        await wait_for(
            lambda: {message_id(i) for i in emails} <= {r["message_id"] for r in sink.events()},
            60, "every accepted email at the sink",
        )  # fmt: skip
        final: dict[str, str] = {}
        for answer_id in sms:
            for _ in range(200):
                record = await get_status(http, second, answer_id)
                if record["status"] != "queued":
                    break
                await asyncio.sleep(0.05)
            final[answer_id] = record["status"] if record["status"] != "failed" else record["error"]

        received = Counter(r["message_id"] for r in sink.events())
        texts = texts_by_ref(slow_vonage)
        email_duplicates = sum(received[message_id(i)] - 1 for i in emails)
        sms_twice = [i for i in sms if texts[i] > 1]
        sms_unknown = [i for i in sms if "provider_outcome_unknown" in final[i]]
        sms_lost = [i for i in sms if texts[i] == 0 and i not in sms_unknown]
        figures: dict[str, Any] = {
            "accepted_email": len(emails), "email_lost": 0, "email_duplicated": email_duplicates,
            "accepted_sms": len(sms), "sms_lost": len(sms_lost), "sms_texted_twice": len(sms_twice),
            "sms_unknown": len(sms_unknown),
            "sms_unknown_not_at_vonage": sum(texts[i] == 0 for i in sms_unknown),
        }  # fmt: skip
        first_at = {}
        for r in sink.events():
            first_at.setdefault(r["message_id"], r["at"])
        figures["dup_ms_before_kill"] = [
            round((kill_at[0] - first_at[message_id(i)]) * 1000, 1)
            for i in emails if received[message_id(i)] > 1
        ]  # fmt: skip
        record_property("kill9_mixed", json.dumps(figures))
        print(f"\nkill -9 mixed burst: {json.dumps(figures)}")
        assert sms_twice == [] and sms_lost == []
        for answer_id in sms:
            assert final[answer_id] == "sent" or answer_id in sms_unknown, final[answer_id]
        for answer_id in emails:
            record = await wait_status(http, second, answer_id, "sent", 15)
            assert record["provider"] == "smtp"
