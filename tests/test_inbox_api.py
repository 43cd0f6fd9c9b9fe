"""The capture inbox as an end-to-end test uses it: wait for a code, start afresh, no limits.

Everything over real HTTP against the service (aiohttp test server).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from otp_service.config import parse_config
from otp_service.http.app import create_app

from .support.arrival import handler_reached
from .support.service import ClientFactory
from .support.signin import ANA, signin


async def send(client: Any, body: dict[str, Any], channel: str = "email") -> dict[str, Any]:
    response = await client.post(f"/v1/{channel}", json=body)
    answer: dict[str, Any] = await response.json()
    assert response.status == 200, answer
    return answer


async def latest(client: Any, **params: Any) -> tuple[int, dict[str, Any]]:
    response = await client.get("/v1/messages/latest", params=params)
    return response.status, await response.json()


async def test_latest_wait_wakes_when_the_message_arrives(aiohttp_client: Any) -> None:
    """latest?wait= answers with the code that arrives while it waits, not a 404: the request is
    parked in its handler before the message is sent, and the message's arrival (not the end
    of the 30 s wait) answers it."""
    app = create_app(parse_config({}))
    reached = handler_reached(app, "/v1/messages/latest")
    client = await aiohttp_client(app)
    since = datetime.now(UTC).isoformat()
    wait = 30.0
    started = time.monotonic()
    waiting = asyncio.create_task(latest(client, to=ANA, since=since, wait=str(wait)))
    await asyncio.wait_for(reached.wait(), wait)  # the handler is waiting from here on
    assert not waiting.done()  # nothing there yet: it waits
    sent = await send(client, signin(code="135790"))
    status, message = await asyncio.wait_for(waiting, 2 * wait)
    answered_after = time.monotonic() - started
    assert status == 200 and message["id"] == sent["id"] and message["code"] == "135790"
    assert answered_after < wait  # woken by the message, not answered at the wait's end


async def test_latest_wait_times_out_with_404(service: ClientFactory) -> None:
    """With nothing matching, latest?wait= ends in 404 message_not_found."""
    client = await service()
    await send(client, signin(to="bob@example.com"))
    status, body = await latest(client, to=ANA, wait="0.2")
    assert status == 404 and body["error"]["code"] == "message_not_found"
    status, body = await latest(client, to=ANA)
    assert status == 404 and body["error"]["code"] == "message_not_found"


async def test_latest_wait_ends_with_503_when_the_service_shuts_down(
    service: ClientFactory,
) -> None:
    """A waiting latest?wait= is answered 503 shutting_down at shutdown, not left hanging."""
    client = await service()
    waiting = asyncio.create_task(latest(client, to=ANA, wait="60"))
    await asyncio.sleep(0.2)
    await client.server.app.shutdown()
    status, body = await asyncio.wait_for(waiting, 30)
    assert status == 503 and body["error"]["code"] == "shutting_down"


async def test_latest_since_excludes_older_messages(service: ClientFactory) -> None:
    """since (a time or a message id) skips what was captured before it."""
    client = await service()
    first = await send(client, signin(code="111111"))
    after_first = datetime.now(UTC).isoformat()
    status, _ = await latest(client, to=ANA, since=after_first, wait="0.1")
    assert status == 404
    second = await send(client, signin(code="222222"))
    status, found = await latest(client, to=ANA, since=after_first)
    assert status == 200 and found["id"] == second["id"]
    status, found = await latest(client, to=ANA, since=first["id"])
    assert status == 200 and found["id"] == second["id"]
    status, _ = await latest(client, to=ANA, since=second["id"], wait="0.1")
    assert status == 404
    status, found = await latest(client, to=ANA)
    assert status == 200 and found["code"] == "222222"


async def test_latest_filters_by_channel_and_type(service: ClientFactory) -> None:
    """channel and type pick among one recipient's messages."""
    client = await service()
    await send(client, signin(code="1", usage="Register"))
    await send(client, signin(code="2", usage="SignIn"))
    await send(client, signin(to="+33612345678", code="3"), "sms")
    assert (await latest(client, to=ANA, type="Register"))[1]["code"] == "1"
    assert (await latest(client, channel="sms"))[1]["code"] == "3"
    assert (await latest(client, to="+33 6 12 34 56 78"))[1]["code"] == "3"
    assert (await latest(client, channel="email"))[1]["code"] == "2"


