"""Twilio through the service: Logto's HTTP SMS request in, the Twilio fake (and the Vonage fake
for routing and failover) out, the status API and the logs showing what happened.

The service runs from a config dict with Logto's Twilio and Vonage connector JSON, endpoints at
the fakes; ``+1`` numbers are routed to Twilio then Vonage, the rest to Vonage then Twilio.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from .support.fakes import DROP
from .support.fakes import twilio as twilio_fakes
from .support.fakes import vonage as vonage_fakes
from .support.fakes.twilio import FakeTwilio, logto_twilio_json, twilio_error, twilio_not_json
from .support.fakes.vonage import FakeVonage, logto_vonage_json, vonage_http, vonage_status
from .support.service import ClientFactory

fake_twilio = twilio_fakes.fake_twilio
fake_vonage = vonage_fakes.fake_vonage

CODE = "482913"
US = "+12025550143"
# A send answers as soon as its outcome is known; the wait is generous because a loaded CI
# machine once took over 1 s for a failover. The 202 test shortens it.
SETTLED_WAIT = 10
FRANCE = "+33612345678"


def sms_config(twilio: FakeTwilio, vonage: FakeVonage, **sms: Any) -> dict[str, Any]:
    """Twilio and Vonage from Logto's JSON, aimed at the fakes; +1 to Twilio first."""
    section: dict[str, Any] = {
        "provider": "vonage",
        "twilio": logto_twilio_json(),
        "vonage": logto_vonage_json(),
        "endpoints": {"twilio": twilio.endpoint(), "vonage": vonage.endpoint()},
        "routes": [
            {"prefixes": ["+1"], "providers": ["twilio", "vonage"]},
            {"providers": ["vonage", "twilio"]},
        ],
    }
    return {
        "sms": section | sms,
        "delivery": {"retry_delay_seconds": 0.01, "wait_seconds": SETTLED_WAIT},
    }


def twilio_only(twilio: FakeTwilio, **sms: Any) -> dict[str, Any]:
    """Twilio alone, with its own texts (Logto's Twilio templates)."""
    section = {
        "provider": "twilio",
        "twilio": logto_twilio_json(),
        "endpoints": {"twilio": twilio.endpoint()},
    }
    return {
        "sms": section | sms,
        "delivery": {"retry_delay_seconds": 0.01, "wait_seconds": SETTLED_WAIT},
    }


async def send(client: Any, to: str, code: str = CODE) -> tuple[int, dict[str, Any], str]:
    """POST /v1/sms as Logto's HTTP SMS connector does; (status, JSON, raw body)."""
    body = {"to": to, "type": "SignIn", "payload": {"code": code, "locale": "en"}}
    response = await client.post("/v1/sms", json=body)
    text = await response.text()
    return response.status, json.loads(text), text


