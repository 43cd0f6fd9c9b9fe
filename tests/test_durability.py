"""Durable delivery through the HTTP API: outages, expiry, duplicates, abuse limits, failover
under throttling, the status endpoint and retention.

The service runs in process (the ``service`` fixture) on its own SQLite outbox, against a real
SMTP server (:mod:`tests.support.smtp_server`, started late to model an outage), the capture inbox, or
the HTTP fakes of Aliyun and Vonage. Assertions are on what a caller, a mail server, a phone or
an operator would see: HTTP answers, messages received, ``GET /v1/messages/{id}``, and what the
outbox file still holds.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from otp_service.http.app import SERVICES

from .support.fakes import aliyun as aliyun_fakes
from .support.fakes import vonage as vonage_fakes
from .support.fakes.aliyun import (
    FakeAliyun,
    aliyun_business,
    aliyun_slow,
    aliyun_throttled,
    logto_aliyun_json,
)
from .support.fakes.vonage import FakeVonage, logto_vonage_json, vonage_http
from .support.service import ClientFactory
from .support.signin import signin
from .support.smtp_server import RecordingSMTPServer

fake_vonage = vonage_fakes.fake_vonage
fake_aliyun = aliyun_fakes.fake_aliyun

CODE = "482913"
FROM_DOMAIN = "acme.example"
CHINA = "+8613800138000"
BODY_FIELDS = {"code", "text", "html", "subject", "link"}
FAST = {
    "wait_seconds": 0.3,
    "retry_delay_seconds": 0.05,
    "backoff_max_seconds": 0.3,
    "poll_seconds": 0.05,
    "timeout_seconds": 5,
    "shutdown_grace_seconds": 1,
}
TEMPLATES = [
    {"usageType": usage, "contentType": "text/plain", "subject": f"Acme {usage}",
     "content": "Your code is {{code}}."}
    for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
]  # fmt: skip


# helpers


def smtp_config(port: int, store: Path | None = None, **delivery: Any) -> dict[str, Any]:
    """Email over SMTP to ``127.0.0.1:port`` with quick retries and no abuse limits."""
    config: dict[str, Any] = {
        "email": {
            "provider": "smtp",
            "smtp": {
                "host": "127.0.0.1", "port": port, "fromEmail": f"Acme <no-reply@{FROM_DOMAIN}>",
                "templates": TEMPLATES, "name": "otp.test.example", "connectionTimeout": 1000,
                "greetingTimeout": 1000, "socketTimeout": 2000,
            },
        },
        "templates": {"bundled": False},
        "limits": {"enabled": False},
        "delivery": FAST | delivery,
    }  # fmt: skip
    if store is not None:
        config["store"] = {"path": str(store)}
    return config


def capture_config(**limits: Any) -> dict[str, Any]:
    """The capture inbox for both channels with abuse limits (``limits`` as given) and dedupe
    on, as with real providers (capture mode alone turns both off)."""
    return {"delivery": FAST | {"dedupe": True}, "limits": {"enabled": True} | limits}


async def post(
    client: Any, path: str, body: dict[str, Any], key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST as Logto does, optionally with an Idempotency-Key; (status, JSON, headers)."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    response = await client.post(path, json=body, headers=headers)
    return response.status, await response.json(), dict(response.headers)


async def status_of(client: Any, message_id: str) -> tuple[int, dict[str, Any], str]:
    response = await client.get(f"/v1/messages/{message_id}")
    text = await response.text()
    return response.status, await response.json(), text


async def wait_status(
    client: Any, message_id: str, want: str, seconds: float = 5
) -> dict[str, Any]:
    """Poll ``GET /v1/messages/{id}`` until the status is ``want``; the final record."""
    deadline = time.monotonic() + seconds
    while True:
        status, record, _ = await status_of(client, message_id)
        assert status == 200, record
        if record["status"] == want:
            return record
        assert time.monotonic() < deadline, f"still {record['status']} after {seconds} s"
        await asyncio.sleep(0.05)


async def wait_until(condition: Callable[[], bool], seconds: float = 5) -> None:
    """Wait for a state another thread (a server) changes."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - no event to await across threads
            await asyncio.sleep(0.02)


