"""The Supabase, Authentik and generic hooks end to end: ``otp-service serve`` as a real
process, requests built and signed as each system builds them, delivered into a real SMTP
server and the Vonage fake (the real SDK over the wire), or captured into the inbox; what the
log says (and never says); ``check-config`` on a malformed secret."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support import supabase as sb
from .support.command import Service, http, run
from .support.fakes import started
from .support.fakes.vonage import FakeVonage, logto_vonage_json
from .support.processes import Processes, smtp_email, wait_for
from .support.smtp_server import ServerFactory

GENERIC_TOKEN = "generic-hook-token-0123456789"
AUTHENTIK_TOKEN = "authentik-sms-token-0123456789"
INTAKES = {
    "supabase": {"secrets": [sb.SECRET]},
    "authentik": {"tokens": [AUTHENTIK_TOKEN]},
    "generic": {"tokens": [GENERIC_TOKEN]},
}
TEMPLATES = [
    {"usageType": usage, "contentType": "text/plain", "subject": f"Acme {usage}",
     "content": "Your code is {{code}}.{% if link %} Or open {{link}}{% endif %}"}
    for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
]  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture
def fake_vonage() -> Iterator[FakeVonage]:
    with started(FakeVonage) as server:
        yield server


def post(url: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """One blocking POST of exactly ``raw`` (a signature covers these bytes)."""
    request = urllib.request.Request(url, data=raw, method="POST", headers=headers)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def signed(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    raw = sb.go_json(body)
    return post(url, raw, sb.sign(raw))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_until(condition: Any, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_hooks_deliver_over_smtp_and_sms_from_a_real_process(
    tmp_path: Path, services: list[Service], smtp_servers: ServerFactory, fake_vonage: FakeVonage
) -> None:
    """Supabase's email and SMS hooks, Authentik's SMS and the generic email reach the SMTP
    server and Vonage from a served process; nothing secret reaches its log."""
    smtp = smtp_servers()
    config = {
        "email": {"provider": "smtp", "smtp": {
            "host": "127.0.0.1", "port": smtp.port, "fromEmail": "Acme <no-reply@acme.example>",
            "templates": TEMPLATES,
        }},
        "sms": {"provider": "vonage", "vonage": logto_vonage_json(),
                "endpoints": {"vonage": fake_vonage.endpoint(timeout_seconds=5)}},
        "limits": {"enabled": False},
        "intakes": INTAKES,
    }  # fmt: skip
    service = Service(tmp_path, config, "--log-format", "json")
    services.append(service)
    base = f"{service.base}/v1/hooks"

    body = sb.email_body("signup", token="305805", token_hash="pkce_e2e")
    assert signed(f"{base}/supabase/email", body) == (200, {})
    assert signed(f"{base}/supabase/sms", sb.sms_body("561166", "14155552671")) == (200, {})
    authentik = {"From": "", "To": "+41791234567", "Body": "394817",
                 "Message": "Use this code to authenticate in authentik: 394817"}  # fmt: skip
    raw = json.dumps(authentik).encode()
    status, answer = post(f"{base}/authentik/sms", raw, bearer(AUTHENTIK_TOKEN))
    assert status == 200 and answer["status"] == "sent", answer
    generic = {"to": "grace@example.com", "code": "482913", "type": "SignIn"}
    raw = json.dumps(generic).encode()
    status, answer = post(f"{base}/generic/email", raw, bearer(GENERIC_TOKEN))
    assert status == 200 and answer["status"] == "sent", answer

    wait_until(lambda: len(smtp.messages) == 2, "two emails")
    mails = {m.rcpt_tos[0]: m.message for m in smtp.messages}
    signup = mails["ada@example.com"].get_content()
    assert "305805" in signup and "/verify?token=pkce_e2e&type=signup" in signup
    assert "482913" in mails["grace@example.com"].get_content()
    texts = {sms["to"]: sms["text"] for sms in fake_vonage.sms}
    assert "561166" in texts["14155552671"] and "394817" in texts["41791234567"]

    log = service.log()
    events = [e for e in service.events() if e.get("intake")]
    assert {e["intake"] for e in events} == {"supabase", "authentik", "generic"}
    for secret in ("whsec_", AUTHENTIK_TOKEN, GENERIC_TOKEN, "305805", "561166", "pkce_e2e"):
        assert secret not in log


def test_hooks_land_in_the_inbox_of_a_real_process(tmp_path: Path, services: list[Service]) -> None:
    """In capture mode each hook's message (Supabase, generic, Authentik with basic auth) is read
    back with ``latest?to=`` and names its source; a retry of the Supabase call (new webhook-id, same uuid) is captured once."""
    service = Service(tmp_path, {"intakes": INTAKES})
    services.append(service)
    base = f"{service.base}/v1/hooks"
    body = sb.email_body("magiclink", token="271828")
    raw = sb.go_json(body)
    assert post(f"{base}/supabase/email", raw, sb.sign(raw)) == (200, {})
    assert post(f"{base}/supabase/email", raw, sb.sign(raw)) == (200, {})  # Auth's retry
    generic = json.dumps({"to": "+41791234567", "message": "Your code is 314159"}).encode()
    assert post(f"{base}/generic/sms", generic, bearer(GENERIC_TOKEN))[0] == 200
    authentik = json.dumps(
        {
            "From": "",
            "To": "+41791234568",
            "Body": "394817",
            "Message": "Use this code to authenticate in authentik: 394817",
        }
    )
    basic = base64.b64encode(f"authentik:{AUTHENTIK_TOKEN}".encode()).decode()
    status, _ = post(
        f"{base}/authentik/sms", authentik.encode(), {"Authorization": f"Basic {basic}"}
    )
    assert status == 200

    status, _, data = http("GET", f"{service.base}/v1/messages/latest?to=ada@example.com")
    message = json.loads(data)
    assert status == 200 and message["code"] == "271828" and message["source"] == "supabase"
    assert message["type"] == "SignIn" and message["link"].endswith(
        "redirect_to=" + ("http%3A%2F%2Flocalhost%3A3000%2Fwelcome%3Fa%3D1%26b%3D2")
    )
    status, _, data = http("GET", f"{service.base}/v1/messages/latest?to=%2B41791234567")
    assert json.loads(data)["code"] == "314159" and json.loads(data)["source"] == "generic"
    status, _, data = http("GET", f"{service.base}/v1/messages/latest?to=%2B41791234568")
    assert (status, json.loads(data)["code"], json.loads(data)["source"]) == (
        200, "394817", "authentik")  # fmt: skip
    _, _, data = http("GET", f"{service.base}/v1/messages?to=ada@example.com")
    assert len(json.loads(data)["messages"]) == 1


def test_check_config_names_a_malformed_supabase_secret(tmp_path: Path) -> None:
    """``check-config`` fails on a secret that is not ``v1,whsec_<base64>``, naming the field
    and the fix, and never printing the value."""
    secret = "v1,whsec_" + base64.b64encode(b"too short").decode()
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"intakes": {"supabase": {"secrets": [secret]}}}))
    checked = run("check-config", str(path))
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0
    assert "intakes.supabase.secrets[0]" in output and "v1,whsec_" in output
    assert secret not in output


async def test_supabase_answer_does_not_wait_for_a_slow_provider(processes: Processes) -> None:
    """With an SMTP server that takes 10 s per message and ``delivery.wait_seconds: 30``, the
    Supabase hook still answers ``{}`` within Auth's 5 s for the whole call (the hook's own
    bound is 3 s), before the server has accepted anything, and the message arrives afterwards
    from the outbox."""
    sink = processes.sink(delay=10.0)
    email = smtp_email(sink)
    email["smtp"]["socketTimeout"] = 20_000  # the slow 250 is an answer, not a dead server
    config = {
        "email": email,
        "store": {"path": str(processes.folder / "outbox.sqlite3")},
        "limits": {"enabled": False},
        "delivery": {"wait_seconds": 30},
        "intakes": {"supabase": {"secrets": [sb.SECRET]}},
    }
    path = processes.folder / "config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    service = processes.service(path)
    raw = sb.go_json(sb.email_body("magiclink", token="577215"))
    async with aiohttp.ClientSession() as client:
        await service.ready(client)
        url = f"{service.url}/v1/hooks/supabase/email"
        started = time.monotonic()
        async with client.post(url, data=raw, headers=sb.sign(raw)) as response:
            answer = (response.status, await response.json())
        elapsed = time.monotonic() - started
        assert answer == (200, {})
        assert elapsed < 5.0, f"answered after {elapsed:.1f} s: past Supabase Auth's 5 s budget"
        assert sink.events() == []  # answered while the server still holds its 250
        await wait_for(lambda: len(sink.events()) == 1, 30, "the message to arrive")
