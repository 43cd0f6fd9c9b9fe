"""An SMS cut off mid-attempt by a dead run: the service's worker recovers it as an unknown
outcome on its first poll after the start, counts it (``otp_sms_recovered_unknown_total``) and
logs it (``recovered unknown``), over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from otp_service.message.compose import Message
from otp_service.store import SqliteStore

from .support.service import ClientFactory


async def test_sms_cut_off_by_a_dead_run_is_counted_and_logged_at_start(
    service: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite3"
    dead = SqliteStore(path)  # the run that died mid-attempt
    await dead.open()
    now = time.time()
    sms = Message(id=uuid.uuid4().hex, channel="sms", to="+8613800138000", type="SignIn",
                  locale="en", text="Your code is 604217", code="604217",
                  request_id="req-dead-run", created_at=datetime.fromtimestamp(now, UTC))  # fmt: skip
    await dead.accept(sms, expires_at=now + 600, lease_until=now + 300,
                      idempotency_key=None, dedupe_key=None)  # fmt: skip
    await dead.start_attempt(sms.id, "vonage", now + 1)
    await dead.close()

    caplog.set_level(logging.INFO, "otp_service")
    client = await service({"store": {"path": str(path)}})
    record: dict[str, object] = {}
    for _ in range(200):  # the worker's first poll runs right after the start
        record = await (await client.get(f"/v1/messages/{sms.id}")).json()
        if record["status"] != "queued":
            break
        await asyncio.sleep(0.05)
    assert record["status"] == "failed", record
    assert str(record["error"]).startswith("provider_outcome_unknown")
    metrics = await (await client.get("/metrics")).text()
    assert 'otp_sms_recovered_unknown_total{provider="vonage"} 1.0' in metrics
    assert 'otp_messages_total{channel="sms",status="failed"} 1.0' in metrics
    [logged] = [r for r in caplog.records if r.getMessage() == "recovered unknown"]
    assert logged.levelno == logging.ERROR
    fields = logged.otp_fields  # what the JSON log line holds (logs.event)
    assert (fields["id"], fields["request_id"], fields["provider"]) == (
        sms.id, "req-dead-run", "vonage")  # fmt: skip
    assert fields["to"] != sms.to and "***" in fields["to"]  # masked