async def inbox(client: Any, to: str | None = None) -> list[dict[str, Any]]:
    """The captured messages, newest first (optionally for one recipient)."""
    params = {"to": to} if to is not None else {}
    messages: list[dict[str, Any]] = (
        await (await client.get("/v1/messages", params=params)).json()
    )["messages"]
    return messages


def store_dump(path: Path) -> str:
    """Everything the outbox file holds, as SQL text (what an operator with a backup sees).

    Read from a copy of the files: the running service holds the file exclusively."""
    copy = path.with_name(f"copy-{uuid.uuid4().hex}")
    copy.mkdir()
    for name in (path.name, f"{path.name}-wal"):
        if (path.parent / name).exists():
            shutil.copyfile(path.parent / name, copy / name)
    connection = sqlite3.connect(copy / path.name)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def message_ids(server: RecordingSMTPServer) -> list[str]:
    return [str(m.message["Message-ID"]) for m in server.messages]


# 1. SMTP outage and expiry


async def test_smtp_outage_queues_messages_and_delivers_them_when_server_returns(
    smtp_server: RecordingSMTPServer, service: ClientFactory, tmp_path: Path
) -> None:
    """Messages accepted while the SMTP server is down answer 202 queued; each arrives once,
    under the Message-ID of its answer, after the server comes back."""
    store = tmp_path / "outbox.sqlite3"
    client = await service(smtp_config(smtp_server.port, store))
    answered = []
    for number in range(3):
        status, body, _ = await post(client, "/v1/email", signin(f"u{number}@example.com"))
        assert status == 202 and body["status"] == "queued"
        answered.append(body["id"])
    await asyncio.sleep(0.5)  # the outage lasts: the worker keeps trying meanwhile
    status, record, _ = await status_of(client, answered[0])
    assert record["status"] == "queued" and len(record["attempts"]) >= 2
    assert {a["outcome"] for a in record["attempts"]} == {"transient"}
    assert "connection" in record["error"]

    smtp_server.start()
    await wait_until(lambda: len(smtp_server.messages) >= 3)
    for message_id in answered:
        record = await wait_status(client, message_id, "sent")
        assert record["attempts"][-1]["outcome"] == "sent"
    assert sorted(message_ids(smtp_server)) == sorted(f"<{i}@{FROM_DOMAIN}>" for i in answered)
    assert CODE not in store_dump(store)  # sent: the bodies holding the code are gone


async def test_short_ttl_message_expires_during_outage_and_is_never_sent(
    smtp_server: RecordingSMTPServer, service: ClientFactory, tmp_path: Path
) -> None:
    """A message whose ttl runs out during the outage becomes expired, is never sent when the
    server returns, and neither the status nor the outbox file keeps its code."""
    store = tmp_path / "outbox.sqlite3"
    client = await service(smtp_config(smtp_server.port, store))
    status, late, _ = await post(client, "/v1/email", signin("late@example.com", "713305", ttl=1))
    assert status == 202 and late["status"] == "queued"

    record = await wait_status(client, late["id"], "expired")
    assert not BODY_FIELDS & set(record) and record["finished_at"] is not None
    # Why, in the one wording every expiry uses: the last failure it met.
    assert record["error"].startswith("expired before delivery: connection failed")
    assert "713305" not in store_dump(store)

    smtp_server.start()
    status, fresh, _ = await post(client, "/v1/email", signin("fresh@example.com"))
    assert status == 200 and fresh["status"] == "sent"
    await asyncio.sleep(0.3)  # several worker rounds: none may pick the expired message up
    assert [m.rcpt_tos for m in smtp_server.messages] == [["fresh@example.com"]]
    assert (await status_of(client, late["id"]))[1]["status"] == "expired"


async def test_queued_message_survives_restart_and_is_delivered_by_next_start(
    smtp_server: RecordingSMTPServer, service: ClientFactory, tmp_path: Path
) -> None:
    """A message still queued when the service stops is delivered, once, by the next start on
    the same outbox file."""
    config = smtp_config(smtp_server.port, tmp_path / "outbox.sqlite3")
    first = await service(config)
    status, body, _ = await post(first, "/v1/email", signin("ana@example.com"))
    assert status == 202
    await first.close()

    smtp_server.start()
    second = await service(config)
    await wait_until(lambda: len(smtp_server.messages) == 1)
    record = await wait_status(second, body["id"], "sent")
    assert [a["outcome"] for a in record["attempts"]][-1] == "sent"
    assert message_ids(smtp_server) == [f"<{body['id']}@{FROM_DOMAIN}>"]


