"""Interop: Logto's own published HTTP Email / HTTP SMS connectors against the running service.

The service runs as a real process on a free port; ``tests/interop/send.mjs`` loads the npm
packages ``@logto/connector-http-email`` and ``@logto/connector-http-sms`` (pinned in
``tests/interop/package.json``) the way Logto core does and calls ``sendMessage``; the result is
read back from the capture inbox, or, for real SMS providers, from HTTP fakes of Vonage and
Aliyun that the service's real provider SDKs call. Needs Node 20+ and
``npm ci --prefix tests/interop``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from .support.fakes import started
from .support.fakes.aliyun import FakeAliyun, logto_aliyun_json
from .support.fakes.vonage import FakeVonage, basic_auth, logto_vonage_json

pytestmark = pytest.mark.slow

INTEROP = Path(__file__).resolve().parent / "interop"
SEND = INTEROP / "send.mjs"
CONNECTORS = ("@logto/connector-http-email", "@logto/connector-http-sms")
TOKEN = "interop-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
START_TIMEOUT = 10.0
NODE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Service:
    port: int
    token: str | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert response.status == 200, f"GET {path}: {response.status} {body!r}"
        return json.loads(body)

    def messages(self, **query: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.get(f"/v1/messages?{urlencode(query)}")["messages"]
        return messages

    def carrying(self, code: str) -> list[dict[str, Any]]:
        """Every captured message, on any channel and to anyone, that holds ``code``."""
        return [m for m in self.messages(limit="1000") if m["code"] == code or code in m["text"]]

    def healthy(self) -> bool:
        try:
            return bool(self.get("/healthz") == {"status": "ok"})
        except (OSError, AssertionError):
            return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _require_connectors() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the Logto interop tests need Node.js 20 or newer")
    missing = [
        p for p in CONNECTORS if not (INTEROP / "node_modules" / p / "package.json").is_file()
    ]
    if missing:
        pytest.fail(
            f"Logto connector packages not installed ({', '.join(missing)}): "
            "run `npm ci --prefix tests/interop` from the repository root"
        )
    return node


@contextlib.contextmanager
def _start(tmp: Path, config: dict[str, Any]) -> Iterator[Service]:
    """Run ``otp-service serve`` with ``config``; yields it once /healthz answers."""
    config_file = tmp / "otp-service.yaml"
    config = {"store": {"path": str(tmp / "outbox.sqlite3")}, **config}  # this run's own outbox
    config_file.write_text(json.dumps(config), encoding="utf-8")  # JSON is valid YAML
    token = config.get("auth", {}).get("tokens", [None])[0]
    service = Service(_free_port(), token)
    log = tmp / "service.log"
    # Its own state folder: the outbox database defaults to $XDG_STATE_HOME/otp-service/.
    env = dict(os.environ, XDG_STATE_HOME=str(tmp / "state"))
    with log.open("wb") as out:
        command = [sys.executable, "-m", "otp_service", "serve", "--port", str(service.port)]
        proc = subprocess.Popen(
            [*command, "--config", str(config_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"otp-service exited with {proc.returncode}:\n{log.read_text()}")
            if service.healthy():
                break
            if time.monotonic() > deadline:
                pytest.fail(f"no answer on /healthz in {START_TIMEOUT}s:\n{log.read_text()}")
            time.sleep(0.05)
        yield service
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def node() -> str:
    return _require_connectors()


@pytest.fixture(scope="module")
def open_service(tmp_path_factory: pytest.TempPathFactory, node: str) -> Iterator[Service]:
    """The service with its default capture providers and bundled templates, no auth."""
    with _start(tmp_path_factory.mktemp("open"), {"capture": {"max_messages": 1000}}) as service:
        yield service


@pytest.fixture(scope="module")
def auth_service(tmp_path_factory: pytest.TempPathFactory, node: str) -> Iterator[Service]:
    """The service with tokens configured: Logto's connectors get TOKEN, send-only (as the
    README advises); the test reads the inbox with READER (index 0: the Service's own)."""
    tokens = [READER, {"token": TOKEN, "scopes": ["send"]}]
    with _start(tmp_path_factory.mktemp("auth"), {"auth": {"tokens": tokens}}) as service:
        yield service


def send(node: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run one connector ``sendMessage`` through send.mjs; returns its JSON verdict."""
    done = subprocess.run(
        [node, str(SEND)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"send.mjs failed ({done.returncode}):\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def error_body(result: dict[str, Any]) -> dict[str, Any]:
    """Our JSON error as the connector surfaced it (ConnectorError data = the raw body)."""
    assert result["ok"] is False, result
    assert result["error"]["code"] == "general", result
    body: dict[str, Any] = json.loads(result["error"]["data"]["message"])
    return body


def test_email_connector_sign_in_reaches_inbox(node: str, open_service: Service) -> None:
    """Logto's HTTP Email connector delivers a French SignIn code to the right address."""
    job = {
        "connector": "email",
        "endpoint": f"{open_service.base}/v1/email",
        "to": "Marie.Curie@Example.COM",
        "type": "SignIn",
        "payload": {"code": "314159", "locale": "fr-FR", "uiLocales": "fr-FR en"},
        "ip": "203.0.113.7",
    }

    result = send(node, job)

    assert result == {"ok": True, "status": 200}
    [message] = open_service.messages(to="Marie.Curie@example.com", channel="email")
    assert message["channel"] == "email"
    assert message["to"] == "Marie.Curie@example.com"
    assert message["type"] == "SignIn"
    assert message["code"] == "314159"
    assert message["locale"] == "fr"  # Logto's fr-FR picks the bundled French templates
    assert "314159" in message["text"]
    assert "314159" in (message["html"] or "")
    assert message["subject"]
    assert message["status"] == "captured"


def test_sms_connector_number_without_plus_is_normalised(node: str, open_service: Service) -> None:
    """Logto's HTTP SMS connector sends digits without '+'; the capture holds E.164 and the code."""
    job = {
        "connector": "sms",
        "endpoint": f"{open_service.base}/v1/sms",
        "to": "8613800138000",
        "type": "Register",
        "payload": {"code": "271828", "locale": "zh-CN"},
    }

    result = send(node, job)

    assert result == {"ok": True, "status": 200}
    [message] = open_service.messages(to="+8613800138000", channel="sms")
    assert message["to"] == "+8613800138000"
    assert message["type"] == "Register"
    assert message["code"] == "271828"
    assert "271828" in message["text"]


def test_connectors_with_configured_token_are_accepted(node: str, auth_service: Service) -> None:
    """Both connectors, configured with 'Bearer <token>' (a send-only token), get through the
    service's auth."""
    email = {
        "connector": "email",
        "endpoint": f"{auth_service.base}/v1/email",
        "authorization": f"Bearer {TOKEN}",
        "to": "ada@example.org",
        "type": "SignIn",
        "payload": {"code": "161803", "locale": "en"},
    }
    sms = {
        "connector": "sms",
        "endpoint": f"{auth_service.base}/v1/sms",
        "authorization": f"Bearer {TOKEN}",
        "to": "+14155552671",
        "type": "SignIn",
        "payload": {"code": "141421", "locale": "en"},
    }

    assert send(node, email) == {"ok": True, "status": 200}
    assert send(node, sms) == {"ok": True, "status": 200}
    assert [m["code"] for m in auth_service.messages(to="ada@example.org")] == ["161803"]
    assert [m["code"] for m in auth_service.messages(to="+14155552671")] == ["141421"]


@pytest.mark.parametrize("authorization", ["Bearer wrong-token-0123456789", None])
@pytest.mark.parametrize("channel", ["email", "sms"])
def test_connectors_with_wrong_or_no_token_report_unauthorized(
    node: str, auth_service: Service, channel: str, authorization: str | None
) -> None:
    """A wrong or missing token surfaces our 401 'unauthorized' to Logto; nothing is captured."""
    code = "401401" if authorization else "402402"
    job: dict[str, Any] = {
        "connector": channel,
        "endpoint": f"{auth_service.base}/v1/{channel}",
        "to": "eve@example.org" if channel == "email" else "+14155550100",
        "type": "SignIn",
        "payload": {"code": code, "locale": "en"},
    }
    if authorization is not None:
        job["authorization"] = authorization

    result = send(node, job)

    body = error_body(result)
    assert body["error"]["code"] == "unauthorized"
    assert TOKEN not in json.dumps(result)
    assert code not in result["error"]["data"]["message"]
    assert auth_service.carrying(code) == []


def test_email_connector_invalid_address_reports_invalid_email(
    node: str, open_service: Service
) -> None:
    """An address the service cannot deliver to comes back to Logto as 'invalid_email'."""
    job = {
        "connector": "email",
        "endpoint": f"{open_service.base}/v1/email",
        "to": "not-an-address",
        "type": "SignIn",
        "payload": {"code": "662607", "locale": "en"},
    }

    result = send(node, job)

    body = error_body(result)
    assert body["error"]["code"] == "invalid_email"
    assert "662607" not in result["error"]["data"]["message"]
    assert open_service.carrying("662607") == []


def test_email_connector_logto_context_payload_is_accepted(
    node: str, open_service: Service
) -> None:
    """The user, application, organization and inviter objects Logto adds do not break a send."""
    person = {
        "id": "u1",
        "name": "Grace Hopper",
        "username": "grace",
        "avatar": None,
        "primaryEmail": "grace@example.net",
        "primaryPhone": None,
        "profile": {"givenName": "Grace", "familyName": "Hopper"},
    }
    job = {
        "connector": "email",
        "endpoint": f"{open_service.base}/v1/email",
        "to": "grace@example.net",
        "type": "OrganizationInvitation",
        "payload": {
            "code": "602214",
            "link": "https://auth.example.net/invitation/abc",
            "locale": "en-US",
            "uiLocales": "en-US",
            "user": person,
            "inviter": {**person, "id": "u2", "name": "Alan Turing"},
            "application": {
                "id": "app1",
                "name": "Navy Portal",
                "displayName": None,
                "branding": {"logoUrl": "https://example.net/logo.png"},
                "customData": {"tier": ["free", "pro"]},
            },
            "organization": {"id": "org1", "name": "US Navy", "branding": {}},
            "someFutureKey": {"nested": [1, 2, 3]},
        },
        "ip": "2001:db8::7",
    }

    result = send(node, job)

    assert result == {"ok": True, "status": 200}
    [message] = open_service.messages(to="grace@example.net")
    assert message["type"] == "OrganizationInvitation"
    assert message["code"] == "602214"
    assert message["link"] == "https://auth.example.net/invitation/abc"


# --------------------------------------------------------------------------- real SMS providers


@dataclass(frozen=True)
class Routed:
    """The service routing +86 to the Aliyun fake and every other number to the Vonage fake."""

    service: Service
    vonage: FakeVonage
    aliyun: FakeAliyun
    log: Path


@pytest.fixture
def routed(tmp_path: Path, node: str) -> Iterator[Routed]:
    """Both fakes in this process, the service in its own, configured with Logto's connector
    JSON of each provider and ``sms.endpoints`` at the fakes (Vonage over https, trusting the
    fake's test CA through ``ca_file``)."""
    with started(FakeVonage) as vonage, started(FakeAliyun) as aliyun:
        config = {
            "sms": {
                "provider": "vonage",
                "vonage": logto_vonage_json(),
                "aliyun": logto_aliyun_json(),
                "endpoints": {
                    "vonage": vonage.endpoint(timeout_seconds=5),
                    "aliyun": aliyun.endpoint(timeout_seconds=5),
                },
                "routes": [
                    {"prefixes": ["+86"], "providers": ["aliyun"]},
                    {"providers": ["vonage"]},
                ],
            }
        }
        with _start(tmp_path, config) as service:
            yield Routed(service, vonage, aliyun, tmp_path / "service.log")


def _received(routed: Routed) -> str:
    """What each fake saw, and the service's log: the context of a failed assertion."""
    return (
        f"\nVonage fake got: {[r.form for r in routed.vonage.requests]}"
        f"\nAliyun fake got: {[r.query for r in routed.aliyun.requests]}"
        f"\nservice log:\n{routed.log.read_text(errors='replace')[-3000:]}"
    )


def test_sms_connector_routes_to_real_providers(node: str, routed: Routed) -> None:
    """Through Logto's HTTP SMS connector, a mainland China number reaches Aliyun's SendSms with
    the China template code and the code in TemplateParam; a French number reaches Vonage's
    /sms/json with the code in the text. Exactly one provider request each."""
    base = {"connector": "sms", "endpoint": f"{routed.service.base}/v1/sms", "withBody": True}
    china = base | {
        "to": "8613800138000",  # as Logto stores it: country code, no '+'
        "type": "SignIn",
        "payload": {"code": "135790", "locale": "zh-CN"},
    }
    france = base | {
        "to": "+33612345678",
        "type": "SignIn",
        "payload": {"code": "246801", "locale": "fr-FR"},
    }

    china_result = send(node, china)
    france_result = send(node, france)

    assert china_result["ok"] is True, f"{china_result}{_received(routed)}"
    assert france_result["ok"] is True, f"{france_result}{_received(routed)}"
    assert (china_result["status"], china_result["body"]["provider"]) == (200, "aliyun"), (
        f"{china_result}{_received(routed)}"
    )
    assert (france_result["status"], france_result["body"]["provider"]) == (200, "vonage"), (
        f"{france_result}{_received(routed)}"
    )
    assert china_result["body"]["status"] == france_result["body"]["status"] == "sent"

    aliyun_requests = routed.aliyun.requests
    assert len(aliyun_requests) == 1, f"Aliyun: expected 1 request{_received(routed)}"
    [sms] = routed.aliyun.sms
    connector = logto_aliyun_json()
    [sign_in] = [t for t in connector["templates"] if t["usageType"] == "SignIn"]
    assert sms["PhoneNumbers"] == "13800138000", _received(routed)
    assert sms["TemplateCode"] == sign_in["templateCode"]["china"], _received(routed)
    assert sms["SignName"] == connector["signName"], _received(routed)
    params = json.loads(sms["TemplateParam"])
    assert params["code"] == "135790", _received(routed)
    assert "246801" not in json.dumps(params)
    authorization = aliyun_requests[0].header("Authorization") or ""
    assert authorization.startswith("ACS3-HMAC-SHA256 ")
    assert f"Credential={connector['accessKeyId']}" in authorization

    vonage_requests = routed.vonage.requests
    assert len(vonage_requests) == 1, f"Vonage: expected 1 request{_received(routed)}"
    [form] = routed.vonage.sms
    assert form["to"] == "33612345678", _received(routed)
    assert "246801" in form["text"], _received(routed)
    assert "135790" not in form["text"]
    assert form["from"] == logto_vonage_json()["brandName"]
    assert basic_auth(vonage_requests[0]) == (
        logto_vonage_json()["apiKey"],
        logto_vonage_json()["apiSecret"],
    )
