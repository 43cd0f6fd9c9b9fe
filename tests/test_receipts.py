"""Delivery receipts end to end: the service on a known port (its ``server.public_url``), the
fakes of Vonage, Twilio and Aliyun sending receipts as the providers do (Vonage and Twilio
calling the callback each SMS named, Aliyun answering ``QuerySendDetails`` and pushing
reports), and what the operator sees: the delivery state in ``GET /v1/messages/{id}`` and the
metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from otp_service.config import parse_config
from otp_service.http.app import create_app
from otp_service.http.context import SERVICES
from otp_service.logs import JsonFormatter, TextFormatter

from .support.fakes import aliyun as aliyun_fakes
from .support.fakes import twilio as twilio_fakes
from .support.fakes import vonage as vonage_fakes
from .support.fakes.aliyun import FakeAliyun, logto_aliyun_json
from .support.fakes.twilio import FakeTwilio, logto_twilio_json
from .support.fakes.vonage import FakeVonage, logto_vonage_json
from .support.pace import most_in_window, paced_bound
from .support.ports import free_port

fake_vonage = vonage_fakes.fake_vonage
fake_aliyun = aliyun_fakes.fake_aliyun
fake_twilio = twilio_fakes.fake_twilio

CODE = "482913"
FRANCE = "+33612345678"
CHINA = "+8613800138000"
TOKEN = "bearer-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPORT_TOKEN = "aliyun-report-token-0123456789"
Started = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def receipts_service(aiohttp_client: Any) -> Started:
    """The service listening on a port chosen first, so its ``server.public_url`` (where the
    fakes call back) is known before it starts."""

    async def start(config: dict[str, Any]) -> TestClient[Any, Any]:
        port = free_port()
        config = config | {"server": {"public_url": f"http://127.0.0.1:{port}"}}
        app = create_app(parse_config(config | {"auth": {"tokens": [TOKEN]}}))
        client: TestClient[Any, Any] = await aiohttp_client(app, server_kwargs={"port": port})
        return client

    return start


def sms_config(
    vonage: FakeVonage | None = None, aliyun: FakeAliyun | None = None, **sms: Any
) -> dict[str, Any]:
    """Vonage (and Aliyun for +86, then Vonage) from Logto's JSON, aimed at the fakes."""
    section: dict[str, Any] = {"provider": "vonage" if vonage else "aliyun", "endpoints": {}}
    if vonage is not None:
        section["vonage"] = logto_vonage_json(**sms.pop("vonage_json", {}))
        section["endpoints"]["vonage"] = vonage.endpoint()
    if aliyun is not None:
        token = sms.pop("report_token", None)
        section["aliyun"] = logto_aliyun_json(**({"reportToken": token} if token else {}))
        section["endpoints"]["aliyun"] = aliyun.endpoint()
    if vonage is not None and aliyun is not None:
        section["routes"] = [
            {"prefixes": ["+86"], "providers": ["aliyun", "vonage"]},
            {"providers": ["vonage"]},
        ]
    delivery = {"retry_delay_seconds": 0.01, "wait_seconds": 2}
    return {"sms": section | sms, "delivery": delivery}


async def send(client: TestClient[Any, Any], to: str, code: str = CODE) -> str:
    """POST /v1/sms as Logto does; the message id once a provider took it."""
    body = {"to": to, "type": "SignIn", "payload": {"code": code, "locale": "en"}}
    response = await client.post("/v1/sms", json=body, headers=AUTH)
    answer = await response.json()
    assert response.status == 200, answer
    return str(answer["id"])


