"""The generic hook (intakes.generic): ``{to, code | message, type?, locale?}`` with a bearer
token, through the send path into the capture inbox; and the hook routes' shared behaviour."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

from otp_service.config import parse_config
from otp_service.http.banner import banner
from otp_service.message.compose import Message
from otp_service.store.codec import message_from_json, message_to_json

from .support.service import ClientFactory

TOKEN = "generic-hook-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG: dict[str, Any] = {"intakes": {"generic": {"tokens": [TOKEN]}}}


async def latest(client: Any, to: str) -> dict[str, Any]:
    response = await client.get("/v1/messages/latest", params={"to": to})
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def test_generic_email_code_is_rendered_in_its_language(service: ClientFactory) -> None:
    """A code with a type and a locale is rendered with that type's template in that language,
    captured with the generic hook as its source."""
    client = await service(CONFIG)
    body = {"to": "ada@example.com", "code": "482913", "type": "SignIn", "locale": "fr"}
    response = await client.post("/v1/hooks/generic/email", json=body, headers=AUTH)
    answer = await response.json()
    assert response.status == 200, answer
    assert answer["status"] == "captured"
    message = await latest(client, "ada@example.com")
    assert message["code"] == "482913"
    assert message["type"] == "SignIn"
    assert message["locale"] == "fr"
    assert message["source"] == "generic"
    assert "482913" in message["text"]


async def test_generic_sms_message_is_sent_as_is(service: ClientFactory) -> None:
    """A ``message`` is the SMS text as is, and the code in it is found for the inbox."""
    client = await service(CONFIG)
    text = "Your Keycloak code is 731904. Do not share it."
    body = {"to": "+41791234567", "message": text}
    response = await client.post("/v1/hooks/generic/sms", json=body, headers=AUTH)
    assert response.status == 200, await response.text()
    message = await latest(client, "+41791234567")
    assert message["text"] == text
    assert message["code"] == "731904"
    assert message["type"] == "Message"


async def test_generic_email_message_keeps_its_subject(service: ClientFactory) -> None:
    """An email ``message`` goes out with the ``subject`` given, its lines in the HTML."""
    client = await service(CONFIG)
    body = {"to": "ada@example.com", "message": "Line one\nLine <two>", "subject": "Hi there"}
    response = await client.post("/v1/hooks/generic/email", json=body, headers=AUTH)
    assert response.status == 200, await response.text()
    message = await latest(client, "ada@example.com")
    assert message["subject"] == "Hi there"
    assert message["text"].strip() == "Line one\nLine <two>"
    assert "Line one<br>Line &lt;two&gt;" in message["html"]


async def test_generic_without_token_is_401_and_stores_nothing(service: ClientFactory) -> None:
    """A missing or wrong token is 401 unauthorized, and nothing reaches the inbox."""
    client = await service(CONFIG)
    body = {"to": "ada@example.com", "code": "482913"}
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        response = await client.post("/v1/hooks/generic/email", json=body, headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "unauthorized"
    listing = await (await client.get("/v1/messages")).json()
    assert listing["messages"] == []


async def test_generic_basic_auth_is_refused(service: ClientFactory) -> None:
    """The generic hook takes a bearer token only: the token as a basic password is 401."""
    client = await service(CONFIG)
    basic = base64.b64encode(f"user:{TOKEN}".encode()).decode()
    body = {"to": "ada@example.com", "code": "482913"}
    headers = {"Authorization": f"Basic {basic}"}
    response = await client.post("/v1/hooks/generic/email", json=body, headers=headers)
    assert response.status == 401


async def test_generic_replay_is_answered_as_the_first(service: ClientFactory) -> None:
    """The same body again (a caller's retry) is answered with the first message's id and is
    captured once."""
    client = await service(CONFIG)
    body = {"to": "ada@example.com", "code": "482913"}
    first = await (await client.post("/v1/hooks/generic/email", json=body, headers=AUTH)).json()
    again = await client.post("/v1/hooks/generic/email", json=body, headers=AUTH)
    answer = await again.json()
    assert again.status == 200
    assert answer["id"] == first["id"]
    assert answer["duplicate"] is True
    listing = await (await client.get("/v1/messages")).json()
    assert len(listing["messages"]) == 1


async def test_generic_bad_bodies_are_refused_with_codes(service: ClientFactory) -> None:
    """Each malformed request is refused with its stable code, nothing captured."""
    client = await service(CONFIG)
    cases: list[tuple[Any, int, str]] = [
        ({"to": "ada@example.com"}, 400, "missing_field"),
        ({"code": "123456"}, 400, "missing_field"),
        ({"to": "ada@example.com", "code": 12.5}, 400, "invalid_request"),
        ({"to": "ada@example.com", "message": "hi", "type": "SignIn"}, 400, "invalid_request"),
        ({"to": "ada@example.com", "code": "1", "type": "no spaces"}, 400, "invalid_type"),
        ({"to": "not-an-address", "code": "123456"}, 400, "invalid_email"),
        (["to"], 400, "invalid_request"),
    ]
    for body, status, code in cases:
        response = await client.post("/v1/hooks/generic/email", json=body, headers=AUTH)
        answer = await response.json()
        assert (response.status, answer["error"]["code"]) == (status, code), body
    raw = await client.post(
        "/v1/hooks/generic/email", data=b"{", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert (await raw.json())["error"]["code"] == "invalid_json"
    plain = await client.post(
        "/v1/hooks/generic/email", data=b"x", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert plain.status == 415
    listing = await (await client.get("/v1/messages")).json()
    assert listing["messages"] == []


async def test_hooks_answer_404_until_configured(service: ClientFactory) -> None:
    """Without an intakes section no hook route exists: 404 like any unknown path."""
    client = await service({})
    for path in ("/v1/hooks/generic/email", "/v1/hooks/supabase/email", "/v1/hooks/x/sms"):
        response = await client.post(path, json={"to": "a@example.com", "code": "1"})
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_generic_requests_are_counted_by_intake(service: ClientFactory) -> None:
    """``otp_intake_requests`` counts hook requests labelled with the intake's name."""
    client = await service(CONFIG)
    body = {"to": "ada@example.com", "code": "482913", "type": "SignIn"}
    await client.post("/v1/hooks/generic/email", json=body, headers=AUTH)
    await client.post("/v1/hooks/generic/email", json=body, headers={})
    text = await (await client.get("/metrics")).text()
    ok = 'otp_intake_requests_total{channel="email",intake="generic",status="200",type="SignIn"}'
    refused = 'otp_intake_requests_total{channel="email",intake="generic",status="401",type="none"}'
    assert f"{ok} 1.0" in text
    assert f"{refused} 1.0" in text


def test_stored_source_reads_back_across_releases() -> None:
    """A Logto message is stored without ``source`` (a release before hooks reads it back), a
    hook's with it; a key from a newer release is skipped on read, not an error."""
    logto = Message(id="m1", channel="email", to="a@example.com", type="SignIn", locale="en",
                    text="t")  # fmt: skip
    assert "source" not in json.loads(message_to_json(logto))
    hooked = replace(logto, source="supabase")
    assert message_from_json(message_to_json(hooked)).source == "supabase"
    newer = json.loads(message_to_json(hooked)) | {"priority": "high"}
    assert message_from_json(json.dumps(newer)) == hooked


async def test_generic_idempotency_key_names_the_request(service: ClientFactory) -> None:
    """With an ``Idempotency-Key`` two different bodies under the same key are one message;
    a malformed key is refused."""
    client = await service(CONFIG)
    headers = {**AUTH, "Idempotency-Key": "order-42"}
    first = await client.post(
        "/v1/hooks/generic/sms", json={"to": "+41791234567", "message": "Hi"}, headers=headers
    )
    again = await client.post(
        "/v1/hooks/generic/sms", json={"to": "+41791234567", "message": "Hi!"}, headers=headers
    )
    assert (await again.json())["id"] == (await first.json())["id"]
    listing = await (await client.get("/v1/messages")).json()
    assert len(listing["messages"]) == 1
    bad = await client.post(
        "/v1/hooks/generic/sms",
        json={"to": "+41791234567", "message": "Hi"},
        headers={**AUTH, "Idempotency-Key": "x" * 300},
    )
    assert (await bad.json())["error"]["code"] == "invalid_header_value"


def test_banner_lists_the_configured_hooks() -> None:
    """``serve`` prints each configured hook's URL, and nothing about hooks without any."""
    config = parse_config(CONFIG)
    text = banner(config, "http://127.0.0.1:8787", 8787)
    assert "generic email:        http://127.0.0.1:8787/v1/hooks/generic/email" in text
    assert "generic sms:" in text and "supabase" not in text
    assert "hooks" not in banner(parse_config({}), "http://127.0.0.1:8787", 8787)