async def test_latest_refuses_bad_queries(service: ClientFactory) -> None:
    """wait over 60 s, a malformed time or an unknown message id are 400 invalid_query."""
    client = await service()
    for params in ({"wait": "61"}, {"wait": "soon"}, {"since": "2026-13-45T99:00:00Z"},
                   {"since": "0123456789abcdef"}, {"channel": "fax"}):  # fmt: skip
        status, body = await latest(client, **params)
        assert status == 400 and body["error"]["code"] == "invalid_query", params


async def test_capture_mode_has_no_limits_or_dedupe(service: ClientFactory) -> None:
    """With every channel captured, the same code to one test user arrives every time."""
    client = await service()
    ids = {(await send(client, signin()))["id"] for _ in range(12)}
    assert len(ids) == 12
    listed = (await (await client.get("/v1/messages", params={"to": ANA})).json())["messages"]
    assert len(listed) == 12


async def test_capture_mode_keeps_idempotency_keys(service: ClientFactory) -> None:
    """An Idempotency-Key still makes a repeat the same message in capture mode."""
    client = await service()
    headers = {"Idempotency-Key": "k-1"}
    first = await (await client.post("/v1/email", json=signin(), headers=headers)).json()
    again = await (await client.post("/v1/email", json=signin(), headers=headers)).json()
    assert again == {"id": first["id"], "status": "captured", "provider": "capture",
                     "duplicate": True}  # fmt: skip


async def test_limits_and_dedupe_on_in_capture_mode_when_configured(
    service: ClientFactory,
) -> None:
    """limits.enabled and delivery.dedupe turn both on even when everything is captured."""
    client = await service(
        {
            "limits": {"enabled": True, "per_recipient": {"count": 2, "window_seconds": 600}},
            "delivery": {"dedupe": True},
        }
    )
    first = await send(client, signin(code="1"))
    again = await send(client, signin(code="1"))
    assert again["id"] == first["id"] and again["duplicate"] is True
    bob = "bob@example.com"
    await send(client, signin(to=bob, code="1"))
    await send(client, signin(to=bob, code="2"))
    refused = await client.post("/v1/email", json=signin(to=bob, code="3"))
    assert refused.status == 429 and "Retry-After" in refused.headers


async def test_delete_for_one_recipient_resets_its_limits_and_dedupe(
    service: ClientFactory,
) -> None:
    """DELETE /v1/messages?to= empties that recipient's messages, counts and duplicates only."""
    client = await service(
        {
            "limits": {
                "enabled": True,
                "per_recipient": {"count": 2, "window_seconds": 600},
                "per_ip": None,
            },
            "delivery": {"dedupe": True},
        }
    )
    bob = "bob@example.com"
    await send(client, signin(code="1"))
    await send(client, signin(code="2"))
    await send(client, signin(to=bob, code="1"))
    await send(client, signin(to=bob, code="2"))
    assert (await client.post("/v1/email", json=signin(code="3"))).status == 429
    deleted = await (await client.delete("/v1/messages", params={"to": "ANA@example.com"})).json()
    assert deleted == {"deleted": 2}
    again = await send(client, signin(code="2"))  # neither limited nor a duplicate now
    assert "duplicate" not in again
    assert (await client.post("/v1/email", json=signin(to=bob, code="3"))).status == 429
    dup = await send(client, signin(to=bob, code="2"))
    assert dup["duplicate"] is True
    assert (await (await client.delete("/v1/messages")).json()) == {"deleted": 3}
    assert "duplicate" not in await send(client, signin(to=bob, code="2"))


async def test_logto_send_test_is_never_deduplicated(service: ClientFactory) -> None:
    """Logto's "send test" (Generic, code 000000) arrives on every press, dedupe on or not."""
    client = await service({"delivery": {"dedupe": True}})
    body = signin(code="000000", usage="Generic")
    first, second = await send(client, body), await send(client, body)
    assert second["id"] != first["id"] and "duplicate" not in second
    normal = signin(code="123456", usage="Generic")
    assert (await send(client, normal))["id"] == (await send(client, normal))["id"]


