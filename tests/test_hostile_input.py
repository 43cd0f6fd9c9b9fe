"""Hostile request content: invalid Unicode, deep nesting, internal names, header breaks, links.

The service runs over real HTTP (the ``service`` fixture) with its own SQLite outbox; email goes
to a real SMTP server (:mod:`tests.support.smtp_server`) where the header bytes can be read, or to the
capture inbox. One hostile request must never cost another request its message.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from otp_service.errors import WriteRefused
from otp_service.message.compose import Message
from otp_service.store import SqliteStore

from .support.service import ClientFactory
from .support.signin import signin
from .support.smtp_server import RecordingSMTPServer

FROM_DOMAIN = "acme.example"
FAST = {"wait_seconds": 0.3, "retry_delay_seconds": 0.05, "backoff_max_seconds": 0.3,
        "poll_seconds": 0.05, "timeout_seconds": 5}  # fmt: skip
TEMPLATES = [
    {"usageType": usage, "contentType": "text/html", "subject": "{{ application.name }} code",
     "content": '<p>Code {{code}}</p>{% if link %}<a href="{{ link }}">open</a>{% endif %}',
     "replyTo": "{{ support or '' }}"}
    for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
]  # fmt: skip


def smtp_config(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": {"provider": "smtp", "smtp": {
            "host": "127.0.0.1", "port": port, "fromEmail": f"Acme <no-reply@{FROM_DOMAIN}>",
            "templates": TEMPLATES, "name": "otp.test.example", "connectionTimeout": 1000,
            "greetingTimeout": 1000, "socketTimeout": 2000}},
        "templates": {"bundled": False},
        "limits": {"enabled": False},
        "delivery": FAST,
    } | extra  # fmt: skip


async def post_raw(
    client: Any, path: str, raw: str | bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST a body exactly as given (a JSON escape like \\ud800 survives)."""
    response = await client.post(
        path, data=raw, headers={"Content-Type": "application/json"} | (headers or {})
    )
    return response.status, await response.json()


