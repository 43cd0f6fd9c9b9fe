"""SMS routing and failover through the HTTP API, with HTTP fakes of Vonage and Aliyun.

The service runs from a config dict (Logto's connector JSON for both providers, endpoints at
the fakes, ``+86`` routed to Aliyun then Vonage, everything else to Vonage) and is driven
with Logto's HTTP SMS connector request.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from .support.fakes import DROP
from .support.fakes import aliyun as aliyun_fakes
from .support.fakes import vonage as vonage_fakes
from .support.fakes.aliyun import (
    FakeAliyun,
    aliyun_business,
    aliyun_error,
    aliyun_throttled,
    logto_aliyun_json,
)
from .support.fakes.vonage import FakeVonage, logto_vonage_json, vonage_http, vonage_status
from .support.ports import free_port
from .support.service import ClientFactory, write_tree

fake_vonage = vonage_fakes.fake_vonage
fake_aliyun = aliyun_fakes.fake_aliyun

CODE = "482913"
# How long a send waits for its outcome: generous, since a send answers as soon as it is known
# (a loaded CI machine took over 1 s for a failover); tests of a 202 set QUEUED_WAIT.
SETTLED_WAIT = 10
QUEUED_WAIT = 1
CHINA = "+8613800138000"
FRANCE = "+33612345678"


def sms_config(vonage: FakeVonage, aliyun: FakeAliyun, **sms: Any) -> dict[str, Any]:
    """Both providers configured from Logto's JSON, aimed at the fakes, no retry delay."""
    section: dict[str, Any] = {
        "provider": "vonage",
        "vonage": logto_vonage_json(),
        "aliyun": logto_aliyun_json(),
        "endpoints": {"vonage": vonage.endpoint(), "aliyun": aliyun.endpoint()},
        "routes": [
            {"prefixes": ["+86"], "providers": ["aliyun", "vonage"]},
            {"providers": ["vonage"]},
        ],
    }
    delivery = {"retry_delay_seconds": 0.01, "wait_seconds": SETTLED_WAIT}
    return {"sms": section | sms, "delivery": delivery}


def queued_config(vonage: FakeVonage, aliyun: FakeAliyun, **sms: Any) -> dict[str, Any]:
    """``sms_config`` with a short wait, for a send that must answer 202 queued."""
    config = sms_config(vonage, aliyun, **sms)
    config["delivery"]["wait_seconds"] = QUEUED_WAIT
    return config


async def attempts_when(client: Any, message_id: str, count: int) -> list[dict[str, Any]]:
    """The message's attempts once at least ``count`` are recorded (a 202 answers when the
    wait ends, which on a loaded machine can come before the failover's attempt)."""
    deadline = asyncio.get_running_loop().time() + SETTLED_WAIT
    while True:
        record = await (await client.get(f"/v1/messages/{message_id}")).json()
        attempts: list[dict[str, Any]] = record["attempts"]
        if len(attempts) >= count:
            return attempts
        assert asyncio.get_running_loop().time() < deadline, f"only {len(attempts)} attempts"
        await asyncio.sleep(0.05)


async def send(
    client: Any, to: str, usage: str = "SignIn", code: str = CODE
) -> tuple[int, dict[str, Any], dict[str, str], str]:
    """POST /v1/sms as Logto's HTTP SMS connector does; (status, JSON, headers, raw body)."""
    body = {"to": to, "type": usage, "payload": {"code": code, "locale": "en"}}
    response = await client.post("/v1/sms", json=body)
    text = await response.text()
    return response.status, json.loads(text), dict(response.headers), text