async def test_request_ttl_can_only_shorten_the_configured_lifetime(
    service: ClientFactory,
) -> None:
    """A body ttl below delivery.ttl_seconds shortens the message's life; a longer one does not
    extend it."""
    client = await service(capture_config() | {"delivery": FAST | {"ttl_seconds": 120}})
    lifetimes = []
    for number, ttl in enumerate((30, 3600)):
        _, body, _ = await post(client, "/v1/email", signin(f"u{number}@example.com", ttl=ttl))
        _, record, _ = await status_of(client, body["id"])
        created = datetime.fromisoformat(record["created_at"])
        lifetimes.append((datetime.fromisoformat(record["expires_at"]) - created).total_seconds())
    assert lifetimes == [pytest.approx(30, abs=0.5), pytest.approx(120, abs=0.5)]


# 2. Idempotency and automatic de-duplication


async def test_repeated_idempotency_key_returns_first_message_sent_once(
    service: ClientFactory,
) -> None:
    """A request repeated with the same Idempotency-Key gets the first id, duplicate: true, and
    the person receives one message."""
    client = await service(capture_config())
    status, first, _ = await post(client, "/v1/email", signin("ana@example.com"), key="req-1")
    assert status == 200 and first["status"] == "captured" and "duplicate" not in first
    status, again, _ = await post(client, "/v1/email", signin("ana@example.com"), key="req-1")
    assert status == 200
    assert again == {"id": first["id"], "status": "captured", "provider": "capture",
                     "duplicate": True}  # fmt: skip
    assert [m["id"] for m in await inbox(client)] == [first["id"]]


async def test_different_idempotency_keys_send_two_messages(service: ClientFactory) -> None:
    """Two requests with different Idempotency-Keys are two messages, even with the same code."""
    client = await service(capture_config())
    _, first, _ = await post(client, "/v1/email", signin("ana@example.com"), key="req-1")
    status, second, _ = await post(client, "/v1/email", signin("ana@example.com"), key="req-2")
    assert status == 200 and "duplicate" not in second and second["id"] != first["id"]
    assert len(await inbox(client)) == 2


async def test_idempotency_key_is_scoped_to_the_channel(service: ClientFactory) -> None:
    """The same Idempotency-Key on /v1/email and /v1/sms names two different messages."""
    client = await service(capture_config())
    _, email, _ = await post(client, "/v1/email", signin("ana@example.com"), key="req-1")
    status, sms, _ = await post(client, "/v1/sms", signin("+33612345678"), key="req-1")
    assert status == 200 and sms["id"] != email["id"] and "duplicate" not in sms
    assert {m["channel"] for m in await inbox(client)} == {"email", "sms"}


async def test_same_code_without_key_is_sent_once(service: ClientFactory) -> None:
    """Without a key, the same (to, type, code) again is answered with the first message's id
    and status, and not sent again."""
    client = await service(capture_config())
    _, first, _ = await post(client, "/v1/email", signin("ana@example.com"))
    status, again, _ = await post(client, "/v1/email", signin("ANA@example.com"))
    assert status == 200 and again["id"] == first["id"] and again["duplicate"] is True
    assert len(await inbox(client)) == 1


async def test_new_code_without_key_is_a_new_message(service: ClientFactory) -> None:
    """A different code for the same person and type is a new message, delivered too."""
    client = await service(capture_config())
    _, first, _ = await post(client, "/v1/email", signin("ana@example.com", "111111"))
    status, second, _ = await post(client, "/v1/email", signin("ana@example.com", "222222"))
    assert status == 200 and second["id"] != first["id"] and "duplicate" not in second
    assert [m["code"] for m in await inbox(client)] == ["222222", "111111"]


