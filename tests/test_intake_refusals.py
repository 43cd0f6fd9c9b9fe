"""The refusals every hook route shares (``otp_service/http/hooks.py`` and the Host check in
front of it), each tested on every system's every route: a correctly authenticated body that
is not JSON (400 ``invalid_json``), a Content-Type the route does not take (415
``unsupported_media_type``), a Host the service is not reached by (421 ``host_not_allowed``);
and Kratos's malformed form-encoded body (400 ``invalid_request``).

Each request is authenticated as its system authenticates it (Supabase's and ZITADEL's
signatures over the very bytes sent, Kratos's basic auth, Authentik's and the generic hook's
bearer token), so the refusal is the check under test and never a 401. Supabase hears a
refusal inside Auth's error object (``200 {"error": {"http_code", "code", "message"}}``,
docs/intakes.md "Answers"), except the Host check's 421, which comes before any hook and which
it hears as is; the others hear the status itself.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from otp_service.intake import zitadel

from .support import supabase as sb
from .support.service import ClientFactory

ZITADEL_KEY = "zitadel-signing-key-0123456789"
KRATOS_PASSWORD = "kratos-courier-password-123"
AUTHENTIK_TOKEN = "authentik-sms-token-0123456789"
GENERIC_TOKEN = "generic-hook-token-0123456789"
INTAKES: dict[str, Any] = {
    "supabase": {"secrets": [sb.SECRET]},
    "zitadel": {"signing_keys": [ZITADEL_KEY]},
    "kratos": {"basic_auth": {"user": "kratos", "password": KRATOS_PASSWORD}},
    "authentik": {"tokens": [AUTHENTIK_TOKEN]},
    "generic": {"tokens": [GENERIC_TOKEN]},
}
FORM = "application/x-www-form-urlencoded"
EMAIL, PHONE = "ada@example.com", "+41791234567"


def _supabase(raw: bytes) -> dict[str, str]:
    headers = sb.sign(raw)
    del headers["Content-Type"]  # each test sets its own
    return headers


def _zitadel(raw: bytes) -> dict[str, str]:
    t = int(time.time())
    return {zitadel.SIGNATURE_HEADER: f"t={t},v1={zitadel.sign(raw, ZITADEL_KEY, t)}"}


def _kratos(raw: bytes) -> dict[str, str]:
    del raw
    basic = base64.b64encode(f"kratos:{KRATOS_PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {basic}"}


def _bearer(token: str) -> Callable[[bytes], dict[str, str]]:
    return lambda raw: {"Authorization": f"Bearer {token}"}


def _zitadel_body(channel: str) -> dict[str, Any]:
    recipient = (
        {"recipientEmailAddress": EMAIL} if channel == "email" else {"recipientPhoneNumber": PHONE}
    )
    event = f"user.human.{'email' if channel == 'email' else 'phone'}.code.added"
    return {
        "contextInfo": {"eventType": event, **recipient},
        "templateData": {"subject": "Verify", "text": "Your ZITADEL code is 482913"},
        "args": {"code": "482913"},
    }


def _kratos_body(channel: str) -> dict[str, Any]:
    to = EMAIL if channel == "email" else PHONE
    return {
        "recipient": to,
        "template_type": "login_code_valid",
        "template_data": {"to": to, "login_code": "482913"},
        "message_type": channel,
    }


@dataclass(frozen=True)
class Route:
    """One hook route: a valid body for it, and how its system authenticates a body."""

    system: str
    channel: str
    body: bytes
    authenticate: Callable[[bytes], dict[str, str]]

    @property
    def path(self) -> str:
        return f"/v1/hooks/{self.system}/{self.channel}"

    @property
    def id(self) -> str:
        return f"{self.system}-{self.channel}"

    def headers(self, raw: bytes, content_type: str) -> dict[str, str]:
        """``raw`` authenticated as the system sends it, under ``content_type``."""
        return {**self.authenticate(raw), "Content-Type": content_type}


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


ROUTES = [
    Route("supabase", "email", sb.go_json(sb.email_body("magiclink", token="482913")), _supabase),
    Route("supabase", "sms", sb.go_json(sb.sms_body("482913", "41791234567")), _supabase),
    Route("zitadel", "email", _json(_zitadel_body("email")), _zitadel),
    Route("zitadel", "sms", _json(_zitadel_body("sms")), _zitadel),
    Route("kratos", "email", _json(_kratos_body("email")), _kratos),
    Route("kratos", "sms", _json(_kratos_body("sms")), _kratos),
    Route("authentik", "sms", _json({"From": "", "To": PHONE, "Body": "482913",
                                     "Message": "Use this code: 482913"}),
          _bearer(AUTHENTIK_TOKEN)),
    Route("generic", "email", _json({"to": EMAIL, "code": "482913"}), _bearer(GENERIC_TOKEN)),
    Route("generic", "sms", _json({"to": PHONE, "code": "482913"}), _bearer(GENERIC_TOKEN)),
]  # fmt: skip
EVERY_ROUTE = pytest.mark.parametrize("route", ROUTES, ids=[r.id for r in ROUTES])


async def refusal(route: Route, response: Any) -> tuple[int, str]:
    """The (status, code) the system hears: for Supabase, inside Auth's error object of a 200
    (with the status as ``http_code``); for the others, the answer's own status."""
    answer = await response.json()
    if route.system == "supabase":
        assert response.status == 200, answer
        return answer["error"]["http_code"], answer["error"]["code"]
    return response.status, answer["error"]["code"]