async def record(client: Any, message_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/messages/{message_id}")
    assert response.status == 200
    result: dict[str, Any] = await response.json()
    return result


async def test_twilio_delivers_logto_template_and_keeps_message_sid(
    service: ClientFactory, fake_twilio: FakeTwilio
) -> None:
    """A Logto request sent through Twilio: 200 sent, the Twilio JSON's template is the Body,
    and the status API shows Twilio's message SID as the attempt's provider id."""
    client = await service(twilio_only(fake_twilio))
    status, body, _ = await send(client, "1 202 555 0143")
    assert status == 200 and body["provider"] == "twilio" and body["status"] == "sent"
    [created] = fake_twilio.created
    assert created.form["To"] == US and created.form["Body"] == f"Acme SignIn: your code is {CODE}"
    attempts = (await record(client, body["id"]))["attempts"]
    assert [(a["provider"], a["outcome"], a["provider_id"]) for a in attempts] == [
        ("twilio", "sent", created.sid)
    ]


async def test_twilio_status_callback_absent_without_public_url(
    service: ClientFactory, fake_twilio: FakeTwilio
) -> None:
    """Without a public URL for receipts, no StatusCallback is sent (the Messaging Service's
    own callback setting applies)."""
    client = await service(twilio_only(fake_twilio))
    assert (await send(client, US))[0] == 200
    assert "StatusCallback" not in fake_twilio.sms[0]


def failed_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The fields of each "failed" log line (a message's final state)."""
    return [
        dict(getattr(r, "otp_fields", {})) for r in caplog.records if r.getMessage() == "failed"
    ]


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (21211, "invalid 'To' phone number"),
        (21610, "the recipient unsubscribed"),
    ],
)
async def test_twilio_permanent_error_is_502_with_reason_in_answer_status_api_and_log(
    service: ClientFactory,
    fake_twilio: FakeTwilio,
    fake_vonage: FakeVonage,
    caplog: pytest.LogCaptureFixture,
    code: int,
    meaning: str,
) -> None:
    """A permanent refusal stops at once (no failover): 502 provider_rejected naming Twilio's
    code and its meaning (not the number); the log line and the status API keep them too."""
    caplog.set_level(logging.INFO)
    client = await service(sms_config(fake_twilio, fake_vonage))
    fake_twilio.reply_next(twilio_error(code))
    status, body, text = await send(client, US)
    assert status == 502 and body["error"]["code"] == "provider_rejected"
    assert f"error {code}" in body["error"]["message"] and meaning in body["error"]["message"]
    assert CODE not in text and "5550143" not in text
    assert len(fake_twilio.sms) == 1 and fake_vonage.requests == []
    [logged] = failed_records(caplog)
    assert logged["provider"] == "twilio"
    assert f"error {code}" in logged["error"] and meaning in logged["error"]
    found = await record(client, logged["id"])
    assert found["status"] == "failed"
    [attempt] = found["attempts"]
    assert (attempt["provider"], attempt["outcome"]) == ("twilio", "permanent")
    assert f"error {code}" in attempt["error"] and meaning in attempt["error"]


ACCOUNT_REFUSALS = [
    (21408, "region is not enabled"),
    (21608, "trial account: the 'To' number is not verified"),
]


@pytest.mark.parametrize(("code", "meaning"), ACCOUNT_REFUSALS)
async def test_twilio_account_refusal_fails_over_to_vonage(
    service: ClientFactory,
    fake_twilio: FakeTwilio,
    fake_vonage: FakeVonage,
    code: int,
    meaning: str,
) -> None:
    """A refusal by this Twilio account alone (Geo permissions, trial) is permanent for Twilio
    but the next provider, Vonage, delivers; the attempt keeps Twilio's code and meaning."""
    client = await service(sms_config(fake_twilio, fake_vonage))
    fake_twilio.reply_next(twilio_error(code))
    status, body, _ = await send(client, US)
    assert status == 200 and body["provider"] == "vonage"
    assert len(fake_twilio.sms) == 1 and fake_twilio.created == []
    [form] = fake_vonage.sms
    assert form["to"] == US.lstrip("+") and CODE in form["text"]
    attempts = (await record(client, body["id"]))["attempts"]
    assert [(a["provider"], a["outcome"]) for a in attempts] == [
        ("twilio", "permanent"), ("vonage", "sent"),
    ]  # fmt: skip
    assert f"error {code}" in attempts[0]["error"] and meaning in attempts[0]["error"]


@pytest.mark.parametrize(("code", "meaning"), ACCOUNT_REFUSALS)
async def test_twilio_account_refusal_alone_is_502_not_retried(
    service: ClientFactory, fake_twilio: FakeTwilio, code: int, meaning: str
) -> None:
    """Twilio the only provider: its account refusal fails the message at once (502
    provider_rejected with Twilio's code and meaning), asked once, never retried."""
    client = await service(twilio_only(fake_twilio))
    fake_twilio.reply_next(twilio_error(code))
    status, body, text = await send(client, US)
    assert status == 502 and body["error"]["code"] == "provider_rejected"
    assert f"error {code}" in body["error"]["message"] and meaning in body["error"]["message"]
    assert CODE not in text and "5550143" not in text
    assert len(fake_twilio.sms) == 1  # a transient failure would have been retried by now


