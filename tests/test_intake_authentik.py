"""Authentik's generic SMS provider (intakes.authentik): ``{From, To, Body, Message}`` with a
bearer token, or basic auth with the token as the password, as authentik's ``send_generic``
sends it."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from otp_service.config import parse_config
from otp_service.errors import ConfigError

from .support.service import ClientFactory

TOKEN = "authentik-sms-token-0123456789"
CONFIG: dict[str, Any] = {"intakes": {"authentik": {"tokens": [TOKEN]}}}
PATH = "/v1/hooks/authentik/sms"


def body(code: str = "394817", to: str = "+41791234567") -> dict[str, Any]:
    """authentik/stages/authenticator_sms/models.py send_generic's payload, field for field."""
    return {
        "From": "+15005550006",
        "To": to,
        "Body": code,
        "Message": f"Use this code to authenticate in authentik: {code}",
    }


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    """What requests' ``auth=(self.auth, self.auth_password)`` sends."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def inbox(client: Any) -> list[dict[str, Any]]:
    listing: dict[str, Any] = await (await client.get("/v1/messages")).json()
    messages: list[dict[str, Any]] = listing["messages"]
    return messages


async def test_authentik_bearer_sms_is_captured_as_mfa(service: ClientFactory) -> None:
    """A bearer-authenticated request is captured to ``To`` with the MfaVerification text and
    ``Body`` as its code, from authentik."""
    client = await service(CONFIG)
    response = await client.post(PATH, json=body(), headers=bearer())
    assert response.status == 200, await response.text()
    [message] = await inbox(client)
    assert message["to"] == "+41791234567" and message["code"] == "394817"
    assert message["type"] == "MfaVerification" and message["source"] == "authentik"
    assert "394817" in message["text"]


async def test_authentik_basic_auth_takes_the_token_as_password(service: ClientFactory) -> None:
    """Auth type basic: any user name, the token as the password."""
    client = await service(CONFIG)
    response = await client.post(PATH, json=body(), headers=basic("authentik", TOKEN))
    assert response.status == 200, await response.text()
    assert len(await inbox(client)) == 1


async def test_authentik_wrong_credentials_are_401(service: ClientFactory) -> None:
    """No header, a wrong token, the token as the basic user name, a malformed basic value:
    each is 401 unauthorized, nothing captured."""
    client = await service(CONFIG)
    for headers in (
        {},
        bearer("not-the-token-0123456789"),
        basic(TOKEN, "wrong"),
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Token {TOKEN}"},
    ):
        response = await client.post(PATH, json=body(), headers=headers)
        assert response.status == 401, headers
        assert (await response.json())["error"]["code"] == "unauthorized"
    assert await inbox(client) == []


async def test_authentik_has_no_email_route(service: ClientFactory) -> None:
    """Authentik sends email over SMTP only: there is no email hook (404)."""
    client = await service(CONFIG)
    response = await client.post("/v1/hooks/authentik/email", json=body(), headers=bearer())
    assert response.status == 404


async def test_authentik_bad_bodies_are_refused(service: ClientFactory) -> None:
    """A body without To or Body, or a mapped body whose Body is a whole text, is 400 with its
    code (the message points such mappings at the generic hook)."""
    client = await service(CONFIG)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"From": "x", "Body": "123456"}, "missing_field"),
        ({"To": "+41791234567", "Body": ""}, "missing_field"),
        (body(code="Your code is 123456"), "invalid_request"),
        (body(to="not a number"), "invalid_phone"),
    ]
    for data, code in cases:
        response = await client.post(PATH, json=data, headers=bearer())
        answer = await response.json()
        assert (response.status, answer["error"]["code"]) == (400, code), data
    answer = await (await client.post(PATH, json=body("Code 1"), headers=bearer())).json()
    assert "/v1/hooks/generic/sms" in answer["error"]["message"]
    assert await inbox(client) == []


async def test_authentik_repeat_is_answered_as_the_first(service: ClientFactory) -> None:
    """The same request twice is answered with the first message's id, captured once."""
    client = await service(CONFIG)
    first = await (await client.post(PATH, json=body(), headers=bearer())).json()
    again = await (await client.post(PATH, json=body(), headers=bearer())).json()
    assert again["id"] == first["id"] and again["duplicate"] is True
    assert len(await inbox(client)) == 1


def test_authentik_tokens_must_be_long_enough() -> None:
    """A short token is a config error naming the field and how to make one."""
    with pytest.raises(ConfigError) as info:
        parse_config({"intakes": {"authentik": {"tokens": ["short"]}}})
    [problem] = info.value.problems
    assert problem.path == "intakes.authentik.tokens[0]"
    assert "secrets.token_urlsafe" in problem.fix
