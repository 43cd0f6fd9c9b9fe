"""Several real ``otp-service serve`` processes on one PostgreSQL store.

Each replica is its own process on its own port, sharing a fresh schema of the test database
(``OTP_TEST_DATABASE_URL``). Email goes over SMTP to the recording sink process
(:mod:`tests.support.recording_smtp`), SMS to the Aliyun fake over HTTP; what counts is what they
received. A small "load balancer" here picks a live replica per request, as one in front of
the service would.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support.fakes import Recorded, Reply, started
from .support.fakes.aliyun import FakeAliyun
from .support.processes import (
    HTTP_TIMEOUT,
    Processes,
    ServiceProcess,
    message_id,
    wait_for,
)
from .support.replicas import email, replica_config, sms
from .support.signin import signin

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


class SlowAliyun(FakeAliyun):
    """Answers OK after a short delay, so SMS are in flight when a replica is killed."""

    def default_reply(self, request: Recorded) -> Reply:
        reply = super().default_reply(request)
        return Reply(json=reply.json, delay=0.05)


@pytest.fixture
def aliyun() -> Iterator[FakeAliyun]:
    with started(SlowAliyun) as server:
        yield server


class Balancer:
    """Sends each request to the next replica in rotation that is in service."""

    def __init__(self, http: aiohttp.ClientSession, replicas: list[ServiceProcess]) -> None:
        self.http = http
        self.replicas = list(replicas)
        self._turn = itertools.count()

    def pick(self) -> ServiceProcess:
        live = [r for r in self.replicas if r.process.poll() is None]
        return live[next(self._turn) % len(live)]

    async def post(
        self, path: str, body: dict[str, Any], replica: ServiceProcess | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:  # fmt: skip
        target = replica or self.pick()
        async with self.http.post(
            f"{target.url}{path}", json=body, headers=headers, timeout=HTTP_TIMEOUT
        ) as response:
            return response.status, await response.json()


async def start_replicas(
    processes: Processes, config: Path, http: aiohttp.ClientSession, count: int
) -> list[ServiceProcess]:
    replicas = [processes.service(config) for _ in range(count)]
    for replica in replicas:
        await replica.ready(http, seconds=90)
    return replicas


async def status_of(http: aiohttp.ClientSession, replica: ServiceProcess, answer_id: str) -> Any:
    async with http.get(f"{replica.url}/v1/messages/{answer_id}", timeout=HTTP_TIMEOUT) as r:
        return await r.json()


BURST = 600


async def test_replicas_kill_9_mid_burst_deliver_every_accepted_message(
    processes: Processes, aliyun: FakeAliyun, pg_schema: tuple[str, str],
    record_property: Callable[[str, object], None],
) -> None:  # fmt: skip
    """Three replicas share a burst of 600 emails and SMS; one is killed with SIGKILL midway.
    The live replicas take over its leases: every accepted email reaches the SMTP sink (a
    repeat carries the same Message-ID), every accepted SMS reaches the provider, none twice."""
    sink = processes.sink(delay=0.02)
    config = replica_config(processes.folder, pg_schema, sink, aliyun)
    accepted: dict[str, tuple[str, str]] = {}  # answered id -> (channel, recipient)
    answers: Counter[str] = Counter()  # channel and status (or "no answer")
    killed: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=60)) as http:
        replicas = await start_replicas(processes, config, http, 3)
        balancer = Balancer(http, replicas)
        victim = replicas[0]

        async def one(number: int) -> None:
            channel = "sms" if number % 2 else "email"
            body = sms(number) if channel == "sms" else email(number)
            try:
                status, answer = await balancer.post(f"/v1/{channel}", body)
            except (aiohttp.ClientError, TimeoutError):
                answers[f"{channel} no answer"] += 1
                return  # the replica died before answering: not accepted, as far as we know
            answers[f"{channel} {status} {answer.get('error', {}).get('code', '')}"] += 1
            if status in (200, 202):
                accepted[answer["id"]] = (channel, body["to"])
            if len(accepted) >= BURST // 3 and not killed:
                killed.append(time.time())
                victim.process.send_signal(signal.SIGKILL)

        semaphore = asyncio.Semaphore(60)

        async def limited(number: int) -> None:
            async with semaphore:
                await one(number)

        await asyncio.gather(*(limited(number) for number in range(BURST)))
        assert killed, "the victim was never killed"
        assert await victim.exit_code(10) == -signal.SIGKILL
        emails = {message_id(i) for i, (channel, _) in accepted.items() if channel == "email"}

        def sms_received() -> Counter[str]:
            return Counter(q["PhoneNumbers"][-11:] for q in aliyun.sms)  # 138xxxxxxxx

        # An SMS whose attempt was under way on the killed replica may have been texted: it is
        # finished as provider_outcome_unknown and never resent (at most once, not twice).
        unknown: set[str] = set()
        deadline = time.monotonic() + 90
        while True:
            missing_email = emails - {r["message_id"] for r in sink.events()}
            texts = sms_received()
            missing_sms = [i for i, (ch, to) in accepted.items()
                           if ch == "sms" and to[-11:] not in texts and i not in unknown]  # fmt: skip
            for answer_id in missing_sms:
                record = await status_of(http, replicas[1], answer_id)
                if record["status"] == "failed" and "outcome_unknown" in (record["error"] or ""):
                    unknown.add(answer_id)
            if not missing_email and not set(missing_sms) - unknown:
                break
            if time.monotonic() > deadline:
                examples = [await status_of(http, replicas[1], i)
                            for i in [*missing_sms, *missing_email][:3]]  # fmt: skip
                raise AssertionError(
                    f"{len(missing_email)} emails and {len(missing_sms)} SMS never arrived; "
                    f"e.g. {examples}"
                )
            await asyncio.sleep(0.5)
        texts = sms_received()
        twice = {n: c for n, c in texts.items() if c > 1}
        assert not twice, f"SMS sent twice: {twice}"
        copies = Counter(r["message_id"] for r in sink.events())
        duplicates = sum(c - 1 for c in copies.values())
        assert len(accepted) > BURST // 2, answers
        record_property("email_duplicates", duplicates)
        print(
            f"\n3 replicas, kill -9 of one after {BURST // 3} accepted: {len(accepted)} of "
            f"{BURST} accepted, {len(emails)} emails and {len(texts)} SMS delivered; "
            f"{duplicates} email duplicate(s) (same Message-ID), 0 SMS twice, {len(unknown)} "
            "SMS cut mid-attempt left as provider_outcome_unknown"
        )


async def test_replicas_share_the_recipient_limit_and_idempotency(
    processes: Processes, aliyun: FakeAliyun, pg_schema: tuple[str, str]
) -> None:
    """With a limit of 10 per recipient, requests alternating between two replicas pass ten
    times and the 11th is refused wherever it lands; an Idempotency-Key reused on the other
    replica gets the first answer, and the message is sent once."""
    sink = processes.sink()
    limits = {"per_recipient": {"count": 10, "window_seconds": 600}, "per_ip": None,
              "per_sms_prefix": None}  # fmt: skip
    config = replica_config(processes.folder, pg_schema, sink, aliyun, limits=limits)
    async with aiohttp.ClientSession() as http:
        first, second = await start_replicas(processes, config, http, 2)
        balancer = Balancer(http, [first, second])
        statuses = []
        for number in range(12):
            replica = (first, second)[number % 2]
            body = email(100000 + number) | {"to": "ana@example.com"}
            status, answer = await balancer.post("/v1/email", body, replica)
            statuses.append((status, answer.get("error", {}).get("code")))
        assert all(s in (200, 202) for s, _ in statuses[:10]), statuses
        assert statuses[10] == (429, "rate_limited") and statuses[11] == (429, "rate_limited")

        body = email(7) | {"to": "bob@example.com"}
        headers = {"Idempotency-Key": "signin-bob-1"}
        status_a, answer_a = await balancer.post("/v1/email", body, first, headers)
        status_b, answer_b = await balancer.post("/v1/email", body, second, headers)
        assert status_a in (200, 202) and status_b in (200, 202)
        assert answer_b["id"] == answer_a["id"] and answer_b.get("duplicate") is True
        await wait_for(lambda: sink.received(answer_a["id"]) >= 1, 20, "bob's email")
        await asyncio.sleep(0.5)
        assert sink.received(answer_a["id"]) == 1


async def test_replicas_rolling_restart_under_steady_load_fails_no_request(
    processes: Processes, aliyun: FakeAliyun, pg_schema: tuple[str, str]
) -> None:
    """Replicas replaced one at a time (taken out of the balancer, SIGTERM, a new one started
    and put in) while requests keep coming: every request is answered 2xx and delivered."""
    sink = processes.sink()
    config = replica_config(processes.folder, pg_schema, sink, aliyun)
    failures: list[str] = []
    accepted: list[str] = []
    async with aiohttp.ClientSession() as http:
        replicas = await start_replicas(processes, config, http, 2)
        balancer = Balancer(http, replicas)
        stop = asyncio.Event()

        async def load(worker: int) -> None:
            number = worker * 100000
            while not stop.is_set():
                number += 1
                try:
                    status, answer = await balancer.post("/v1/email", email(number))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures.append(f"no answer: {exc!r}")
                    continue
                if status in (200, 202):
                    accepted.append(answer["id"])
                else:
                    failures.append(f"{status} {answer}")
                await asyncio.sleep(0.02)

        loaders = [asyncio.create_task(load(worker)) for worker in range(1, 5)]
        for old in list(balancer.replicas):
            new = processes.service(config)
            await new.ready(http, seconds=90)
            balancer.replicas.append(new)
            balancer.replicas.remove(old)  # as a load balancer does once readiness fails
            await asyncio.sleep(0.3)  # requests already sent to it are still answered
            old.process.send_signal(signal.SIGTERM)
            assert await old.exit_code(30) == 0, old.log_text()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*loaders)
        assert not failures, failures[:5]
        assert len(accepted) > 20
        wanted = {message_id(answer_id) for answer_id in accepted}
        await wait_for(
            lambda: wanted <= {r["message_id"] for r in sink.events()}, 60, "every email"
        )
        print(f"\nrolling restart of 2 replicas: {len(accepted)} requests, 0 failed")


async def test_replicas_idempotency_race_answers_every_repeat_with_the_one_stored_id(
    processes: Processes, aliyun: FakeAliyun, pg_schema: tuple[str, str]
) -> None:
    """Ten Idempotency-Keys, each sent six times at once alternating two replicas, with a
    recipient limit of 3: every answer for a key is a 2xx carrying the same id, that id is
    stored, and one email per key is delivered (a repeat never counts against the limit)."""
    sink = processes.sink()
    limits = {"per_recipient": {"count": 3, "window_seconds": 600}, "per_ip": None,
              "per_sms_prefix": None}  # fmt: skip
    config = replica_config(processes.folder, pg_schema, sink, aliyun, limits=limits)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:
        replicas = await start_replicas(processes, config, http, 2)
        balancer = Balancer(http, replicas)

        async def one(key: int, repeat: int) -> tuple[int, int, dict[str, Any]]:
            body = email(200000 + key)
            headers = {"Idempotency-Key": f"race-{key}"}
            status, answer = await balancer.post("/v1/email", body, replicas[repeat % 2], headers)
            return key, status, answer

        answers = await asyncio.gather(
            *(one(key, repeat) for repeat in range(6) for key in range(10))
        )
        by_key: dict[int, set[str]] = {}
        for key, status, answer in answers:
            by_key.setdefault(key, set()).add(answer.get("id") or f"{status} {answer}")
        assert all(len(ids) == 1 for ids in by_key.values()), by_key
        assert all(status in (200, 202) for _, status, _ in answers), by_key
        ids = [next(iter(ids)) for ids in by_key.values()]
        for answer_id in ids:
            for replica in replicas:
                record = await status_of(http, replica, answer_id)
                assert record.get("id") == answer_id, record
        # The limit full (the key's message and two more): new messages are refused, and the
        # key's repeats still answer with its message, on either replica.
        statuses = [
            (await balancer.post("/v1/email", signin("user200000@example.com", f"99999{n}")))[0]
            for n in range(3)
        ]
        assert statuses[0] in (200, 202) and statuses[1] in (200, 202), statuses
        assert statuses[2] == 429, statuses
        for replica in replicas:
            status, answer = await balancer.post(
                "/v1/email", email(200000), replica, {"Idempotency-Key": "race-0"}
            )
            assert status in (200, 202) and answer["id"] == next(iter(by_key[0])), answer
        wanted = {message_id(answer_id) for answer_id in ids}
        await wait_for(lambda: wanted <= {r["message_id"] for r in sink.events()}, 30, "emails")
        await asyncio.sleep(0.5)
        copies = Counter(r["message_id"] for r in sink.events() if r["message_id"] in wanted)
        assert sorted(copies.values()) == [1] * 10, copies