async def test_account_refusal_after_a_transient_failure_is_retried_next_round(
    service: ClientFactory, fake_twilio: FakeTwilio, fake_vonage: FakeVonage
) -> None:
    """Vonage failing transiently, then Twilio refusing for its account: the message is not
    failed (Vonage may work later); the next round's Vonage delivers, one text in all."""
    client = await service(sms_config(fake_twilio, fake_vonage))
    fake_vonage.reply_next(vonage_http(500))
    fake_twilio.reply_next(twilio_error(21608))
    status, body, _ = await send(client, FRANCE)
    assert status == 200 and body["provider"] == "vonage"
    assert (len(fake_vonage.sms), len(fake_twilio.sms), fake_twilio.created) == (2, 1, [])
    attempts = (await record(client, body["id"]))["attempts"]
    assert [(a["provider"], a["outcome"]) for a in attempts] == [
        ("vonage", "transient"), ("twilio", "permanent"), ("vonage", "sent"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "text"),
    [
        ("8", "Account suspended"),
        ("9", "Quota Exceeded - rejected"),
        ("29", "Non White-listed Destination - rejected"),
    ],
    ids=["suspended", "no-credit", "demo-destination"],
)
async def test_vonage_account_refusal_fails_over_to_twilio(
    service: ClientFactory,
    fake_twilio: FakeTwilio,
    fake_vonage: FakeVonage,
    status: str,
    text: str,
) -> None:
    """Vonage refusing for its account (suspended, no credit, a demo account's destination):
    Twilio, next on the route, delivers; the attempt keeps Vonage's status and text."""
    client = await service(sms_config(fake_twilio, fake_vonage))
    fake_vonage.reply_next(vonage_status(status, text))
    answer, body, _ = await send(client, FRANCE)
    assert answer == 200 and body["provider"] == "twilio"
    [created] = fake_twilio.created
    assert created.form["To"] == FRANCE and CODE in created.form["Body"]
    attempts = (await record(client, body["id"]))["attempts"]
    assert [(a["provider"], a["outcome"]) for a in attempts] == [
        ("vonage", "permanent"), ("twilio", "sent"),
    ]  # fmt: skip
    assert f"status {status}" in attempts[0]["error"] and text in attempts[0]["error"]


async def test_twilio_rate_limit_retried_then_delivered(
    service: ClientFactory, fake_twilio: FakeTwilio
) -> None:
    """Twilio alone: 20429 then a 503 are retried, and the third attempt delivers (one SMS)."""
    client = await service(twilio_only(fake_twilio))
    fake_twilio.reply_next(twilio_error(20429), twilio_error(20503))
    status, body, _ = await send(client, US)
    assert status == 200 and body["provider"] == "twilio"
    assert (len(fake_twilio.sms), len(fake_twilio.created)) == (3, 1)
    attempts = (await record(client, body["id"]))["attempts"]
    assert [a["outcome"] for a in attempts] == ["transient", "transient", "sent"]
    assert "error 20429" in attempts[0]["error"] and "error 20503" in attempts[1]["error"]


async def test_twilio_down_answers_202_queued(
    service: ClientFactory, fake_twilio: FakeTwilio
) -> None:
    """Twilio failing with 5xx for longer than the request waits: 202 queued, kept for later."""
    config = twilio_only(fake_twilio)
    config["delivery"]["wait_seconds"] = 1
    client = await service(config)
    fake_twilio.reply_next(*[twilio_not_json(503)] * 50)
    status, body, text = await send(client, US)
    assert status == 202 and body["status"] == "queued" and CODE not in text
    for _ in range(200):  # the 202 can come before the first attempt is recorded
        found = await record(client, body["id"])
        if found["attempts"]:
            break
        await asyncio.sleep(0.05)
    assert found["status"] == "queued" and {a["outcome"] for a in found["attempts"]} == {
        "transient"
    }