async def test_mainland_number_routed_to_aliyun(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """A +86 number is delivered by Aliyun; Vonage is not called."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    status, body, _, _ = await send(client, "86 138 0013 8000")
    assert status == 200 and body["provider"] == "aliyun" and body["status"] == "sent"
    assert [q["PhoneNumbers"] for q in fake_aliyun.sms] == ["13800138000"]
    assert fake_vonage.requests == []


@pytest.mark.parametrize("to", [FRANCE, "+85291234567", "+1 202 555 0143"])
async def test_other_numbers_routed_to_vonage(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun, to: str
) -> None:
    """Numbers outside +86 take the catch-all route to Vonage; Aliyun is not called."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    status, body, _, _ = await send(client, to)
    assert status == 200 and body["provider"] == "vonage"
    assert [f["to"] for f in fake_vonage.sms] == [to.replace(" ", "").lstrip("+")]
    assert fake_aliyun.requests == []


@pytest.mark.parametrize(
    "failure",
    [
        aliyun_business("isv.BUSINESS_LIMIT_CONTROL"),
        aliyun_throttled(1000),
        aliyun_error(500, "InternalError", "The request processing has failed."),
    ],
    ids=["business-limit", "throttling-header", "server-error"],
)
async def test_aliyun_transient_failure_fails_over_to_vonage(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun, failure: Any
) -> None:
    """When Aliyun throttles or fails transiently, the next provider (Vonage) delivers the code."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    fake_aliyun.reply_next(failure)
    status, body, _, _ = await send(client, CHINA)
    assert status == 200 and body["provider"] == "vonage"
    assert len(fake_aliyun.sms) == 1
    [form] = fake_vonage.sms
    assert form["to"] == "8613800138000" and CODE in form["text"]


async def test_aliyun_unreachable_fails_over_to_vonage(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """When nothing answers at Aliyun's endpoint, Vonage delivers the code."""
    config = sms_config(fake_vonage, fake_aliyun)
    config["sms"]["endpoints"]["aliyun"]["host"] = f"127.0.0.1:{free_port()}"
    client = await service(config)
    status, body, _, _ = await send(client, CHINA)
    assert status == 200 and body["provider"] == "vonage"


async def test_aliyun_permanent_error_is_502_without_failover(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """A permanent refusal stops at once: 502 provider_rejected with Aliyun's code, Vonage unused."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    fake_aliyun.reply_next(
        aliyun_error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    )
    status, body, _, _ = await send(client, CHINA)
    assert status == 502 and body["error"]["code"] == "provider_rejected"
    assert "aliyun" in body["error"]["message"]
    assert "InvalidAccessKeyId.NotFound" in body["error"]["message"]
    assert len(fake_aliyun.sms) == 1 and fake_vonage.requests == []


async def test_vonage_permanent_error_is_502_without_failover(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Vonage first and refusing the message for good (not its account: an invalid message):
    502 with Vonage's text, Aliyun unused."""
    routes = [{"prefixes": ["+86"], "providers": ["vonage", "aliyun"]}]
    client = await service(sms_config(fake_vonage, fake_aliyun, routes=routes))
    fake_vonage.reply_next(vonage_status("6", "Invalid Message"))
    status, body, _, _ = await send(client, CHINA)
    assert status == 502 and body["error"]["code"] == "provider_rejected"
    assert "Invalid Message" in body["error"]["message"]
    assert len(fake_vonage.sms) == 1 and fake_aliyun.requests == []


@pytest.mark.parametrize(
    "code", ["isv.AMOUNT_NOT_ENOUGH", "isv.OUT_OF_SERVICE", "isv.DAY_LIMIT_CONTROL"]
)
async def test_aliyun_account_refusal_fails_over_to_vonage(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun, code: str
) -> None:
    """Aliyun refusing for its account (no balance, suspended, its own daily cap): Vonage,
    next on the +86 route, delivers; the attempt keeps Aliyun's code."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    fake_aliyun.reply_next(aliyun_business(code, "refused for this account"))
    status, body, _, _ = await send(client, CHINA)
    assert status == 200 and body["provider"] == "vonage"
    assert (len(fake_aliyun.sms), len(fake_vonage.sms)) == (1, 1)
    record = await (await client.get(f"/v1/messages/{body['id']}")).json()
    assert [(a["provider"], a["outcome"]) for a in record["attempts"]] == [
        ("aliyun", "permanent"), ("vonage", "sent"),
    ]  # fmt: skip
    assert code in record["attempts"][0]["error"]


async def test_every_provider_unavailable_retried_next_round(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Aliyun then Vonage both failing transiently: the next round delivers, one text only."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    fake_aliyun.reply_next(aliyun_error(503, "ServiceUnavailable", "Service unavailable."))
    fake_vonage.reply_next(vonage_http(500))
    status, body, _, _ = await send(client, CHINA)
    assert status == 200 and body["provider"] == "aliyun"
    assert (len(fake_aliyun.sms), len(fake_vonage.sms)) == (2, 1)
    record = await (await client.get(f"/v1/messages/{body['id']}")).json()
    assert [(a["provider"], a["outcome"]) for a in record["attempts"]] == [
        ("aliyun", "transient"), ("vonage", "transient"), ("aliyun", "sent"),
    ]  # fmt: skip


async def test_every_provider_down_answers_202_queued(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Providers failing for longer than the request waits: 202 queued, the message stays ours."""
    client = await service(queued_config(fake_vonage, fake_aliyun))
    fake_aliyun.reply_next(*[aliyun_error(503, "ServiceUnavailable", "down")] * 50)
    fake_vonage.reply_next(*[vonage_http(500)] * 50)
    status, body, _, text = await send(client, CHINA)
    assert status == 202 and body["status"] == "queued" and CODE not in text
    attempts = await attempts_when(client, body["id"], 4)
    assert {a["outcome"] for a in attempts} == {"transient"}
    record = await (await client.get(f"/v1/messages/{body['id']}")).json()
    assert record["status"] == "queued"


async def test_provider_retry_after_is_honoured(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Aliyun's rate limit then Vonage's HTTP 429 Retry-After 7: no new attempt before 7 s."""
    client = await service(queued_config(fake_vonage, fake_aliyun))
    fake_aliyun.reply_next(aliyun_business("isv.BUSINESS_LIMIT_CONTROL"))
    fake_vonage.reply_next(vonage_http(429, retry_after="7"))
    status, body, _, _ = await send(client, CHINA)
    assert status == 202 and body["status"] == "queued"
    attempts = await attempts_when(client, body["id"], 2)
    assert (len(fake_aliyun.sms), len(fake_vonage.sms)) == (1, 1)
    assert "BUSINESS_LIMIT_CONTROL" in attempts[0]["error"]


async def test_aliyun_throttling_retry_after_is_honoured(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Vonage throttled (status 1) then Aliyun's x-acs-retry-after 3 s: queued, not hammered."""
    routes = [{"prefixes": ["+86"], "providers": ["vonage", "aliyun"]}]
    client = await service(queued_config(fake_vonage, fake_aliyun, routes=routes))
    fake_vonage.reply_next(vonage_status("1"))
    fake_aliyun.reply_next(aliyun_throttled(3000))
    status, body, _, _ = await send(client, CHINA)
    assert status == 202 and body["status"] == "queued"
    await attempts_when(client, body["id"], 2)
    assert (len(fake_vonage.sms), len(fake_aliyun.sms)) == (1, 1)


async def test_single_provider_transient_failure_retried(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """A route with one provider retries transient failures: a 5xx then success is a 200."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    fake_vonage.reply_next(vonage_http(500))
    status, body, _, _ = await send(client, FRANCE)
    assert status == 200 and body["provider"] == "vonage"
    assert len(fake_vonage.sms) == 2
    fake_vonage.clear()
    fake_vonage.reply_next(vonage_status("1"), vonage_status("1"))
    status, body, _, _ = await send(client, FRANCE, code="777001")
    assert status == 200 and body["provider"] == "vonage"
    assert len(fake_vonage.sms) == 3


@pytest.mark.parametrize("routes", ["vonage-only", "vonage-then-aliyun"])
async def test_dropped_connection_is_502_outcome_unknown_sent_once(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun, routes: str
) -> None:
    """A connection dropped after the POST: 502 provider_outcome_unknown, reported as unknown
    (it may have arrived), not as refused; no retry, no failover."""
    providers = ["vonage"] if routes == "vonage-only" else ["vonage", "aliyun"]
    config = sms_config(fake_vonage, fake_aliyun, routes=[{"providers": providers}])
    client = await service(config)
    fake_vonage.reply_next(DROP)
    status, body, _, _ = await send(client, CHINA)
    assert status == 502 and body["error"]["code"] == "provider_outcome_unknown"
    message = body["error"]["message"]
    assert "may have arrived" in message and "not resent" in message and "refused" not in message
    assert len(fake_vonage.sms) == 1 and fake_aliyun.requests == []


async def test_aliyun_timeout_is_502_outcome_unknown_without_failover(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Aliyun not answering in time may still deliver: 502 outcome unknown, Vonage not tried."""
    config = sms_config(fake_vonage, fake_aliyun)
    config["sms"]["endpoints"]["aliyun"]["timeout_seconds"] = 0.3
    client = await service(config)
    fake_aliyun.reply_next(aliyun_fakes.aliyun_slow(3))
    status, body, _, _ = await send(client, CHINA)
    assert status == 502 and body["error"]["code"] == "provider_outcome_unknown"
    assert len(fake_aliyun.sms) == 1 and fake_vonage.requests == []


@pytest.mark.parametrize(
    ("lists", "to"),
    [
        ({"allow_countries": ["CN", "FR"]}, "+85291234567"),
        ({"allow_countries": ["cn", "fr"]}, "+12025550143"),
        ({"deny_countries": ["HK"]}, "+85291234567"),
        ({"deny_countries": ["CN"]}, CHINA),
        ({}, "+19005550123"),  # a US premium-rate number
    ],
)
async def test_destination_not_allowed_is_403_and_never_sent(
    service: ClientFactory,
    fake_vonage: FakeVonage,
    fake_aliyun: FakeAliyun,
    lists: dict[str, Any],
    to: str,
) -> None:
    """Countries outside allow_countries, in deny_countries, or premium-rate: 403, nothing sent."""
    client = await service(sms_config(fake_vonage, fake_aliyun, **lists))
    status, body, _, _ = await send(client, to)
    assert status == 403 and body["error"]["code"] == "destination_not_allowed"
    assert fake_vonage.requests == [] and fake_aliyun.requests == []


async def test_allowed_country_still_delivered(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """A number of an allowed country goes through while others are refused."""
    client = await service(sms_config(fake_vonage, fake_aliyun, allow_countries=["CN", "FR"]))
    assert (await send(client, FRANCE))[0] == 200
    assert (await send(client, CHINA, code="777001"))[0] == 200
    assert (len(fake_vonage.sms), len(fake_aliyun.sms)) == (1, 1)


@pytest.mark.parametrize(
    "to", ["12", "+86 138", "not a number", "+99912345678", "+86 138 0013 8000 99", "13800138000"]
)
async def test_invalid_phone_is_400_and_never_sent(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun, to: str
) -> None:
    """A number that is not a valid phone number (here without default_region) is a 400."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    status, body, _, _ = await send(client, to)
    assert status == 400 and body["error"]["code"] == "invalid_phone"
    assert fake_vonage.requests == [] and fake_aliyun.requests == []


LONG = "Your Acme sign-in code is {{code}}. " + "Never share it with anyone. " * 6


@pytest.mark.parametrize("source", ["template-directory", "vonage-json"])
async def test_sms_over_max_segments_is_422_and_never_sent(
    service: ClientFactory,
    fake_vonage: FakeVonage,
    fake_aliyun: FakeAliyun,
    tmp_path: Path,
    source: str,
) -> None:
    """A text longer than max_segments allows is refused with 422 sms_too_long, never sent."""
    config = sms_config(fake_vonage, fake_aliyun, max_segments=1)
    if source == "template-directory":
        write_tree(tmp_path, {"sms/en/SignIn.txt": LONG, "sms/en/Generic.txt": "Code {{code}}"})
        config["templates"] = {"directory": str(tmp_path)}
    else:
        templates = config["sms"]["vonage"]["templates"]
        templates[:] = [
            t | {"content": LONG} if t["usageType"] == "SignIn" else t for t in templates
        ]
    client = await service(config)
    status, body, _, text = await send(client, FRANCE)
    assert status == 422 and body["error"]["code"] == "sms_too_long"
    assert "2 segments" in body["error"]["message"] and CODE not in text
    assert fake_vonage.requests == []
    status, _, _, _ = await send(client, FRANCE, usage="Generic", code="777001")
    assert status == 200 and len(fake_vonage.sms) == 1


async def test_vonage_json_template_is_the_text_sent(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """The pasted Vonage connector template, placeholders filled, is exactly what Vonage gets."""
    client = await service(sms_config(fake_vonage, fake_aliyun))
    status, _, _, _ = await send(client, FRANCE)
    assert status == 200
    assert [f["text"] for f in fake_vonage.sms] == [f"Acme SignIn: your code is {CODE}"]


@pytest.mark.parametrize(
    "failure",
    [
        ("vonage", vonage_status("6", f"Invalid Message: Your code is {CODE}")),
        ("aliyun", aliyun_business("isv.INVALID_PARAMETERS", f'TemplateParam {{"code":"{CODE}"}}')),
        ("aliyun", aliyun_error(400, "InvalidParameter", f"code={CODE} is not allowed")),
    ],
    ids=["vonage-error-text", "aliyun-business-message", "aliyun-client-error"],
)
async def test_code_never_in_error_body(
    service: ClientFactory,
    fake_vonage: FakeVonage,
    fake_aliyun: FakeAliyun,
    failure: tuple[str, Any],
) -> None:
    """A provider echoing the one-time code in its error never puts the code in our answer."""
    provider, reply = failure
    routes = [{"providers": [provider]}]
    client = await service(sms_config(fake_vonage, fake_aliyun, routes=routes))
    (fake_vonage if provider == "vonage" else fake_aliyun).reply_next(reply)
    status, body, _, text = await send(client, CHINA)
    assert status == 502 and body["error"]["code"] == "provider_rejected"
    assert CODE not in text and "******" in body["error"]["message"]


async def test_sms_attempt_without_answer_in_time_is_not_resent(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """An SMS attempt past delivery.timeout_seconds is an unknown outcome: 502, no failover."""
    config = sms_config(fake_vonage, fake_aliyun)
    config["sms"]["endpoints"]["aliyun"]["timeout_seconds"] = 10  # the SDK would wait this long
    config["delivery"] |= {"timeout_seconds": 0.3}
    client = await service(config)
    fake_aliyun.reply_next(aliyun_fakes.aliyun_slow(2))
    status, body, _, _ = await send(client, CHINA)
    assert status == 502 and body["error"]["code"] == "provider_outcome_unknown"
    assert (len(fake_aliyun.sms), len(fake_vonage.sms)) == (1, 0)


def test_routes_without_catch_all_need_a_real_default_provider(
    fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Routing only +86 while sms.provider stays capture would silently capture other numbers."""
    from otp_service.config import parse_config
    from otp_service.errors import ConfigError

    config = sms_config(
        fake_vonage, fake_aliyun, routes=[{"prefixes": ["+86"], "providers": ["aliyun"]}]
    )
    config["sms"]["provider"] = "capture"
    with pytest.raises(ConfigError) as caught:
        parse_config(config)
    assert [p.path for p in caught.value.problems] == ["sms.provider"]


async def test_sms_cut_by_shutdown_is_marked_failed_not_resent(
    service: ClientFactory, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """A shutdown that cuts an SMS attempt marks it failed: the next start does not text again."""
    config = sms_config(fake_vonage, fake_aliyun)
    config["delivery"] |= {"wait_seconds": 0.2, "shutdown_grace_seconds": 0.2}
    first = await service(config)
    fake_aliyun.reply_next(aliyun_fakes.aliyun_slow(1.5))
    status, body, _, _ = await send(first, CHINA)
    assert status == 202
    await first.close()  # SIGTERM's path: the grace runs out with the attempt in flight
    second = await service(config)
    record = await (await second.get(f"/v1/messages/{body['id']}")).json()
    assert record["status"] == "failed" and "shutdown" in record["error"]
    await asyncio.sleep(0.3)  # a resend by the new worker would have reached the fakes by now
    assert (len(fake_aliyun.sms), len(fake_vonage.sms)) == (1, 0)
