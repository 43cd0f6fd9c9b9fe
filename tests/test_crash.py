"""Crash safety and graceful shutdown of the real ``otp-service serve`` process.

The service runs as ``python -m otp_service serve`` on its own SQLite outbox; email goes over
SMTP to a recording sink that is a process too (:mod:`tests.support.recording_smtp`), slowed down so
deliveries are still in flight when the service is killed (``kill -9``) or told to stop
(SIGTERM). What counts is what the sink received, matched by ``Message-ID`` (``<id@domain>``,
the id the service answered), and what ``GET /v1/messages/{id}`` says after the next start.
"""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from collections.abc import Callable

import aiohttp
import pytest

from .support.processes import (
    Processes,
    get_status,
    message_id,
    post_email,
    wait_for,
    wait_status,
)
from .support.signin import signin

pytestmark = pytest.mark.slow

BURST = 300


async def test_kill_9_mid_burst_loses_no_accepted_message(
    processes: Processes, record_property: Callable[[str, object], None]
) -> None:
    """Every message answered 2xx before a kill -9 reaches the SMTP server after the restart; a
    message sent twice carries the same Message-ID both times; the status says sent."""
    sink = processes.sink(delay=0.03)
    config = processes.config(sink)
    first = processes.service(config)
    accepted: dict[str, str] = {}  # answered id -> recipient
    answered_sent: set[str] = set()  # answered 200 sent
    killed_at: list[int] = []  # how many the sink had received when the service was killed

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=60)) as http:
        await first.ready(http)

        async def one(number: int) -> None:
            to = f"user{number}@example.com"
            try:
                status, body = await post_email(http, first, signin(to, f"{number:06d}"))
            except (aiohttp.ClientError, TimeoutError):
                return  # the service died before answering: not accepted, as far as we know
            if status in (200, 202):
                accepted[body["id"]] = to
            if status == 200:
                answered_sent.add(body["id"])
            if len(accepted) >= BURST // 2 and not killed_at:
                first.process.send_signal(signal.SIGKILL)
                killed_at.append(len(sink.events()))

        await asyncio.gather(*(one(number) for number in range(BURST)))
        assert killed_at, f"only {len(accepted)} of {BURST} were accepted before the kill"
        assert await first.exit_code(10) == -signal.SIGKILL
        # The kill hit while deliveries were in flight: the sink lacked accepted messages.
        assert killed_at[0] < len(accepted)

        second = processes.service(config)
        await second.ready(http)
        wanted = {message_id(answer_id) for answer_id in accepted}
        await wait_for(
            lambda: wanted <= {r["message_id"] for r in sink.events()},
            30,
            "every accepted message at the SMTP sink",
        )

        copies: dict[str, list[str]] = defaultdict(list)  # recipient -> Message-IDs received
        for record in sink.events():
            [rcpt] = record["rcpt_tos"]
            copies[rcpt].append(record["message_id"])
        for answer_id, to in accepted.items():
            assert set(copies[to]) == {message_id(answer_id)}, to
        duplicates = sum(len(ids) - 1 for ids in copies.values())
        # The duplicate window: sent, not yet written down (a 200 may already have gone out).
        after_200 = sum(len(copies[accepted[answer_id]]) - 1 for answer_id in answered_sent)
        record_property("duplicates", duplicates)
        print(
            f"\nkill -9 after {len(accepted)} accepted ({killed_at[0]} already at the sink): "
            f"{len(sink.events())} received for {len(copies)} recipients, "
            f"{duplicates} duplicate(s), {after_200} of them answered 200 before the kill"
        )

        for answer_id in accepted:
            record = await wait_status(http, second, answer_id, "sent", 15)
            assert record["provider"] == "smtp"


async def test_sigterm_lets_in_flight_delivery_finish_and_exits_0(processes: Processes) -> None:
    """On SIGTERM a delivery in flight completes within the grace period, the process exits 0,
    and the next start knows it was sent (it is not sent again)."""
    sink = processes.sink(delay=1.0)
    config = processes.config(sink, shutdown_grace_seconds=8)
    service = processes.service(config)
    async with aiohttp.ClientSession() as http:
        assert (await service.ready(http))["status"] == "ready"
        status, body = await post_email(http, service, signin("ana@example.com"))
        assert status == 202 and body["status"] == "queued"
        await wait_for(lambda: sink.received(body["id"], "data") == 1, 5, "the DATA at the sink")

        service.process.send_signal(signal.SIGTERM)
        assert await service.exit_code(15) == 0, service.log_text()
        assert sink.received(body["id"]) == 1

        again = processes.service(config)
        await again.ready(http)
        record = await get_status(http, again, body["id"])
        assert record["status"] == "sent" and record["provider"] == "smtp"
        assert [a["outcome"] for a in record["attempts"]] == ["sent"]
        assert sink.received(body["id"], "data") == 1


async def test_sigterm_leaves_unfinished_delivery_for_next_start(processes: Processes) -> None:
    """A delivery the grace period cannot wait for is cut off, the process still exits 0, and
    the next start delivers the message once."""
    sink = processes.sink(delay=4.0)
    config = processes.config(sink, shutdown_grace_seconds=0.3)
    service = processes.service(config)
    async with aiohttp.ClientSession() as http:
        await service.ready(http)
        status, body = await post_email(http, service, signin("ana@example.com"))
        assert status == 202
        await wait_for(lambda: sink.received(body["id"], "data") == 1, 5, "the DATA at the sink")

        service.process.send_signal(signal.SIGTERM)
        assert await service.exit_code(15) == 0, service.log_text()
        assert sink.received(body["id"]) == 0  # the sink never answered 250: not delivered

        sink.set_delay(0)
        again = processes.service(config)
        await again.ready(http)
        await wait_for(lambda: sink.received(body["id"]) == 1, 10, "the delivery after restart")
        record = await wait_status(http, again, body["id"], "sent", 10)
        assert [a["outcome"] for a in record["attempts"]] == ["sent"]
        assert sink.received(body["id"]) == 1
        assert sink.received(body["id"], "data") == 2  # the cut-off attempt, then the real one