async def raw_http(port: int, request: bytes) -> bytes:
    """Send bytes no HTTP client library would send (a header that is not UTF-8)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return answer


# 1. One bad request never fails its neighbours


async def test_lone_surrogates_are_400_and_do_not_harm_queued_neighbours(
    smtp_server: RecordingSMTPServer, service: ClientFactory
) -> None:
    """Lone surrogates in ip, to or a payload value, or a non-UTF-8 Idempotency-Key, are a 400
    before anything is stored; valid requests of the same burst, accepted 202 during an SMTP
    outage, are all delivered once the server returns."""
    client = await service(smtp_config(smtp_server.port))
    bad_bodies = [
        '{"to": "a@example.com", "type": "SignIn", "ip": "\\ud800", "payload": {"code": "1"}}',
        '{"to": "\\udfff@example.com", "type": "SignIn", "payload": {"code": "1"}}',
        '{"to": "a@example.com", "type": "SignIn", "payload": {"code": "1", "user": {"name": "x\\ud800"}}}',
        '{"to": "a@example.com", "type": "SignIn", "payload": {"code": "\\ud83d"}}',
        '{"to": "a@example.com", "type": "SignIn", "payload": {"\\ud800": 1, "code": "1"}}',
    ]
    good = [json.dumps(signin(f"user{n}@example.com", f"{n:06d}")) for n in range(6)]
    answers = await asyncio.gather(
        *(post_raw(client, "/v1/email", body) for body in [*good[:3], *bad_bodies, *good[3:]])
    )
    good_answers = answers[:3] + answers[3 + len(bad_bodies) :]
    bad_answers = answers[3 : 3 + len(bad_bodies)]
    assert [status for status, _ in bad_answers] == [400] * len(bad_bodies)
    assert {body["error"]["code"] for _, body in bad_answers} <= {
        "invalid_request", "invalid_header_value", "invalid_email"
    }  # fmt: skip
    assert [status for status, _ in good_answers] == [202] * 6

    port = client.server.port
    header_body = json.dumps(signin("key@example.com", "777777")).encode()
    answer = await raw_http(
        port,
        b"POST /v1/email HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Idempotency-Key: \xff\xfe-not-utf8\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(header_body)).encode() + b"\r\n\r\n" + header_body,
    )
    assert answer.startswith(b"HTTP/1.1 400") and b"invalid_header_value" in answer

    smtp_server.start()
    deadline = time.monotonic() + 10
    while len(smtp_server.messages) < 6 and time.monotonic() < deadline:  # noqa: ASYNC110 - another thread
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    received = sorted(m.rcpt_tos[0] for m in smtp_server.messages)
    assert received == [f"user{n}@example.com" for n in range(6)]
    for _, body in good_answers:
        record = await (await client.get(f"/v1/messages/{body['id']}")).json()
        assert record["status"] == "sent", record


async def test_store_batch_fails_only_the_operation_that_raised(tmp_path: Path) -> None:
    """In one write batch, an operation that raises (text SQLite cannot encode) fails alone: the
    other messages of the batch are stored."""
    store = SqliteStore(tmp_path / "outbox.sqlite3")
    await store.open()

    def message(text: str) -> Message:
        return Message(id=uuid.uuid4().hex, channel="email", to="a@example.com", type="SignIn",
                       locale="en", text=text, code="1")  # fmt: skip

    messages = [message("fine 1"), message("bad \ud800"), message("fine 2")]
    results = await asyncio.gather(
        *(store.accept(m, expires_at=time.time() + 60, lease_until=0, idempotency_key=None,
                       dedupe_key=None) for m in messages),
        return_exceptions=True,
    )  # fmt: skip
    try:
        # Refused for good, that caller alone: WriteRefused, caused by the encoding error.
        assert isinstance(results[1], WriteRefused)
        assert isinstance(results[1].__cause__, UnicodeEncodeError)
        assert [getattr(r, "created", None) for r in (results[0], results[2])] == [True, True]
        assert (await store.status(messages[0].id)) is not None
        assert (await store.status(messages[2].id)) is not None
        assert (await store.status(messages[1].id)) is None
        assert store.healthy
    finally:
        await store.close()


# 6. Request content never reaches an internal name or blows the stack


async def test_deeply_nested_payload_is_400_not_500(service: ClientFactory) -> None:
    """A payload value nested 450 arrays deep is refused with 400 invalid_request."""
    client = await service()
    deep = "[" * 450 + '"x"' + "]" * 450
    raw = (
        '{"to": "a@example.com", "type": "SignIn", "payload": {"code": "1", "user": {"name": %s}}}'
    )
    status, body = await post_raw(client, "/v1/email", raw % deep)
    assert status == 400 and body["error"]["code"] == "invalid_request"
    status, body = await post_raw(
        client, "/v1/sms", raw.replace("a@example.com", "+33612345678") % deep
    )
    assert status == 400


@pytest.mark.parametrize(
    "key", ["_logto_placeholder", "logto_placeholder", "range", "namespace", "lipsum", "brand"]
)
async def test_payload_key_named_like_an_internal_never_makes_a_500(
    service: ClientFactory, key: str
) -> None:
    """A payload key named like the placeholder helper or a template global renders normally
    (or is refused with a 4xx), never a 500."""
    client = await service()
    for path, to in (("/v1/email", "a@example.com"), ("/v1/sms", "+33612345678")):
        body = {"to": to, "type": "SignIn", "payload": {"code": "246810", key: "boom"}}
        response = await client.post(path, json=body)
        assert response.status < 500, await response.text()
        if response.status == 200:
            found = await (await client.get(f"/v1/messages/{(await response.json())['id']}")).json()
            assert "246810" in found["text"]


# 10. Header and link hygiene


@pytest.mark.parametrize("char", ["\u0085", "\u2028", "\u2029", "\x85", "\u009b"])
async def test_unicode_line_breaks_in_to_are_invalid_header_value(
    service: ClientFactory, char: str
) -> None:
    """NEL, LINE and PARAGRAPH SEPARATOR (and other C1 controls) in ``to`` are a 400
    invalid_header_value, like CR and LF."""
    client = await service()
    response = await client.post("/v1/email", json=signin(f"a{char}b@example.com", "1"))
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_header_value"


async def test_line_separator_never_reaches_reply_to_header(
    smtp_server: RecordingSMTPServer, service: ClientFactory
) -> None:
    """A value rendered into Reply-To with U+2028 is a 400; nothing is sent."""
    smtp_server.start()
    client = await service(smtp_config(smtp_server.port))
    body = signin(
        "a@example.com", "1", payload={"support": "x@example.com\u2028Bcc: evil@example.com"}
    )
    response = await client.post("/v1/email", json=body)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_header_value"
    assert smtp_server.messages == []


async def test_subject_shows_encoded_words_literally_and_folds_long_lines(
    smtp_server: RecordingSMTPServer, service: ClientFactory
) -> None:
    """An encoded word sent in application.name arrives as that literal text (never decoded
    into other text), and a long name is folded: every header line is at most 998 bytes."""
    smtp_server.start()
    client = await service(smtp_config(smtp_server.port))
    trick = "=?UTF-8?B?WW91ciBhY2NvdW50IGlzIGxvY2tlZA==?="  # "Your account is locked"
    long_name = "A" * 1400
    for name in (trick, long_name, "word " * 300):
        body = signin(
            "a@example.com", uuid.uuid4().hex[:6], payload={"application": {"name": name}}
        )
        response = await client.post("/v1/email", json=body)
        assert response.status == 200, await response.text()
    for received in smtp_server.messages:
        assert max(len(line) for line in received.header_block.split(b"\r\n")) <= 998
    subjects = [str(m.message["Subject"]) for m in smtp_server.messages]
    assert subjects[0] == f"{trick} code"  # the literal text, as written
    assert "Your account is locked" not in subjects[0]
    assert subjects[1] == f"{long_name} code"


@pytest.mark.parametrize(
    "link", ["javascript:alert(1)", "JAVASCRIPT:alert(1)", " javascript:x", "data:text/html,x",
             "vbscript:x"],
)  # fmt: skip
async def test_only_http_links_are_rendered_as_links(
    smtp_server: RecordingSMTPServer, service: ClientFactory, link: str
) -> None:
    """A link that is not http: or https: is never put into an href; an https link is."""
    smtp_server.start()
    client = await service(smtp_config(smtp_server.port))
    for value in (link, "https://auth.example.com/magic?x=1"):
        response = await client.post(
            "/v1/email", json=signin("a@example.com", uuid.uuid4().hex[:6], payload={"link": value})
        )
        assert response.status == 200, await response.text()
    bad, good = (m.message.get_body(("html",)).get_content() for m in smtp_server.messages)
    assert "href" not in bad and "javascript" not in bad.lower() and "data:text" not in bad
    assert 'href="https://auth.example.com/magic?x=1"' in good


@pytest.mark.parametrize("code", [True, False, {"a": 1}, ["1"]])
async def test_code_that_is_not_a_string_or_number_is_400(
    service: ClientFactory, code: Any
) -> None:
    """``code: true`` (or an object, a list) is refused with 400 instead of rendering "True"."""
    client = await service()
    response = await client.post("/v1/email", json={"to": "a@example.com", "type": "SignIn",
                                                    "payload": {"code": code}})  # fmt: skip
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"


async def test_integer_code_is_rendered_as_its_digits(service: ClientFactory) -> None:
    """A JSON integer for the code is converted: 482913 renders 482913."""
    client = await service()
    response = await client.post("/v1/email", json={"to": "a@example.com", "type": "SignIn",
                                                    "payload": {"code": 482913}})  # fmt: skip
    assert response.status == 200
    body = await response.json()
    found = await (await client.get(f"/v1/messages/{body['id']}")).json()
    assert found["code"] == "482913" and "482913" in found["text"]


@pytest.mark.parametrize("literal", ["12.5", "1e6", "482913.0", "-0.0", "1E+2"])
async def test_code_that_is_a_json_float_is_400(service: ClientFactory, literal: str) -> None:
    """A JSON number with a fraction or an exponent is not a code: 400 ``invalid_request``, and
    nothing is stored or sent (the body is sent as written, so 1e6 stays a float on the wire)."""
    client = await service()
    raw = '{"to": "a@example.com", "type": "SignIn", "payload": {"code": ' + literal + "}}"
    response = await client.post(
        "/v1/email", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "invalid_request"
    assert "payload.code" in body["error"]["message"]
    listing = await (await client.get("/v1/messages")).json()
    assert listing["messages"] == []