async def inbox(client: Any) -> list[dict[str, Any]]:
    listing: dict[str, Any] = await (await client.get("/v1/messages")).json()
    return list(listing["messages"])


@EVERY_ROUTE
async def test_hook_accepts_the_valid_body_of_each_route(
    service: ClientFactory, route: Route
) -> None:
    """The control for the refusals below: each route's body, authenticated and sent as JSON,
    is accepted and captured (so each refusal is the check under test, not the body)."""
    client = await service({"intakes": INTAKES})
    response = await client.post(
        route.path, data=route.body, headers=route.headers(route.body, "application/json")
    )
    assert response.status == 200, await response.text()
    [message] = await inbox(client)
    assert (message["source"], message["code"]) == (route.system, "482913")


@EVERY_ROUTE
async def test_hook_authenticated_body_that_is_not_json_is_invalid_json(
    service: ClientFactory, route: Route
) -> None:
    """A correctly signed or authenticated body that is not JSON (cut short, plain text, not
    UTF-8) is 400 ``invalid_json`` (Supabase: inside Auth's error object), nothing stored."""
    client = await service({"intakes": INTAKES})
    for raw in (b"{", b"not json", b'{"to": "\xff"}'):
        headers = route.headers(raw, "application/json")
        response = await client.post(route.path, data=raw, headers=headers)
        assert await refusal(route, response) == (400, "invalid_json"), raw
    assert await inbox(client) == []


@EVERY_ROUTE
async def test_hook_content_type_it_does_not_take_is_415(
    service: ClientFactory, route: Route
) -> None:
    """The route's valid body, authenticated, under a Content-Type other than JSON (or, on
    Kratos's routes, a form: what Kratos sends with that type) is 415
    ``unsupported_media_type`` (Supabase: inside Auth's error object), nothing stored."""
    client = await service({"intakes": INTAKES})
    types = ["text/plain", "application/octet-stream", "multipart/form-data", "text/json"]
    if route.system != "kratos":
        types.append(FORM)
    for content_type in types:
        headers = route.headers(route.body, content_type)
        response = await client.post(route.path, data=route.body, headers=headers)
        assert await refusal(route, response) == (415, "unsupported_media_type"), content_type
    assert await inbox(client) == []


@pytest.mark.parametrize("channel", ["email", "sms"])
async def test_kratos_malformed_form_is_invalid_request(
    service: ClientFactory, channel: str
) -> None:
    """An authenticated form-encoded body Kratos could not have sent (a field without ``=``,
    bytes that are not UTF-8, a charset that does not exist) is 400 ``invalid_request``
    ("the body is not a valid form"), nothing stored."""
    client = await service({"intakes": INTAKES})
    route = next(r for r in ROUTES if (r.system, r.channel) == ("kratos", channel))
    cases = [
        (b"recipient=ada%40example.com&template_type", FORM),
        (b"recipient=\xff&template_type=login_code_valid", FORM),
        (b"recipient=ada%40example.com", f"{FORM}; charset=no-such-charset"),
    ]
    for raw, content_type in cases:
        headers = route.headers(raw, content_type)
        response = await client.post(route.path, data=raw, headers=headers)
        answer = await response.json()
        assert (response.status, answer["error"]["code"]) == (400, "invalid_request"), raw
        assert answer["error"]["message"] == "the body is not a valid form"
    assert await inbox(client) == []


@EVERY_ROUTE
async def test_hook_host_not_reached_by_is_421(service: ClientFactory, route: Route) -> None:
    """A correctly authenticated, valid request under a Host the service is not reached by is
    421 ``host_not_allowed`` on every hook route — Supabase hears the 421 as is, not inside its
    error object — and nothing is stored; the same request under a name in
    ``server.allowed_hosts`` is accepted."""
    config = {"server": {"allowed_hosts": ["otp.example.com"]}, "intakes": INTAKES}
    client = await service(config)
    for host in ("evil.example", "evil.example:8787", "otp.example.com.evil.example"):
        headers = route.headers(route.body, "application/json") | {"Host": host}
        response = await client.post(route.path, data=route.body, headers=headers)
        answer = await response.json()
        assert response.status == 421, (host, answer)
        error = answer["error"]
        assert (error["code"], set(error)) == ("host_not_allowed", {"code", "message"})
        assert "server.allowed_hosts" in error["message"]  # the house shape: no http_code
    assert await inbox(client) == []
    headers = route.headers(route.body, "application/json") | {"Host": "otp.example.com"}
    response = await client.post(route.path, data=route.body, headers=headers)
    assert response.status == 200, await response.text()
    assert len(await inbox(client)) == 1
