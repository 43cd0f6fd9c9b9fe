"""The HTTP API as Logto's connectors and developers use it, over real HTTP."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .support.service import ClientFactory

TOKEN = "tok_" + "a" * 28
OLD_TOKEN = "tok_" + "b" * 28
SIGN_IN = {
    "to": "User@Example.COM",
    "type": "SignIn",
    "payload": {"code": "482913", "locale": "fr-FR"},
}


async def post(client: Any, path: str, body: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers.setdefault("Content-Type", "application/json")
    response = await client.post(path, data=data, headers=headers)
    return response.status, await response.json()


async def test_email_captured_and_readable(service: ClientFactory) -> None:
    """A Logto email request is accepted and its code can be read from the inbox."""
    client = await service()
    status, body = await post(client, "/v1/email", SIGN_IN)
    assert status == 200 and body["status"] == "captured" and body["id"]
    listed = await (await client.get("/v1/messages")).json()
    [message] = listed["messages"]
    assert message["id"] == body["id"] and message["code"] == "482913"
    assert message["to"] == "User@example.com" and message["locale"] == "fr"
    assert message["channel"] == "email" and message["type"] == "SignIn"
    assert "482913" in message["text"] and "482913" in message["html"]
    assert set(message) == {"id", "channel", "to", "type", "source", "locale", "subject", "text",
                            "html", "code", "link", "status", "created_at", "headers", "sms"}  # fmt: skip
    assert message["source"] == "logto"
    headers = dict(message["headers"])
    assert headers["To"] == "User@example.com" and headers["Subject"] == message["subject"]
    assert headers["Message-ID"].startswith(f"<{body['id']}@") and message["sms"] is None
    one = await (await client.get(f"/v1/messages/{body['id']}")).json()
    assert {key: one[key] for key in message} == message
    assert [(a["provider"], a["outcome"]) for a in one["attempts"]] == [("capture", "captured")]
    assert one["expires_at"] > one["created_at"] and one["error"] is None


async def test_sms_number_normalised(service: ClientFactory) -> None:
    """A phone number typed without + is stored in E.164 and findable either way."""
    client = await service()
    body = {"to": "8613800138000", "type": "Register", "payload": {"code": "111222"}}
    status, _ = await post(client, "/v1/sms", body)
    assert status == 200
    listed = await (await client.get("/v1/messages", params={"to": "+86 138 0013 8000"})).json()
    [message] = listed["messages"]
    assert message["to"] == "+8613800138000" and "111222" in message["text"]
    assert message["subject"] is None and message["html"] is None
    assert message["sms"] == {"encoding": "GSM-7", "units": len(message["text"]), "segments": 1}


async def test_extra_payload_keys_accepted_and_test_type_renders_as_generic(
    service: ClientFactory,
) -> None:
    """Unknown payload keys, Logto context objects and the old Test type are accepted; Test is
    rendered with the Generic template (the captured message reads as a Generic one does)."""
    client = await service()
    payload = {"code": "1", "user": {"id": "u1", "name": None}, "application": {"name": "Shop"},
               "organization": {"id": "o"}, "somethingNew": [1, 2]}  # fmt: skip
    rendered = {}
    for usage in ("Test", "Generic", "SignIn"):
        status, body = await post(
            client,
            "/v1/email",
            {"to": "a@b.co", "type": usage, "payload": payload, "ip": "203.0.113.7"},
        )
        assert status == 200, body
        rendered[usage] = await (await client.get(f"/v1/messages/{body['id']}")).json()
    test, generic, signin = rendered["Test"], rendered["Generic"], rendered["SignIn"]
    assert test["type"] == "Test" and test["code"] == "1"
    assert test["subject"] == "Your Shop verification code"  # templates/email/en/Generic.subject
    assert (test["subject"], test["text"], test["html"]) == (
        generic["subject"], generic["text"], generic["html"],
    )  # fmt: skip
    # SignIn's template reads differently, so the equality above is Generic's, not any type's.
    assert signin["subject"] != generic["subject"] and signin["text"] != generic["text"]


async def test_organization_invitation_link(service: ClientFactory) -> None:
    """An invitation without a code carries the link, readable from the inbox."""
    client = await service()
    body = {"to": "a@b.co", "type": "OrganizationInvitation",
            "payload": {"link": "https://id.example.com/invite/abc", "organization": {"name": "Acme"}}}  # fmt: skip
    status, _ = await post(client, "/v1/email", body)
    [message] = (await (await client.get("/v1/messages")).json())["messages"]
    assert status == 200 and message["link"] == "https://id.example.com/invite/abc"
    assert message["code"] is None and "https://id.example.com/invite/abc" in message["text"]


BAD_REQUESTS = [
    ("not json", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    ("[1, 2]", "invalid_request"),
    ({"type": "SignIn", "payload": {}}, "missing_field"),
    ({"to": "a@b.co", "payload": {}}, "missing_field"),
    ({"to": 5, "type": "SignIn"}, "invalid_request"),
    ({"to": "a@b.co", "type": "SignIn", "payload": "x"}, "invalid_request"),
    ({"to": "a@b.co", "type": "Sign In!"}, "invalid_type"),
    ({"to": "a@b.co", "type": "SignIn", "payload": {"code": {"x": 1}}}, "invalid_request"),
    ({"to": "not-an-address", "type": "SignIn"}, "invalid_email"),
    ({"to": "a@b@c", "type": "SignIn"}, "invalid_email"),
    ({"to": "a@-bad-.com", "type": "SignIn"}, "invalid_email"),
    ({"to": "a@b.co\r\nBcc: x@evil.test", "type": "SignIn"}, "invalid_header_value"),
    ({"to": "a@b.co\n", "type": "SignIn"}, "invalid_header_value"),
    ({"to": "a@b.co", "type": "SignIn\r\nX: y"}, "invalid_header_value"),
    ({"to": "a b@c.co", "type": "SignIn"}, "invalid_email"),
]


@pytest.mark.parametrize(("body", "code"), BAD_REQUESTS)
async def test_bad_email_request_is_400_with_stable_code(
    service: ClientFactory, body: Any, code: str
) -> None:
    """Malformed or dangerous requests are refused with 400 and a stable code, never captured."""
    client = await service()
    status, answer = await post(client, "/v1/email", body)
    assert status == 400 and answer["error"]["code"] == code
    assert (await (await client.get("/v1/messages")).json())["messages"] == []


@pytest.mark.parametrize(
    "number", ["12", "+1 555", "86138", "abc", "+99912345678", "+86 138 0013 800\n"]
)
async def test_invalid_phone_is_400(service: ClientFactory, number: str) -> None:
    """A number that is not a valid phone number is refused before any provider."""
    client = await service()
    status, answer = await post(
        client, "/v1/sms", {"to": number, "type": "SignIn", "payload": {"code": "1"}}
    )
    assert status == 400 and answer["error"]["code"] in {"invalid_phone", "invalid_header_value"}


async def test_payload_line_break_reaching_subject_is_400(service: ClientFactory) -> None:
    """A CR/LF in a value that lands in the Subject header is refused (no header injection)."""
    client = await service()
    body = {"to": "a@b.co", "type": "SignIn",
            "payload": {"code": "1", "application": {"displayName": "Shop\r\nBcc: x@evil.test"}}}  # fmt: skip
    status, answer = await post(client, "/v1/email", body)
    assert status == 400 and answer["error"]["code"] == "invalid_header_value"


async def test_wrong_content_type_is_415(service: ClientFactory) -> None:
    """Only JSON bodies are accepted."""
    client = await service()
    status, answer = await post(
        client, "/v1/email", json.dumps(SIGN_IN), **{"Content-Type": "text/plain"}
    )
    assert status == 415 and answer["error"]["code"] == "unsupported_media_type"


async def test_body_over_limit_is_413(service: ClientFactory) -> None:
    """A body over 64 KiB is refused with 413, declared or streamed."""
    client = await service()
    big = dict(SIGN_IN, payload={"code": "1", "junk": "x" * 70_000})
    status, answer = await post(client, "/v1/email", big)
    assert status == 413 and answer["error"]["code"] == "payload_too_large"

    async def chunks() -> Any:
        for _ in range(20):
            yield b"x" * 8192

    response = await client.post(
        "/v1/email", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"


async def test_no_template_is_422(service: ClientFactory, tmp_path: Any) -> None:
    """With bundled defaults off and no Generic, an unknown type gets 422 template_not_found."""
    (tmp_path / "email" / "en").mkdir(parents=True)
    (tmp_path / "email" / "en" / "SignIn.subject").write_text("s")
    (tmp_path / "email" / "en" / "SignIn.txt").write_text("{{code}}")
    client = await service({"templates": {"directory": str(tmp_path), "bundled": False}})
    status, answer = await post(client, "/v1/email", dict(SIGN_IN, type="Register"))
    assert status == 422 and answer["error"]["code"] == "template_not_found"


AUTH = {"auth": {"tokens": [TOKEN, OLD_TOKEN]}}


@pytest.mark.parametrize(
    "header",
    [None, "", TOKEN, f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer "],
)
async def test_wrong_or_missing_token_is_401(service: ClientFactory, header: str | None) -> None:
    """With tokens configured, anything but 'Bearer <token>' is refused and nothing captured."""
    client = await service(AUTH)
    headers = {} if header is None else {"Authorization": header}
    status, answer = await post(client, "/v1/email", SIGN_IN, **headers)
    assert status == 401 and answer["error"]["code"] == "unauthorized"
    assert TOKEN not in json.dumps(answer)
    listed = await client.get("/v1/messages", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (await listed.json())["messages"] == []


async def test_any_configured_token_passes_for_rotation(service: ClientFactory) -> None:
    """Both the new and the old token work while rotating."""
    client = await service(AUTH)
    for token in (TOKEN, OLD_TOKEN):
        status, _ = await post(client, "/v1/email", SIGN_IN, Authorization=f"Bearer {token}")
        assert status == 200


async def test_inbox_needs_the_token_too(service: ClientFactory) -> None:
    """Captured codes are not readable without the token; the page shell holds none."""
    client = await service(AUTH)
    await post(client, "/v1/email", SIGN_IN, Authorization=f"Bearer {TOKEN}")
    for method, path in (("GET", "/v1/messages"), ("DELETE", "/v1/messages"),
                         ("GET", "/v1/messages/abc"), ("DELETE", "/v1/messages/abc"),
                         ("GET", "/v1/messages/latest"), ("GET", "/v1/messages/events")):  # fmt: skip
        response = await client.request(method, path)
        assert response.status == 401, path
    assert (await client.get("/healthz")).status == 200
    page = await client.get("/inbox")
    assert page.status == 200 and "482913" not in await page.text()


async def test_messages_filters_limit_and_order(service: ClientFactory) -> None:
    """Newest first; to, channel and limit filter; the id lookup and delete work."""
    client = await service()
    ids = []
    for n in range(3):
        _, body = await post(
            client, "/v1/email", {"to": f"u{n}@x.co", "type": "SignIn", "payload": {"code": str(n)}}
        )
        ids.append(body["id"])
    await post(
        client, "/v1/sms", {"to": "+33612345678", "type": "SignIn", "payload": {"code": "9"}}
    )
    every = (await (await client.get("/v1/messages")).json())["messages"]
    assert [m["code"] for m in every] == ["9", "2", "1", "0"]
    emails = (await (await client.get("/v1/messages?channel=email&limit=2")).json())["messages"]
    assert [m["code"] for m in emails] == ["2", "1"]
    only = (await (await client.get("/v1/messages?to=U1@X.CO")).json())["messages"]
    assert [m["id"] for m in only] == [ids[1]]
    assert (await client.get("/v1/messages?limit=0")).status == 400
    assert (await client.get("/v1/messages?channel=fax")).status == 400
    missing = await client.get("/v1/messages/nope")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "message_not_found"
    deleted = await (await client.delete("/v1/messages")).json()
    assert deleted == {"deleted": 4}
    assert (await (await client.get("/v1/messages")).json())["messages"] == []


async def test_inbox_bounded_oldest_dropped(service: ClientFactory) -> None:
    """The capture inbox keeps at most capture.max_messages, dropping the oldest."""
    client = await service({"capture": {"max_messages": 2}})
    for n in range(3):
        await post(
            client, "/v1/email", {"to": "a@b.co", "type": "SignIn", "payload": {"code": str(n)}}
        )
    every = (await (await client.get("/v1/messages")).json())["messages"]
    assert [m["code"] for m in every] == ["2", "1"]


async def test_inbox_page_shell_forbids_scripts_and_loads_from_elsewhere(
    service: ClientFactory,
) -> None:
    """The page and its files are served with a CSP that allows only its own script and API."""
    client = await service()
    for path, kind in (("/inbox", "text/html"), ("/inbox/inbox.js", "text/javascript"),
                       ("/inbox/inbox.css", "text/css")):  # fmt: skip
        response = await client.get(path)
        assert response.status == 200 and response.content_type == kind, path
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    page = await (await client.get("/inbox")).text()
    assert '<script src="/inbox/inbox.js"' in page and 'http-equiv="refresh"' not in page


async def test_unknown_path_and_method_are_json(service: ClientFactory) -> None:
    """Routing errors are JSON with stable codes too."""
    client = await service()
    response = await client.get("/v2/nothing")
    assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"
    response = await client.put("/v1/email")
    assert (
        response.status == 405 and (await response.json())["error"]["code"] == "method_not_allowed"
    )


async def test_healthz(service: ClientFactory) -> None:
    """The health endpoint answers without auth."""
    client = await service()
    response = await client.get("/healthz")
    assert response.status == 200 and (await response.json()) == {"status": "ok"}


async def test_metrics_count_requests_and_attempts(service: ClientFactory) -> None:
    """/metrics counts answers per channel and status, and attempts per provider and outcome."""
    client = await service()
    await post(client, "/v1/email", SIGN_IN)
    await post(client, "/v1/email", {"to": "nope", "type": "SignIn"})
    text = await (await client.get("/metrics")).text()
    assert 'otp_requests_total{channel="email",status="200",type="SignIn"} 1.0' in text
    assert 'otp_requests_total{channel="email",status="400",type="SignIn"} 1.0' in text
    assert (
        'otp_delivery_attempts_total{channel="email",outcome="captured",provider="capture"} 1.0'
        in text
    )
    assert re.search(r"^otp_outbox_in_flight \d+", text, re.M) and "482913" not in text


async def test_metrics_need_the_token(service: ClientFactory) -> None:
    """Metrics are behind the same token as the API when tokens are configured."""
    client = await service(AUTH)
    assert (await client.get("/metrics")).status == 401
    ok = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200


async def test_hostile_inputs_get_4xx_never_500(service: ClientFactory) -> None:
    """Deep JSON nesting, a non-UTF-8 token and a Unicode digit as limit are client errors."""
    client = await service(AUTH)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, answer = await post(client, "/v1/email", "[" * 60_000, **auth)
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    status, answer = await post(client, "/v1/email", SIGN_IN, Authorization="Bearer \xff\xfe")
    assert status == 401 and answer["error"]["code"] == "unauthorized"
    response = await client.get("/v1/messages?limit=\u00b2", headers=auth)
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_query"


async def test_template_reply_to_that_is_not_an_address_is_refused_before_storing(
    service: ClientFactory,
) -> None:
    """A replyTo template rendering to a non-address is a 422 at once, and nothing is queued."""
    smtp = {"host": "127.0.0.1", "port": 2, "fromEmail": "a@example.com", "templates": [
        {"usageType": t, "contentType": "text/plain", "subject": "s", "content": "{{code}}",
         "replyTo": "{{ inviter.primaryEmail }}"}
        for t in ("SignIn", "Register", "ForgotPassword", "Generic")]}  # fmt: skip
    client = await service({"email": {"provider": "smtp", "smtp": smtp}})
    status, answer = await post(client, "/v1/email", SIGN_IN)
    assert status == 422 and answer["error"]["code"] == "template_error"
    assert "482913" not in json.dumps(answer)


async def test_every_answer_carries_nosniff(service: ClientFactory) -> None:
    """``X-Content-Type-Options: nosniff`` on every answer, success or error: the sends (200,
    400, 401, 415), the inbox API (list, one message, latest, 404, delete, the event stream),
    ``/openapi.json``, the probes, ``/metrics``, the router's own 404 and 405, the inbox page."""
    client = await service(AUTH)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    json_type = {"Content-Type": "application/json"}
    sent = await client.post("/v1/email", data=json.dumps(SIGN_IN), headers=auth | json_type)
    message_id = (await sent.json())["id"]
    answers = [
        ("send 200", sent),
        ("send 400", await client.post("/v1/email", data="{", headers=auth | json_type)),
        ("send 401", await client.post("/v1/sms", data=json.dumps(SIGN_IN), headers=json_type)),
        ("send 415", await client.post("/v1/email", data="x", headers=auth)),
        ("list", await client.get("/v1/messages", headers=auth)),
        ("one", await client.get(f"/v1/messages/{message_id}", headers=auth)),
        ("latest", await client.get("/v1/messages/latest?to=user@example.com", headers=auth)),
        ("unknown id", await client.get("/v1/messages/nope", headers=auth)),
        ("events", await client.get("/v1/messages/events", headers=auth)),
        ("delete", await client.delete(f"/v1/messages/{message_id}", headers=auth)),
        ("openapi", await client.get("/openapi.json")),
        ("healthz", await client.get("/healthz")),
        ("readyz", await client.get("/readyz")),
        ("metrics", await client.get("/metrics")),
        ("no route", await client.get("/nowhere")),
        ("wrong method", await client.put("/v1/email")),
        ("page", await client.get("/inbox")),
    ]
    statuses = {name: response.status for name, response in answers}
    assert statuses["send 200"] == 200 and statuses["send 400"] == 400
    assert statuses["send 401"] == 401 and statuses["send 415"] == 415
    assert statuses["one"] == statuses["latest"] == statuses["events"] == 200
    assert statuses["unknown id"] == statuses["no route"] == 404
    assert statuses["wrong method"] == 405
    missing = [
        name
        for name, response in answers
        if response.headers.get("X-Content-Type-Options") != "nosniff"
    ]
    assert missing == []
    for _, response in answers:
        response.close()