async def test_same_code_after_ttl_expiry_is_a_new_message(service: ClientFactory) -> None:
    """Once the first message's ttl has passed, the same code again is a new message."""
    client = await service(capture_config())
    _, first, _ = await post(client, "/v1/email", signin("ana@example.com", ttl=0.5))
    await asyncio.sleep(0.6)
    status, second, _ = await post(client, "/v1/email", signin("ana@example.com", ttl=0.5))
    assert status == 200 and second["id"] != first["id"] and "duplicate" not in second
    assert len(await inbox(client, "ana@example.com")) == 2


async def test_duplicate_during_outage_is_delivered_once(
    smtp_server: RecordingSMTPServer, service: ClientFactory
) -> None:
    """Logto retrying while the SMTP server is down gets 202 for the same id; one email arrives."""
    client = await service(smtp_config(smtp_server.port))
    status, first, _ = await post(client, "/v1/email", signin("ana@example.com"))
    assert status == 202
    status, again, _ = await post(client, "/v1/email", signin("ana@example.com"))
    assert status == 202 and again == {"id": first["id"], "status": "queued", "duplicate": True}

    smtp_server.start()
    await wait_status(client, first["id"], "sent")
    await asyncio.sleep(0.2)  # a few worker rounds: no second copy follows
    assert message_ids(smtp_server) == [f"<{first['id']}@{FROM_DOMAIN}>"]


# 3. Abuse limits


def assert_rate_limited(status: int, body: dict[str, Any], headers: dict[str, str]) -> int:
    """429 rate_limited with a usable Retry-After (seconds); returns it."""
    assert status == 429 and body["error"]["code"] == "rate_limited" and "id" not in body
    retry_after = headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return int(retry_after)


async def test_per_recipient_limit_refuses_with_429_and_sends_nothing(
    service: ClientFactory,
) -> None:
    """The (count+1)th message to one address within the window is refused and never sent."""
    limit = {"count": 2, "window_seconds": 600}
    client = await service(capture_config(per_recipient=limit, per_ip=None))
    for code in ("111111", "222222"):
        assert (await post(client, "/v1/email", signin("ana@example.com", code)))[0] == 200
    status, body, headers = await post(client, "/v1/email", signin("Ana@Example.com", "333333"))
    assert assert_rate_limited(status, body, headers) <= 600
    assert "recipient" in body["error"]["message"]
    assert [m["code"] for m in await inbox(client)] == ["222222", "111111"]
    assert (await post(client, "/v1/email", signin("bob@example.com", "333333")))[0] == 200


async def test_per_ip_limit_refuses_with_429_and_sends_nothing(service: ClientFactory) -> None:
    """The (count+1)th request from one end-user IP is refused, whoever it is for."""
    limit = {"count": 2, "window_seconds": 60}
    client = await service(capture_config(per_ip=limit, per_recipient=None))
    ip = "203.0.113.7"
    for number in range(2):
        status, _, _ = await post(client, "/v1/email", signin(f"u{number}@example.com", ip=ip))
        assert status == 200
    status, body, headers = await post(client, "/v1/sms", signin("+33612345678", ip=ip))
    assert assert_rate_limited(status, body, headers) <= 60
    assert "IP" in body["error"]["message"]
    assert len(await inbox(client)) == 2
    other = await post(client, "/v1/sms", signin("+33612345678", ip="198.51.100.2"))
    assert other[0] == 200


async def test_per_sms_prefix_limit_refuses_the_number_range(service: ClientFactory) -> None:
    """Past the count for one number range (SMS pumping), numbers in it are refused; another
    range still gets its text."""
    client = await service(
        capture_config(
            per_sms_prefix={"count": 2, "window_seconds": 600},
            sms_prefix_digits=6,
            per_recipient=None,
            per_ip=None,
        )
    )
    for to in ("+33612345678", "+33612345679"):
        assert (await post(client, "/v1/sms", signin(to)))[0] == 200
    status, body, headers = await post(client, "/v1/sms", signin("+33612345680"))
    assert_rate_limited(status, body, headers)
    assert "number range" in body["error"]["message"]
    assert await inbox(client, "+33612345680") == []
    assert (await post(client, "/v1/sms", signin("+33698765432")))[0] == 200
    assert len(await inbox(client)) == 3