async def test_us_number_routed_to_twilio_others_to_vonage(
    service: ClientFactory, fake_twilio: FakeTwilio, fake_vonage: FakeVonage
) -> None:
    """A +1 number goes to Twilio; a French number takes the catch-all route to Vonage."""
    client = await service(sms_config(fake_twilio, fake_vonage))
    status, body, _ = await send(client, US)
    assert status == 200 and body["provider"] == "twilio"
    status, body, _ = await send(client, FRANCE, code="777001")
    assert status == 200 and body["provider"] == "vonage"
    assert [f["To"] for f in fake_twilio.sms] == [US]
    assert [f["to"] for f in fake_vonage.sms] == [FRANCE.lstrip("+")]


@pytest.mark.parametrize(
    "failure",
    [twilio_error(20429), twilio_error(20500), twilio_error(21611), twilio_not_json(502)],
    ids=["rate-limited", "internal-error", "queue-full", "gateway-5xx"],
)
async def test_twilio_transient_failure_fails_over_to_vonage(
    service: ClientFactory, fake_twilio: FakeTwilio, fake_vonage: FakeVonage, failure: Any
) -> None:
    """When Twilio throttles or fails transiently, the next provider (Vonage) delivers."""
    client = await service(sms_config(fake_twilio, fake_vonage))
    fake_twilio.reply_next(failure)
    status, body, _ = await send(client, US)
    assert status == 200 and body["provider"] == "vonage"
    assert len(fake_twilio.sms) == 1 and fake_twilio.created == []
    [form] = fake_vonage.sms
    assert form["to"] == US.lstrip("+") and CODE in form["text"]
    attempts = (await record(client, body["id"]))["attempts"]
    assert [(a["provider"], a["outcome"]) for a in attempts] == [
        ("twilio", "transient"), ("vonage", "sent"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "failure", [vonage_http(500), vonage_status("1")], ids=["server-error", "throttled"]
)
async def test_vonage_transient_failure_fails_over_to_twilio(
    service: ClientFactory, fake_twilio: FakeTwilio, fake_vonage: FakeVonage, failure: Any
) -> None:
    """Vonage first and failing transiently: Twilio delivers, its SID kept for the attempt."""
    client = await service(sms_config(fake_twilio, fake_vonage))
    fake_vonage.reply_next(failure)
    status, body, _ = await send(client, FRANCE)
    assert status == 200 and body["provider"] == "twilio"
    [created] = fake_twilio.created
    assert created.form["To"] == FRANCE and CODE in created.form["Body"]
    attempts = (await record(client, body["id"]))["attempts"]
    assert [(a["provider"], a["outcome"], a["provider_id"]) for a in attempts] == [
        ("vonage", "transient", None), ("twilio", "sent", created.sid),
    ]  # fmt: skip


async def test_twilio_unreachable_fails_over_to_vonage(
    service: ClientFactory, fake_twilio: FakeTwilio, fake_vonage: FakeVonage
) -> None:
    """Nothing answering at Twilio's endpoint: Vonage delivers the code."""
    config = sms_config(fake_twilio, fake_vonage)
    fake_twilio.stop()
    client = await service(config)
    status, body, _ = await send(client, US)
    assert status == 200 and body["provider"] == "vonage"


async def test_twilio_dropped_connection_is_502_outcome_unknown_without_failover(
    service: ClientFactory, fake_twilio: FakeTwilio, fake_vonage: FakeVonage
) -> None:
    """A connection dropped after the POST may have texted: 502 outcome unknown, Vonage unused."""
    client = await service(sms_config(fake_twilio, fake_vonage))
    fake_twilio.reply_next(DROP)
    status, body, _ = await send(client, US)
    assert status == 502 and body["error"]["code"] == "provider_outcome_unknown"
    assert len(fake_twilio.sms) == 1 and fake_vonage.requests == []


async def test_twilio_error_echoing_the_code_never_shows_it(
    service: ClientFactory, fake_twilio: FakeTwilio
) -> None:
    """Twilio echoing the message body in an unknown error never puts the code in our answer."""
    client = await service(twilio_only(fake_twilio))
    fake_twilio.reply_next(twilio_error(21999, 400, f"Body 'Your code is {CODE}' refused"))
    status, body, text = await send(client, US)
    assert status == 502 and CODE not in text and "******" in body["error"]["message"]