async def status(client: TestClient[Any, Any], message_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/messages/{message_id}", headers=AUTH)
    assert response.status == 200
    found: dict[str, Any] = await response.json()
    return found


async def delivery(client: TestClient[Any, Any], message_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await status(client, message_id))["delivery"]
    return found


async def until_state(
    client: TestClient[Any, Any], message_id: str, state: str, tries: int = 100
) -> dict[str, Any]:
    """The delivery once it reaches ``state`` (asked up to ``tries`` times, 0.1 s apart)."""
    for _ in range(tries):
        found = await delivery(client, message_id)
        if found["state"] == state:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{message_id} never became {state}: {found}")


async def metrics(client: TestClient[Any, Any]) -> str:
    response = await client.get("/metrics", headers=AUTH)
    return await response.text()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def vonage_call(fake: FakeVonage, params: dict[str, str], **how: Any) -> tuple[int, str]:
    result: tuple[int, str] = await asyncio.wrap_future(fake.send_receipt(params, **how))
    return result


async def test_vonage_delivered_receipt_shows_state_time_and_metrics(
    receipts_service: Started, fake_vonage: FakeVonage
) -> None:
    """Vonage calls the callback the SMS named; the message shows delivered with its time to
    the handset, counted by provider and country."""
    client = await receipts_service(sms_config(fake_vonage))
    message_id = await send(client, FRANCE)
    [accepted] = fake_vonage.accepted
    assert accepted["callback"] == f"http://127.0.0.1:{client.port}/v1/receipts/vonage"
    assert (await delivery(client, message_id))["state"] == "pending"
    answer, _ = await vonage_call(fake_vonage, fake_vonage.receipt())
    assert answer == 204
    shown = await delivery(client, message_id)
    assert shown["state"] == "delivered" and shown["final"] is True
    assert shown["provider"] == "vonage" and shown["provider_id"] == accepted["message-id"]
    assert shown["seconds_to_handset"] is not None and shown["seconds_to_handset"] >= 0
    text = await metrics(client)
    labels = {"provider": "vonage", "country": "FR", "state": "delivered"}
    assert sample(text, "otp_sms_delivery_total", **labels) == 1
    assert sample(text, "otp_sms_time_to_handset_seconds_count", provider="vonage") == 1
    assert sample(text, "otp_sms_receipts_total", provider="vonage", result="accepted") == 1


@pytest.mark.parametrize("how", [{"method": "GET"}, {"as_json": True}])
async def test_vonage_undelivered_receipt_by_get_or_json_shows_the_carrier_error(
    receipts_service: Started, fake_vonage: FakeVonage, how: dict[str, Any]
) -> None:
    """A failed DLR (GET or JSON POST, as the dashboard may be set) shows undelivered with
    the err-code and its meaning."""
    client = await receipts_service(sms_config(fake_vonage))
    message_id = await send(client, FRANCE)
    params = fake_vonage.receipt(status="failed", err_code="3")
    assert (await vonage_call(fake_vonage, params, **how))[0] == 204
    shown = await delivery(client, message_id)
    assert shown["state"] == "undelivered"
    assert "err-code 3" in shown["error"] and "absent subscriber" in shown["error"]
    [attempt] = (await status(client, message_id))["attempts"]
    assert attempt["receipt"] == "undelivered" and "err-code 3" in attempt["receipt_error"]
    labels = {"provider": "vonage", "country": "FR", "state": "undelivered"}
    assert sample(await metrics(client), "otp_sms_delivery_total", **labels) == 1


async def test_vonage_repeated_receipt_changes_nothing(
    receipts_service: Started, fake_vonage: FakeVonage
) -> None:
    """The same receipt twice is answered 204 both times and counted once as delivered."""
    client = await receipts_service(sms_config(fake_vonage))
    message_id = await send(client, FRANCE)
    params = fake_vonage.receipt()
    assert (await vonage_call(fake_vonage, params))[0] == 204
    first = await delivery(client, message_id)
    assert (await vonage_call(fake_vonage, params))[0] == 204
    assert await delivery(client, message_id) == first
    text = await metrics(client)
    labels = {"provider": "vonage", "country": "FR", "state": "delivered"}
    assert sample(text, "otp_sms_delivery_total", **labels) == 1
    assert sample(text, "otp_sms_receipts_total", provider="vonage", result="duplicate") == 1


async def test_vonage_late_and_out_of_order_receipts_keep_the_final_state(
    receipts_service: Started, fake_vonage: FakeVonage
) -> None:
    """A late intermediate receipt (buffered, accepted) never overwrites delivered; a failed
    one after delivered does not either (the handset had it)."""
    client = await receipts_service(sms_config(fake_vonage))
    message_id = await send(client, FRANCE)
    await vonage_call(fake_vonage, fake_vonage.receipt(status="accepted"))
    assert (await delivery(client, message_id))["state"] == "pending"
    await vonage_call(fake_vonage, fake_vonage.receipt(status="delivered"))
    for late in ("buffered", "accepted", "failed", "expired"):
        assert (await vonage_call(fake_vonage, fake_vonage.receipt(status=late)))[0] == 204
    shown = await delivery(client, message_id)
    assert shown["state"] == "delivered" and shown["error"] is None


async def test_vonage_delivered_after_undelivered_wins(
    receipts_service: Started, fake_vonage: FakeVonage
) -> None:
    """Out of order the other way: a delivered receipt after a failed one moves it up."""
    client = await receipts_service(sms_config(fake_vonage))
    message_id = await send(client, FRANCE)
    await vonage_call(fake_vonage, fake_vonage.receipt(status="failed", err_code="8"))
    await vonage_call(fake_vonage, fake_vonage.receipt(status="delivered"))
    assert (await delivery(client, message_id))["state"] == "delivered"


@pytest.mark.parametrize("method", ["md5hash", "sha256", "sha512"])
async def test_vonage_signed_receipt_is_taken(
    receipts_service: Started, fake_vonage: FakeVonage, method: str
) -> None:
    """With signatureSecret set, a receipt signed with it (the account's method) is taken."""
    secret = "VonageSignatureSecret123"
    vonage_json = {"signatureSecret": secret, "signatureMethod": method}
    client = await receipts_service(sms_config(fake_vonage, vonage_json=vonage_json))
    message_id = await send(client, FRANCE)
    params = fake_vonage.receipt(signed=(secret, method))
    assert (await vonage_call(fake_vonage, params))[0] == 204
    assert (await delivery(client, message_id))["state"] == "delivered"


async def test_vonage_unsigned_and_forged_receipts_are_refused_and_counted(
    receipts_service: Started, fake_vonage: FakeVonage
) -> None:
    """With signatureSecret set: no signature is 401 receipt_unsigned; another secret, or a
    status changed after signing, is 401 receipt_forged; the state never moves."""
    secret = "VonageSignatureSecret123"
    client = await receipts_service(
        sms_config(fake_vonage, vonage_json={"signatureSecret": secret})
    )
    message_id = await send(client, FRANCE)
    status_code, body = await vonage_call(fake_vonage, fake_vonage.receipt(status="failed"))
    assert status_code == 401 and json.loads(body)["error"]["code"] == "receipt_unsigned"
    forged = fake_vonage.receipt(status="failed", signed=("AnotherSecret", "md5hash"))
    status_code, body = await vonage_call(fake_vonage, forged)
    assert status_code == 401 and json.loads(body)["error"]["code"] == "receipt_forged"
    tampered = fake_vonage.receipt(status="delivered", signed=(secret, "md5hash"))
    tampered["status"] = "failed"
    assert (await vonage_call(fake_vonage, tampered))[0] == 401
    assert secret not in body
    assert (await delivery(client, message_id))["state"] == "pending"
    text = await metrics(client)
    assert sample(text, "otp_sms_receipts_total", provider="vonage", result="unsigned") == 1
    assert sample(text, "otp_sms_receipts_total", provider="vonage", result="forged") == 2


async def test_vonage_receipt_cannot_touch_another_message(
    receipts_service: Started, fake_vonage: FakeVonage
) -> None:
    """A receipt naming another number than the message's is 403 receipt_mismatch; one for
    an id we never sent is 404 receipt_unmatched; neither changes anything."""
    client = await receipts_service(sms_config(fake_vonage))
    message_id = await send(client, FRANCE)
    other = fake_vonage.receipt(status="failed", msisdn="33698765432")
    status_code, body = await vonage_call(fake_vonage, other)
    assert status_code == 403 and json.loads(body)["error"]["code"] == "receipt_mismatch"
    unknown = fake_vonage.receipt(status="failed", messageId="0B00000000000000")
    url = fake_vonage.accepted[0]["callback"]
    status_code, body = await vonage_call(fake_vonage, unknown, url=url)
    assert status_code == 404 and json.loads(body)["error"]["code"] == "receipt_unmatched"
    assert (await delivery(client, message_id))["state"] == "pending"


async def test_vonage_malformed_receipt_is_refused(
    receipts_service: Started, fake_vonage: FakeVonage
) -> None:
    """A receipt without messageId, or with a status Vonage does not send, is 400."""
    client = await receipts_service(sms_config(fake_vonage))
    await send(client, FRANCE)
    url = fake_vonage.accepted[0]["callback"]
    for params in ({"status": "delivered"}, fake_vonage.receipt(status="teleported")):
        status_code, body = await vonage_call(fake_vonage, params, url=url)
        assert status_code == 400 and json.loads(body)["error"]["code"] == "receipt_invalid"


async def test_receipt_routes_need_no_bearer_token_but_the_status_does(
    receipts_service: Started, fake_vonage: FakeVonage
) -> None:
    """Providers cannot send our bearer token: the receipt route takes none (the message
    status still wants it)."""
    client = await receipts_service(sms_config(fake_vonage))
    message_id = await send(client, FRANCE)
    response = await client.post("/v1/receipts/vonage", data=fake_vonage.receipt())
    assert response.status == 204
    assert (await client.get(f"/v1/messages/{message_id}")).status == 401


async def test_aliyun_receipt_polled_with_query_send_details(
    receipts_service: Started, fake_aliyun: FakeAliyun
) -> None:
    """An Aliyun SMS waits (SendStatus 1) until QuerySendDetails answers delivered; the poll
    asked with the number, BizId and send date as the API wants them."""
    client = await receipts_service(sms_config(aliyun=fake_aliyun, receipt_poll_seconds=1))
    message_id = await send(client, CHINA)
    [biz_id] = fake_aliyun.biz_ids
    for _ in range(100):  # the first poll asked and found it waiting
        if fake_aliyun.queries:
            break
        await asyncio.sleep(0.1)
    query = fake_aliyun.queries[0]
    assert (query["PhoneNumber"], query["BizId"]) == ("13800138000", biz_id)
    assert re.fullmatch(r"20\d{6}", query["SendDate"]) and query["PageSize"] == "10"
    fake_aliyun.report(biz_id, 3)
    shown = await until_state(client, message_id, "delivered")
    assert shown["provider"] == "aliyun" and shown["provider_id"] == biz_id
    labels = {"provider": "aliyun", "country": "CN", "state": "delivered"}
    assert sample(await metrics(client), "otp_sms_delivery_total", **labels) == 1


async def test_aliyun_failed_report_polled_shows_the_carrier_code(
    receipts_service: Started, fake_aliyun: FakeAliyun
) -> None:
    """SendStatus 2 with the carrier's ErrCode becomes undelivered with that code."""
    client = await receipts_service(sms_config(aliyun=fake_aliyun, receipt_poll_seconds=1))
    message_id = await send(client, CHINA)
    fake_aliyun.report(fake_aliyun.biz_ids[0], 2, "MK:0001")
    shown = await until_state(client, message_id, "undelivered")
    assert shown["error"].startswith("MK:0001: ")


POLL_BATCH = 50  # docs/receipts.md: QuerySendDetails "up to 50 per round"


def china(number: int) -> str:
    """A Chinese mobile number of its own (Aliyun), ``number`` in its last digits."""
    return f"+86138{number:08d}"


async def send_waiting(client: TestClient[Any, Any], count: int) -> list[str]:
    """Send ``count`` SMS to as many Chinese numbers, one after the other; their ids once each
    has its attempt recorded (pending: what a poll asks about)."""
    ids = [await send(client, china(number)) for number in range(count)]
    for message_id in ids:
        await until_state(client, message_id, "pending")
    return ids


async def test_aliyun_poll_round_asks_at_most_a_batch_and_the_next_moves_on(
    receipts_service: Started, fake_aliyun: FakeAliyun
) -> None:
    """With 60 SMS waiting, one poll round calls QuerySendDetails about the 50 oldest, the next
    about the other 10, the one after starts over at the oldest."""
    # The worker's own round comes once, at start (nothing waits yet): the rounds are the test's.
    sms = sms_config(aliyun=fake_aliyun, receipt_poll_seconds=3600, receipt_query_rate=200)
    client = await receipts_service(sms | {"limits": {"enabled": False}})
    await send_waiting(client, POLL_BATCH + 10)
    oldest_first = fake_aliyun.biz_ids
    desk = client.app[SERVICES].outbox.receipts
    assert desk is not None
    rounds = []
    for _ in range(3):  # the worker's round, three times
        before = len(fake_aliyun.queries)
        asked = await desk.poll(time.time())
        rounds.append([q["BizId"] for q in fake_aliyun.queries[before:]])
        assert asked == len(rounds[-1])
    assert [len(batch) for batch in rounds] == [POLL_BATCH, 10, POLL_BATCH]
    assert rounds == [
        oldest_first[:POLL_BATCH],
        oldest_first[POLL_BATCH:],
        oldest_first[:POLL_BATCH],
    ]


@pytest.mark.slow
async def test_aliyun_receipt_queries_keep_to_the_query_rate(
    receipts_service: Started, fake_aliyun: FakeAliyun
) -> None:
    """sms.receipt_query_rate 5/s, 20 SMS waiting, a round every second: the worker's rounds
    call QuerySendDetails at most 1 + 5 t times in any t seconds, as the fake counts them."""
    rate, window, slack = 5.0, 1.0, 0.5
    sms = sms_config(aliyun=fake_aliyun, receipt_poll_seconds=1, receipt_query_rate=rate)
    client = await receipts_service(sms | {"limits": {"enabled": False}})
    await send_waiting(client, 20)
    for _ in range(300):
        if len(fake_aliyun.queries) >= 12:
            break
        await asyncio.sleep(0.1)
    times = fake_aliyun.query_times
    assert len(times) >= 12, times
    assert most_in_window(times, window) <= paced_bound(rate, window, slack), times


async def test_aliyun_pushed_reports_are_taken_with_the_token(
    receipts_service: Started, fake_aliyun: FakeAliyun
) -> None:
    """The SmsReport push to /v1/receipts/aliyun?token= is answered {"code": 0}; a repeat
    of the batch changes nothing."""
    config = sms_config(aliyun=fake_aliyun, report_token=REPORT_TOKEN)
    client = await receipts_service(config)
    first, second = await send(client, CHINA), await send(client, "+8613900139000", "111222")
    ok, failed = fake_aliyun.biz_ids
    body = [
        fake_aliyun.push_report(ok, True),
        fake_aliyun.push_report(failed, False, "MK:0004", "用户关机"),
    ]
    url = f"http://127.0.0.1:{client.port}/v1/receipts/aliyun?token={REPORT_TOKEN}"
    for _ in range(2):
        status_code, answer = await asyncio.wrap_future(fake_aliyun.push_reports(url, body))
        assert status_code == 200 and json.loads(answer)["code"] == 0
    assert (await delivery(client, first))["state"] == "delivered"
    shown = await delivery(client, second)
    assert shown["state"] == "undelivered" and shown["error"] == "MK:0004: 用户关机"
    text = await metrics(client)
    assert sample(text, "otp_sms_receipts_total", provider="aliyun", result="duplicate") == 2


@pytest.mark.parametrize(
    ("query", "expected"),
    [("", "receipt_unsigned"), ("?token=aliyun-report-token-9999999999", "receipt_forged")],
)
async def test_aliyun_push_without_the_token_is_refused(
    receipts_service: Started, fake_aliyun: FakeAliyun, query: str, expected: str
) -> None:
    """A push without the configured token, or with another, is 401 and changes nothing."""
    config = sms_config(aliyun=fake_aliyun, report_token=REPORT_TOKEN)
    client = await receipts_service(config)
    message_id = await send(client, CHINA)
    body = [fake_aliyun.push_report(fake_aliyun.biz_ids[0], False, "MK:0001")]
    url = f"http://127.0.0.1:{client.port}/v1/receipts/aliyun{query}"
    status_code, answer = await asyncio.wrap_future(fake_aliyun.push_reports(url, body))
    assert status_code == 401 and json.loads(answer)["error"]["code"] == expected
    assert (await delivery(client, message_id))["state"] == "pending"


async def test_aliyun_push_not_configured_is_refused(
    receipts_service: Started, fake_aliyun: FakeAliyun
) -> None:
    """Without the connector's reportToken the push route is 404 receipt_not_configured."""
    client = await receipts_service(sms_config(aliyun=fake_aliyun))
    response = await client.post("/v1/receipts/aliyun?token=x", json=[])
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "receipt_not_configured"


async def test_aliyun_push_malformed_is_refused(
    receipts_service: Started, fake_aliyun: FakeAliyun
) -> None:
    """A pushed body that is not the documented array of reports is 400 receipt_invalid."""
    config = sms_config(aliyun=fake_aliyun, report_token=REPORT_TOKEN)
    client = await receipts_service(config)
    for body in ({"biz_id": "1"}, [{"success": True}], [{"biz_id": "1", "success": "yes"}]):
        response = await client.post(f"/v1/receipts/aliyun?token={REPORT_TOKEN}", json=body)
        assert response.status == 400, body
        assert (await response.json())["error"]["code"] == "receipt_invalid"


async def test_failover_on_undelivered_resends_once_through_the_next_provider(
    receipts_service: Started, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """With sms.failover_on_undelivered, Aliyun's undelivered report resends the same code
    through Vonage (the route's next provider), once: a repeated report, or Vonage's own
    failure, sends nothing more."""
    config = sms_config(
        fake_vonage, fake_aliyun, failover_on_undelivered=True, report_token=REPORT_TOKEN
    )
    client = await receipts_service(config)
    message_id = await send(client, CHINA)
    body = [fake_aliyun.push_report(fake_aliyun.biz_ids[0], False, "MK:0001")]
    url = f"http://127.0.0.1:{client.port}/v1/receipts/aliyun?token={REPORT_TOKEN}"
    await asyncio.wrap_future(fake_aliyun.push_reports(url, body))
    shown = await until_state(client, message_id, "pending")
    for _ in range(100):
        shown = await delivery(client, message_id)
        if shown["provider"] == "vonage":
            break
        await asyncio.sleep(0.1)
    assert shown["provider"] == "vonage" and shown["resent"] is True
    [resent] = fake_vonage.sms
    assert CODE in resent["text"] and resent["to"] == CHINA.lstrip("+")
    found = await status(client, message_id)
    assert [a["provider"] for a in found["attempts"]] == ["aliyun", "vonage"]
    assert found["attempts"][0]["receipt"] == "undelivered"
    await asyncio.wrap_future(fake_aliyun.push_reports(url, body))
    await vonage_call(fake_vonage, fake_vonage.receipt(status="failed", err_code="9"))
    assert (await delivery(client, message_id))["state"] == "undelivered"
    await asyncio.sleep(0.3)  # room for a wrong second resend to show
    assert len(fake_vonage.sms) == 1
    assert sample(await metrics(client), "otp_sms_undelivered_failovers_total") == 1


async def test_failover_on_undelivered_is_off_by_default(
    receipts_service: Started, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """Without the setting an undelivered report is shown, and nothing is resent."""
    config = sms_config(fake_vonage, fake_aliyun, report_token=REPORT_TOKEN)
    client = await receipts_service(config)
    message_id = await send(client, CHINA)
    body = [fake_aliyun.push_report(fake_aliyun.biz_ids[0], False, "MK:0001")]
    url = f"http://127.0.0.1:{client.port}/v1/receipts/aliyun?token={REPORT_TOKEN}"
    await asyncio.wrap_future(fake_aliyun.push_reports(url, body))
    assert (await delivery(client, message_id))["state"] == "undelivered"
    await asyncio.sleep(0.3)
    assert fake_vonage.sms == []


async def test_failover_never_after_the_first_turned_delivered(
    receipts_service: Started, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """A delivered report before the undelivered one (out of order) leaves it delivered:
    nothing is resent."""
    config = sms_config(
        fake_vonage, fake_aliyun, failover_on_undelivered=True, report_token=REPORT_TOKEN
    )
    client = await receipts_service(config)
    message_id = await send(client, CHINA)
    biz_id = fake_aliyun.biz_ids[0]
    url = f"http://127.0.0.1:{client.port}/v1/receipts/aliyun?token={REPORT_TOKEN}"
    await asyncio.wrap_future(
        fake_aliyun.push_reports(url, [fake_aliyun.push_report(biz_id, True)])
    )
    failed = [fake_aliyun.push_report(biz_id, False, "MK:0001")]
    await asyncio.wrap_future(fake_aliyun.push_reports(url, failed))
    await asyncio.sleep(0.3)
    assert fake_vonage.sms == []
    assert (await delivery(client, message_id))["state"] == "delivered"


async def test_capture_mode_simulates_receipts(receipts_service: Started) -> None:
    """In capture mode every SMS gets a simulated receipt: delivered, or undelivered for
    numbers capture.sms_undelivered finds."""
    client = await receipts_service({"capture": {"sms_undelivered": r"^\+1202"}})
    delivered = await send(client, FRANCE)
    failed = await send(client, "+12025550143")
    assert (await delivery(client, delivered))["state"] == "delivered"
    shown = await delivery(client, failed)
    assert shown["state"] == "undelivered" and "simulated" in shown["error"]
    labels = {"provider": "capture", "country": "US", "state": "undelivered"}
    assert sample(await metrics(client), "otp_sms_delivery_total", **labels) == 1


async def test_no_receipt_before_the_horizon_is_unknown(
    receipts_service: Started, fake_vonage: FakeVonage
) -> None:
    """An SMS without a final receipt once sms.receipt_horizon_seconds passed is unknown,
    counted once; a late receipt still moves it on."""
    client = await receipts_service(sms_config(fake_vonage, receipt_horizon_seconds=60))
    message_id = await send(client, FRANCE)
    desk = client.app[SERVICES].outbox.receipts
    assert desk is not None
    await desk.tend(time.time() + 61)  # the worker's round, a minute later
    shown = await delivery(client, message_id)
    assert shown["state"] == "unknown" and shown["final"] is False
    labels = {"provider": "vonage", "country": "FR", "state": "unknown"}
    assert sample(await metrics(client), "otp_sms_delivery_total", **labels) == 1
    await vonage_call(fake_vonage, fake_vonage.receipt())
    assert (await delivery(client, message_id))["state"] == "delivered"


async def test_receipt_states_are_logged_once_each_with_the_number_masked(
    receipts_service: Started, fake_vonage: FakeVonage, caplog: pytest.LogCaptureFixture
) -> None:
    """Each SMS reaching delivered, undelivered or unknown is logged once (repeated receipts
    and sweeps log nothing more), with the message id, provider, provider id, masked number,
    time to handset or the carrier's error; no log line holds a full number or the code."""
    caplog.set_level(logging.DEBUG, logger="otp_service")
    client = await receipts_service(sms_config(fake_vonage, receipt_horizon_seconds=60))
    numbers = {"delivered": "+33612340001", "undelivered": "+33612340002",
               "unknown": "+33612340003"}  # fmt: skip
    ids = {state: await send(client, to) for state, to in numbers.items()}
    for message_id in ids.values():
        await until_state(client, message_id, "pending")
    for _ in range(2):  # the second time a repeat
        assert (await vonage_call(fake_vonage, fake_vonage.receipt(0)))[0] == 204
        failed = fake_vonage.receipt(1, status="failed", err_code="3")
        assert (await vonage_call(fake_vonage, failed))[0] == 204
    desk = client.app[SERVICES].outbox.receipts
    assert desk is not None
    for later in (61, 72):  # two sweeps past the horizon (they run 10 s apart)
        await desk.tend(time.time() + later)
    assert (await delivery(client, ids["unknown"]))["state"] == "unknown"

    ours = [r for r in caplog.records if r.name.startswith("otp_service")]
    lines = [json.loads(JsonFormatter().format(r)) for r in ours]
    logged = [line for line in lines if line["event"].startswith("receipt ")]
    assert sorted(line["event"] for line in logged) == [
        "receipt delivered", "receipt undelivered", "receipt unknown",
    ]  # fmt: skip
    levels = {"delivered": "INFO", "undelivered": "WARNING", "unknown": "WARNING"}
    for index, (state, to) in enumerate(numbers.items()):
        [line] = [line for line in logged if line["event"] == f"receipt {state}"]
        assert line["level"] == levels[state]
        assert line["id"] == ids[state] and line["channel"] == "sms"
        assert line["to"] == f"+33***{to[-4:]}"
        assert line["provider"] == "vonage"
        assert line["provider_id"] == fake_vonage.accepted[index]["message-id"]
    by_state = {line["event"].split()[1]: line for line in logged}
    assert by_state["delivered"]["to_handset_s"] >= 0 and "error" not in by_state["delivered"]
    failed_error = by_state["undelivered"]["error"]
    assert "err-code 3" in failed_error and "absent subscriber" in failed_error
    assert "to_handset_s" not in by_state["undelivered"]
    assert by_state["unknown"]["error"] == "no final receipt within the horizon"
    text = "\n".join(TextFormatter().format(r) for r in ours) + json.dumps(lines)
    for to in numbers.values():
        assert to[1:] not in text and to[3:] not in text  # neither +33612340001 nor 612340001
    assert CODE not in text


@pytest.mark.postgres
async def test_receipts_and_failover_with_postgresql(
    receipts_service: Started,
    fake_vonage: FakeVonage,
    fake_aliyun: FakeAliyun,
    pg_schema: tuple[str, str],
) -> None:
    """With the shared store: Aliyun's undelivered report resends through Vonage once, and
    Vonage's delivered receipt for the resend shows delivered."""
    url, schema = pg_schema
    config = sms_config(
        fake_vonage, fake_aliyun, failover_on_undelivered=True, report_token=REPORT_TOKEN
    ) | {"store": {"url": url, "schema": schema}}
    client = await receipts_service(config)
    message_id = await send(client, CHINA)
    body = [fake_aliyun.push_report(fake_aliyun.biz_ids[0], False, "MK:0001")]
    push = f"http://127.0.0.1:{client.port}/v1/receipts/aliyun?token={REPORT_TOKEN}"
    await asyncio.wrap_future(fake_aliyun.push_reports(push, body))
    for _ in range(100):
        if fake_vonage.accepted:
            break
        await asyncio.sleep(0.1)
    assert [CODE in sms["text"] for sms in fake_vonage.sms] == [True]
    assert (await vonage_call(fake_vonage, fake_vonage.receipt()))[0] == 204
    shown = await until_state(client, message_id, "delivered")
    assert shown["provider"] == "vonage" and shown["resent"] is True
    await asyncio.wrap_future(fake_aliyun.push_reports(push, body))
    await asyncio.sleep(0.3)
    assert len(fake_vonage.sms) == 1


def twilio_config(
    twilio: FakeTwilio, vonage: FakeVonage | None = None, **sms: Any
) -> dict[str, Any]:
    """Twilio from Logto's JSON at the fake; Vonage after it in the route when given."""
    section: dict[str, Any] = {
        "provider": "twilio",
        "twilio": logto_twilio_json(),
        "endpoints": {"twilio": twilio.endpoint()},
    }
    if vonage is not None:
        section["vonage"] = logto_vonage_json()
        section["endpoints"]["vonage"] = vonage.endpoint()
        section["routes"] = [{"providers": ["twilio", "vonage"]}]
    return {"sms": section | sms, "delivery": {"retry_delay_seconds": 0.01, "wait_seconds": 2}}


async def test_twilio_status_callbacks_move_the_state(
    receipts_service: Started, fake_twilio: FakeTwilio
) -> None:
    """Each SMS names its StatusCallback; Twilio's signed callbacks (sent, then delivered) are
    taken, a late "sent" changes nothing."""
    client = await receipts_service(twilio_config(fake_twilio))
    message_id = await send(client, FRANCE)
    [created] = fake_twilio.created
    assert created.status_callback == f"http://127.0.0.1:{client.port}/v1/receipts/twilio"
    assert await fake_twilio.send_status(created.sid, "sent") == 204
    assert (await delivery(client, message_id))["state"] == "pending"
    assert await fake_twilio.send_status(created.sid, "delivered") == 204
    assert await fake_twilio.send_status(created.sid, "sent") == 204
    shown = await delivery(client, message_id)
    assert shown["state"] == "delivered" and shown["provider_id"] == created.sid
    labels = {"provider": "twilio", "country": "FR", "state": "delivered"}
    assert sample(await metrics(client), "otp_sms_delivery_total", **labels) == 1


async def test_twilio_undelivered_status_shows_the_error_meaning(
    receipts_service: Started, fake_twilio: FakeTwilio
) -> None:
    """An undelivered status with ErrorCode 30003 shows the code and what it means."""
    client = await receipts_service(twilio_config(fake_twilio))
    message_id = await send(client, FRANCE)
    sid = fake_twilio.created[0].sid
    assert await fake_twilio.send_status(sid, "undelivered", error_code=30003) == 204
    shown = await delivery(client, message_id)
    assert shown["state"] == "undelivered"
    assert "30003" in shown["error"] and "unreachable" in shown["error"]


async def test_twilio_unsigned_and_forged_status_callbacks_are_refused(
    receipts_service: Started, fake_twilio: FakeTwilio
) -> None:
    """No X-Twilio-Signature is 401; one made with another token, or a status changed after
    signing, is 401 too; nothing moves and each is counted."""
    client = await receipts_service(twilio_config(fake_twilio))
    message_id = await send(client, FRANCE)
    sid = fake_twilio.created[0].sid
    assert await fake_twilio.send_status(sid, "undelivered", signed=False) == 401
    other = "AnotherAuthT0kenValue1234567890a"
    assert await fake_twilio.send_status(sid, "undelivered", auth_token=other) == 401
    tampered = {"MessageStatus": "undelivered", "SmsStatus": "undelivered"}
    assert await fake_twilio.send_status(sid, "delivered", extra=tampered) == 401
    assert (await delivery(client, message_id))["state"] == "pending"
    text = await metrics(client)
    assert sample(text, "otp_sms_receipts_total", provider="twilio", result="unsigned") == 1
    assert sample(text, "otp_sms_receipts_total", provider="twilio", result="forged") == 2


async def test_twilio_undelivered_fails_over_to_vonage_once(
    receipts_service: Started, fake_twilio: FakeTwilio, fake_vonage: FakeVonage
) -> None:
    """With failover on, Twilio's undelivered status resends the code through Vonage once;
    a repeated callback resends nothing more."""
    client = await receipts_service(
        twilio_config(fake_twilio, fake_vonage, failover_on_undelivered=True)
    )
    message_id = await send(client, FRANCE)
    sid = fake_twilio.created[0].sid
    for _ in range(2):
        assert await fake_twilio.send_status(sid, "undelivered", error_code=30005) == 204
    for _ in range(100):
        if fake_vonage.accepted:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # room for a wrong second resend to show
    [resent] = fake_vonage.sms
    assert CODE in resent["text"]
    found = await status(client, message_id)
    assert [a["provider"] for a in found["attempts"]] == ["twilio", "vonage"]
    assert found["delivery"]["provider"] == "vonage" and found["delivery"]["resent"] is True


@pytest.mark.slow
async def test_failover_cancelled_when_the_first_turns_delivered_before_the_resend(
    receipts_service: Started, fake_vonage: FakeVonage, fake_aliyun: FakeAliyun
) -> None:
    """The resend waits for Vonage's pace (limits.provider_rate); a delivered report for the
    first attempt arriving meanwhile cancels it: Vonage never gets the code twice."""
    config = sms_config(
        fake_vonage, fake_aliyun, failover_on_undelivered=True, report_token=REPORT_TOKEN
    ) | {"limits": {"provider_rate": {"vonage": 0.5}}}
    client = await receipts_service(config)
    await send(client, FRANCE, "111222")  # takes Vonage's slot: the next waits ~2 s
    message_id = await send(client, CHINA)
    biz_id = fake_aliyun.biz_ids[0]
    url = f"http://127.0.0.1:{client.port}/v1/receipts/aliyun?token={REPORT_TOKEN}"
    failed = [fake_aliyun.push_report(biz_id, False, "MK:0001")]
    await asyncio.wrap_future(fake_aliyun.push_reports(url, failed))
    delivered = [fake_aliyun.push_report(biz_id, True)]
    await asyncio.wrap_future(fake_aliyun.push_reports(url, delivered))
    cancelled = 0.0
    for _ in range(100):
        text = await metrics(client)
        cancelled = sample(text, "otp_sms_undelivered_failovers_total", outcome="cancelled")
        if cancelled:
            break
        await asyncio.sleep(0.1)
    assert cancelled == 1
    assert [CODE in sms["text"] for sms in fake_vonage.sms] == [False]
    shown = await delivery(client, message_id)
    assert shown["state"] == "delivered" and shown["provider"] == "aliyun"