async def test_null_limit_switches_that_limit_off(service: ClientFactory) -> None:
    """per_recipient: null lets more than the default 10 messages reach one address."""
    client = await service(capture_config(per_recipient=None))
    for number in range(12):
        status, _, _ = await post(client, "/v1/email", signin("ana@example.com", f"{number:06d}"))
        assert status == 200
    assert len(await inbox(client, "ana@example.com")) == 12


async def test_limits_disabled_refuse_nothing(service: ClientFactory) -> None:
    """limits.enabled: false ignores every configured limit."""
    one = {"count": 1, "window_seconds": 600}
    client = await service(
        capture_config(enabled=False, per_recipient=one, per_ip=one, per_sms_prefix=one)
    )
    for number in range(3):
        body = signin("+33612345678", f"{number:06d}", ip="203.0.113.7")
        assert (await post(client, "/v1/sms", body))[0] == 200
    assert len(await inbox(client)) == 3


async def test_idempotent_retry_over_the_limit_gets_the_first_answer(
    service: ClientFactory,
) -> None:
    """A retried request (same Idempotency-Key) is answered with its first outcome, not 429,
    even when the recipient has used up its limit."""
    client = await service(capture_config(per_recipient={"count": 1, "window_seconds": 600}))
    _, first, _ = await post(client, "/v1/email", signin("ana@example.com"), key="req-1")
    status, again, _ = await post(client, "/v1/email", signin("ana@example.com"), key="req-1")
    assert status == 200 and again["id"] == first["id"] and again["duplicate"] is True


# 4. SMS failover under throttling, and slow attempts


def sms_config(vonage: FakeVonage, aliyun: FakeAliyun) -> dict[str, Any]:
    """+86 routed to Aliyun then Vonage, endpoints at the fakes, quick retries, no limits."""
    return {
        "sms": {
            "provider": "vonage",
            "vonage": logto_vonage_json(),
            "aliyun": logto_aliyun_json(),
            "endpoints": {"vonage": vonage.endpoint(), "aliyun": aliyun.endpoint()},
            "routes": [{"prefixes": ["+86"], "providers": ["aliyun", "vonage"]}],
        },
        "limits": {"enabled": False},
        "delivery": FAST | {"backoff_max_seconds": 0.5},
    }