def test_capture_mode_defaults_follow_the_providers() -> None:
    """Limits and dedupe are off only when every channel is captured, unless configured."""
    captured = parse_config({})
    assert captured.captures_everything and not captured.limits_on and not captured.dedupe_on
    smtp = {"provider": "smtp", "smtp": {"host": "127.0.0.1", "port": 25,
                                         "fromEmail": "a@b.co"}}  # fmt: skip
    real = parse_config({"email": smtp})
    assert not real.captures_everything and real.limits_on and real.dedupe_on
    off = parse_config({"email": smtp, "limits": {"enabled": False},
                        "delivery": {"dedupe": False}})  # fmt: skip
    assert not off.limits_on and not off.dedupe_on


async def test_delete_one_message(service: ClientFactory) -> None:
    """DELETE /v1/messages/{id} removes that message only; a second time is 404."""
    client = await service()
    keep, gone = await send(client, signin(code="1")), await send(client, signin(code="2"))
    response = await client.delete(f"/v1/messages/{gone['id']}")
    assert response.status == 200 and await response.json() == {"deleted": 1}
    response = await client.delete(f"/v1/messages/{gone['id']}")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "message_not_found"
    listed = (await (await client.get("/v1/messages")).json())["messages"]
    assert [m["id"] for m in listed] == [keep["id"]]


async def test_event_stream_reports_ready_added_deleted_cleared(service: ClientFactory) -> None:
    """The live stream says ready, then every capture, deletion and clearing, as SSE."""
    client = await service()
    response = await client.get("/v1/messages/events")
    assert response.status == 200 and response.content_type == "text/event-stream"

    async def next_event() -> tuple[str, Any]:
        lines: list[str] = []
        while True:
            line = (await asyncio.wait_for(response.content.readline(), 30)).decode()
            if line == "\n" and lines:
                break
            if not line.startswith(":") and line != "\n":
                lines.append(line.rstrip("\n"))
        fields = dict(line.split(": ", 1) for line in lines)
        return fields["event"], json.loads(fields["data"])

    assert await next_event() == ("ready", {})
    sent = await send(client, signin(code="864209"))
    kind, data = await next_event()
    assert kind == "added" and data["id"] == sent["id"] and data["code"] == "864209"
    await client.delete(f"/v1/messages/{sent['id']}")
    assert await next_event() == ("deleted", {"id": sent["id"]})
    await client.delete("/v1/messages", params={"to": ANA})
    assert await next_event() == ("cleared", {"to": ANA})
    response.close()


def docs_block(marker: str) -> str:
    """The code docs/testing.md shows after ``<!-- marker -->``, up to its "In a test" usage part."""
    page = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
    match = re.search(rf"<!-- {marker} -->\s*```\w+\n(.+?)\n```", page.read_text("utf-8"), re.S)
    assert match, f"docs/testing.md lost its {marker} block"
    helper, found, _ = match.group(1).partition("In a test")
    assert found, f"the {marker} block lost its usage part"
    return helper.rsplit("\n", 1)[0]  # drop the comment line that announces the usage


async def test_docs_python_example_waits_for_the_code(service: ClientFactory) -> None:
    """The Python helper of docs/testing.md gets the code sent after it started waiting."""
    client = await service()
    namespace: dict[str, Any] = {}
    exec(docs_block("e2e-python"), namespace)  # noqa: S102 - the docs' own example
    namespace["OTP_SERVICE"] = str(client.make_url("")).rstrip("/")
    await send(client, signin(code="000111"))  # before `since`: never the answer
    since = datetime.now(UTC).isoformat()
    waiting = asyncio.create_task(asyncio.to_thread(namespace["wait_for_code"], ANA, since, 30))
    await send(client, signin(to="bob@example.com", code="999999"))
    await send(client, signin(code="424242"))
    assert await asyncio.wait_for(waiting, 60) == "424242"


@pytest.mark.slow
async def test_docs_javascript_example_waits_for_the_code(service: ClientFactory) -> None:
    """The JavaScript helper of docs/testing.md, run by Node, gets the code sent while it waits."""
    node = shutil.which("node")
    assert node is not None, "Node 20 is required (it also runs tests/interop)"
    client = await service()
    base = str(client.make_url("")).rstrip("/")
    helper = docs_block("e2e-javascript").replace('"http://127.0.0.1:8787"', json.dumps(base))
    since = datetime.now(UTC).isoformat()
    script = f"{helper}\nwaitForCode({json.dumps(ANA)}, {json.dumps(since)}).then(console.log);"
    process = await asyncio.create_subprocess_exec(
        node, "-e", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    await send(client, signin(to="bob@example.com", code="999999"))
    await send(client, signin(code="616161"))
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "616161"