async def test_aliyun_throttled_fails_over_to_vonage_with_attempts_in_order(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Aliyun's isv.BUSINESS_LIMIT_CONTROL moves the text to Vonage at once; the status lists
    Aliyun's throttled attempt, then Vonage's delivery."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    fake_aliyun.reply_next(aliyun_business("isv.BUSINESS_LIMIT_CONTROL"))
    status, body, _ = await post(client, "/v1/sms", signin(CHINA))
    assert status == 200 and body["provider"] == "vonage" and body["status"] == "sent"
    _, record, text = await status_of(client, body["id"])
    assert [(a["provider"], a["outcome"]) for a in record["attempts"]] == [
        ("aliyun", "transient"), ("vonage", "sent"),
    ]  # fmt: skip
    assert "BUSINESS_LIMIT_CONTROL" in record["attempts"][0]["error"]
    assert record["provider"] == "vonage" and CODE not in text
    assert len(fake_aliyun.sms) == 1 and len(fake_vonage.sms) == 1


@pytest.mark.slow  # over ~2 s of real waiting
async def test_both_providers_throttling_queue_then_worker_delivers(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Both providers throttling with Retry-After: 202 queued; the worker retries no sooner than
    Retry-After and delivers once they recover, with every attempt recorded in order."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    for _ in range(2):  # two rounds of throttling, then the defaults (success)
        fake_aliyun.reply_next(aliyun_throttled(300))
        fake_vonage.reply_next(vonage_http(429, retry_after="1"))
    status, body, _ = await post(client, "/v1/sms", signin(CHINA))
    assert status == 202 and body["status"] == "queued"

    record = await wait_status(client, body["id"], "sent", seconds=10)
    assert record["provider"] == "aliyun"
    assert [(a["provider"], a["outcome"]) for a in record["attempts"]] == [
        ("aliyun", "transient"), ("vonage", "transient"),
        ("aliyun", "transient"), ("vonage", "transient"),
        ("aliyun", "sent"),
    ]  # fmt: skip
    times = [datetime.fromisoformat(a["at"]).timestamp() for a in record["attempts"]]
    assert times[2] - times[1] >= 0.95 and times[4] - times[3] >= 0.95  # Retry-After: 1
    assert (len(fake_aliyun.sms), len(fake_vonage.sms)) == (3, 2)


@pytest.mark.slow  # over ~2 s of real waiting
async def test_delivery_slower_than_its_lease_is_sent_once(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """An attempt that outlasts lease_seconds is not started a second time by the worker: the
    person gets one text."""
    config = sms_config(fake_vonage, fake_aliyun)
    config["sms"]["endpoints"]["aliyun"]["timeout_seconds"] = 5
    config["delivery"] |= {"lease_seconds": 1, "wait_seconds": 0.2}
    client = await service(config)
    fake_aliyun.reply_next(aliyun_slow(1.5), aliyun_slow(1.5))
    status, body, _ = await post(client, "/v1/sms", signin(CHINA))
    assert status == 202
    await wait_status(client, body["id"], "sent")
    await asyncio.sleep(1.2)  # a worker that re-claimed it would be done by now
    assert len(fake_aliyun.sms) == 1
    _, record, _ = await status_of(client, body["id"])
    assert [a["outcome"] for a in record["attempts"]] == ["sent"]


# 5. Status and retention


async def test_status_of_smtp_message_has_attempts_but_no_body(
    smtp_server: RecordingSMTPServer, service: ClientFactory
) -> None:
    """GET /v1/messages/{id} of an emailed message: sent by smtp, its attempt with time,
    provider, outcome and error, and never the code or text."""
    smtp_server.start()
    client = await service(smtp_config(smtp_server.port))
    status, body, _ = await post(client, "/v1/email", signin("ana@example.com"))
    assert status == 200 and body["status"] == "sent"

    status, record, text = await status_of(client, body["id"])
    assert status == 200 and CODE not in text and not BODY_FIELDS & set(record)
    assert record["status"] == "sent" and record["provider"] == "smtp"
    assert record["channel"] == "email" and record["to"] == "ana@example.com"
    [attempt] = record["attempts"]
    assert attempt["provider"] == "smtp" and attempt["outcome"] == "sent"
    assert attempt["error"] is None
    at = datetime.fromisoformat(attempt["at"])
    assert datetime.fromisoformat(record["created_at"]) <= at
    assert at <= datetime.fromisoformat(record["finished_at"])


async def test_status_of_captured_message_includes_body(service: ClientFactory) -> None:
    """A captured message's status also carries its body and code (for developers)."""
    client = await service(capture_config())
    _, body, _ = await post(client, "/v1/email", signin("ana@example.com"))
    _, record, _ = await status_of(client, body["id"])
    assert record["status"] == "captured" and record["code"] == CODE and CODE in record["text"]
    assert [(a["provider"], a["outcome"]) for a in record["attempts"]] == [("capture", "captured")]


async def test_retention_purge_forgets_finished_messages_keeps_queued(
    smtp_server: RecordingSMTPServer, service: ClientFactory
) -> None:
    """Past retention, a finished message's status is gone (404); a queued one is kept."""
    smtp_server.start()
    config = smtp_config(smtp_server.port) | {"store": {"retention_days": 0.01}}
    client = await service(config)
    _, sent, _ = await post(client, "/v1/email", signin("ana@example.com"))
    smtp_server.stop()
    status, queued, _ = await post(client, "/v1/email", signin("bob@example.com"))
    assert status == 202

    store = client.app[SERVICES].store
    assert await store.purge(finished_before=time.time()) == 1  # what the worker purges later

    status, gone, _ = await status_of(client, sent["id"])
    assert status == 404 and gone["error"]["code"] == "message_not_found"
    status, kept, _ = await status_of(client, queued["id"])
    assert status == 200 and kept["status"] == "queued"


# 8. One owner per store file; no code left behind on disk


async def test_second_process_on_the_same_store_is_refused(tmp_path: Path) -> None:
    """A second instance on one outbox file waits and then refuses, rather than free the first
    one's leases and resend its messages."""
    from otp_service.store import SqliteStore

    path = tmp_path / "outbox.sqlite3"
    first = SqliteStore(path)
    await first.open()
    second = SqliteStore(path, lock_wait=0.3)
    with pytest.raises(OSError, match="another otp-service process owns"):
        await second.open()
    await first.close()
    await second.open()  # the file is free again once the first owner has gone
    await second.close()


async def test_finished_codes_do_not_linger_in_the_store_files(tmp_path: Path) -> None:
    """After compaction, neither the database nor its WAL holds the code of a finished message."""
    from otp_service.message.compose import Message
    from otp_service.store import SqliteStore

    path = tmp_path / "outbox.sqlite3"
    store = SqliteStore(path)
    await store.open()
    codes = [f"{n:06d}" for n in range(731000, 731050)]
    ids = []
    for code in codes:
        message = Message(id=uuid.uuid4().hex, channel="email", to="a@example.com", type="SignIn",
                          locale="en", text=f"Your code is {code}", code=code)  # fmt: skip
        ids.append(message.id)
        await store.accept(message, expires_at=time.time() + 600, lease_until=0,
                           idempotency_key=None, dedupe_key=None)  # fmt: skip
        await store.finish(message.id, "sent", "smtp", None)
    await store.compact()
    data = _store_bytes(tmp_path)
    await store.close()
    for message_id in ids:  # the ids stay, and a random hex id can hold six such digits
        data = data.replace(message_id.encode(), b"")
    assert [code for code in codes if code.encode() in data] == []


def _store_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob("outbox.sqlite3*"))


@pytest.mark.slow  # over ~2 s of real waiting
async def test_provider_pacing_never_delivers_after_expiry(service: ClientFactory) -> None:
    """Messages waiting for a paced provider (limits.provider_rate) expire instead of arriving
    after their code is dead."""
    config = capture_config()
    config["limits"] = {"enabled": False, "provider_rate": {"capture": 1}}
    config["delivery"] = {"wait_seconds": 0.1}
    client = await service(config)
    answers = await asyncio.gather(
        *(post(client, "/v1/email", signin(f"p{n}@example.com", ttl=1.2)) for n in range(4))
    )
    ids = [body["id"] for _, body, _ in answers]
    finals = [await final_status(client, message_id) for message_id in ids]
    assert finals.count("captured") <= 2 and "expired" in finals
    inbox = (await (await client.get("/v1/messages")).json())["messages"]
    assert len(inbox) == finals.count("captured")


async def final_status(client: Any, message_id: str, seconds: float = 8) -> str:
    """Poll until the message is finished (sent, captured, failed or expired)."""
    deadline = time.monotonic() + seconds
    while True:
        _, record, _ = await status_of(client, message_id)
        if record["status"] in ("sent", "captured", "failed", "expired"):
            return str(record["status"])
        assert time.monotonic() < deadline, f"still {record['status']} after {seconds} s"
        await asyncio.sleep(0.05)


async def test_outcome_the_store_refuses_for_good_fails_the_message_with_the_reason(
    service: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A final write the store refuses for good (not an outage) is not retried while the lease
    is held: the message fails with the store's reason, and the operator's log says why."""
    store = tmp_path / "o.db"
    config = {"delivery": FAST, "store": {"path": str(store)}}
    await (await service(config)).close()  # the schema is made; the file is free again
    db = sqlite3.connect(store)  # the database itself refuses this one write
    db.execute(
        "CREATE TRIGGER refuse_captured BEFORE UPDATE OF status ON messages "
        "WHEN NEW.status = 'captured' BEGIN SELECT RAISE(ABORT, 'no captured rows'); END"
    )
    db.commit()
    db.close()
    client = await service(config)
    status, body, _ = await post(client, "/v1/email", signin("ana@example.com"))
    assert status == 200 and body["status"] == "captured"  # answered before it is written
    record = await wait_status(client, body["id"], "failed")
    assert "the store refused its captured outcome" in record["error"]
    assert "no captured rows" in record["error"]
    assert any("the store refused the captured outcome" in r.getMessage() for r in caplog.records)
