"""What an operator sees: metrics, event logs, probes, warnings and the start banner.

Most tests run ``otp-service serve`` as a real process and read its log, its banner and its
endpoints as an operator would; a delivery that cannot succeed uses an SMTP port nobody
listens on (the "wrong SMTP port" mistake).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support import ROOT
from .support.command import BIN, Service, http, run
from .support.ports import free_port
from .support.service import ClientFactory
from .support.signin import signin

TOKEN = "ops-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CODE = "918273"
SIGN_IN = signin("alice@example.com", CODE, locale=None)


def closed_port() -> int:
    """A port on which nothing listens (bound, then released)."""
    return free_port()


def unreachable_smtp(**delivery: Any) -> dict[str, Any]:
    """SMTP on a port where nothing listens: every attempt fails, transiently."""
    return {
        "auth": {"tokens": [TOKEN]},
        "email": {
            "provider": "smtp",
            "smtp": {"host": "127.0.0.1", "port": closed_port(), "fromEmail": "otp@example.com"},
        },
        "delivery": {
            "retry_delay_seconds": 0.1,
            "backoff_max_seconds": 0.2,
            "wait_seconds": 0.2,
            "poll_seconds": 0.05,
            "ttl_seconds": 2,
            **delivery,
        },
    }


def wait_status(base: str, message_id: str, status: str, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        code, _, body = http("GET", f"{base}/v1/messages/{message_id}", headers=AUTH)
        answer: dict[str, Any] = json.loads(body)
        if code == 200 and answer["status"] == status:
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)


def scrape(base: str, headers: dict[str, str] | None = AUTH) -> str:
    status, _, body = http("GET", f"{base}/metrics", headers=headers)
    assert status == 200, body
    return body.decode()


@pytest.mark.slow
def test_expired_message_logs_every_attempt_retry_and_expiry(
    tmp_path: Path, services: list[Service]
) -> None:
    """A code that never arrives leaves one line per attempt (numbered 1, 2, 3...), each retry
    with its delay, and a WARNING 'expired' with the last error, all with one request id and
    the masked recipient, never the code; the metrics count it as expired."""
    service = Service(tmp_path, unreachable_smtp(), "--log-format", "json")
    services.append(service)
    status, headers, body = http(
        "POST", f"{service.base}/v1/email", SIGN_IN, {**AUTH, "X-Request-Id": "req-expiry-1"}
    )
    assert status == 202 and headers["X-Request-Id"] == "req-expiry-1"
    message_id = json.loads(body)["id"]
    final = wait_status(service.base, message_id, "expired")
    assert "expired before delivery" in final["error"]
    deadline = time.monotonic() + 10
    while not any(e["event"] == "expired" for e in service.events()):
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.1)
    mine = [e for e in service.events() if e.get("id") == message_id]
    assert {e["request_id"] for e in mine} == {"req-expiry-1"}
    attempts = [e for e in mine if e["event"] == "attempt"]
    assert [e["attempt"] for e in attempts] == list(range(1, len(attempts) + 1))
    assert len(attempts) >= 2 and all(e["outcome"] == "transient" for e in attempts)
    assert all(e["provider"] == "smtp" and e["ms"] >= 0 for e in attempts)
    retries = [e for e in mine if e["event"] == "retry scheduled"]
    assert retries and all(e["delay_s"] > 0 for e in retries)
    (expired,) = [e for e in mine if e["event"] == "expired"]
    assert expired["level"] == "WARNING" and expired["last_error"]
    assert expired["to"] == "a***@example.com"
    accepted = [e for e in mine if e["event"] == "request accepted"]
    assert accepted and accepted[0]["http_status"] == 202 and accepted[0]["type"] == "SignIn"
    log = service.log()
    assert CODE not in log and "alice@" not in log and TOKEN not in log
    text = scrape(service.base)
    assert 'otp_messages_total{channel="email",status="expired"} 1.0' in text
    assert 'otp_provider_up{provider="smtp"} 0.0' in text
    assert 'outcome="transient",provider="smtp"' in text
    for line in [json.dumps(e) for e in mine]:  # shown by `pytest -s`: the report quotes them
        print(line)


async def test_metrics_scrape_has_every_family(service: ClientFactory) -> None:
    """One scrape returns every documented family; no label holds a recipient or a code."""
    limits = {"enabled": True, "per_recipient": {"count": 1, "window_seconds": 60}}
    client = await service({"limits": limits})  # capture mode turns limits off unless asked
    assert (await client.post("/v1/email", json=SIGN_IN)).status == 200
    refused = await client.post("/v1/email", json={**SIGN_IN, "payload": {"code": "111222"}})
    assert refused.status == 429
    assert (await client.post("/v1/email", json={"to": "x", "type": "Weird"})).status == 400
    response = await client.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert families >= {
        "otp_requests_total",
        "otp_delivery_attempts_total",
        "otp_delivery_attempt_seconds",
        "otp_messages_total",
        "otp_outbox_pending",
        "otp_outbox_oldest_pending_seconds",
        "otp_outbox_in_flight",
        "otp_limit_refusals_total",
        "otp_provider_up",
        "otp_build_info",
    }, families
    assert not any(name.endswith("_created") for name in families)
    assert 'otp_requests_total{channel="email",status="429",type="SignIn"} 1.0' in text
    assert 'otp_requests_total{channel="email",status="400",type="other"} 1.0' in text
    assert 'otp_limit_refusals_total{rule="per_recipient"} 1.0' in text
    assert 'otp_messages_total{channel="email",status="captured"} 1.0' in text
    assert 'otp_delivery_attempt_seconds_count{channel="email",provider="capture"} 1.0' in text
    assert 'otp_provider_up{provider="capture"} 1.0' in text
    assert re.search(r"^otp_outbox_pending 0\.0$", text, re.M)
    assert re.search(r'^otp_build_info\{python="[\d.]+",version="[\d.]+\w*"\} 1\.0$', text, re.M)
    assert "alice" not in text and CODE not in text and "111222" not in text


@pytest.mark.slow
def test_metrics_port_serves_without_token_while_api_keeps_it(
    tmp_path: Path, services: list[Service]
) -> None:
    """--metrics-port serves /metrics without a token; /metrics on the API port still needs it."""
    metrics_port = free_port()
    config = {"auth": {"tokens": [TOKEN]}}
    service = Service(tmp_path, config, "--metrics-port", str(metrics_port))
    services.append(service)
    assert http("GET", f"{service.base}/metrics")[0] == 401
    text = scrape(f"http://127.0.0.1:{metrics_port}", headers=None)
    assert "# TYPE otp_requests_total counter" in text
    assert http("GET", f"http://127.0.0.1:{metrics_port}/v1/messages")[0] == 404


async def test_readyz_reports_store_and_last_provider_outcome(service: ClientFactory) -> None:
    """/readyz answers JSON with the store's state and each provider's last outcome."""
    client = await service()
    before = await (await client.get("/readyz")).json()
    assert before["status"] == "ready" and before["store"]["state"] == "ok"
    assert before["providers"]["capture"] == {"last_outcome": None, "at": None}
    assert (await client.post("/v1/email", json=SIGN_IN)).status == 200
    after = await (await client.get("/readyz")).json()
    assert after["providers"]["capture"]["last_outcome"] == "captured"
    assert after["store"]["pending"] == 0


@pytest.mark.slow
def test_access_log_masks_recipients_and_query_tokens(
    tmp_path: Path, services: list[Service]
) -> None:
    """--access-log names each request but masks ?to= and hides any other query value."""
    service = Service(tmp_path, {"auth": {"tokens": [TOKEN]}}, "--access-log", "--log-format",
                      "text")  # fmt: skip
    services.append(service)
    http("GET", f"{service.base}/v1/messages?to=alice@example.com&limit=5", headers=AUTH)
    http("GET", f"{service.base}/v1/messages/bob@example.com", headers=AUTH)
    http("GET", f"{service.base}/v1/messages?to=%2B8613800138000&access_token={TOKEN}")
    deadline = time.monotonic() + 10
    while "access_token" not in service.log():
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.1)
    log = service.log()
    assert "alice@" not in log and "13800138000" not in log and TOKEN not in log
    assert "bob@" not in log and "path=/v1/messages/b***@example.com" in log
    assert "to=a***@example.com&limit=5" in log
    assert "to=+86***8000&access_token=***" in log
    assert re.search(
        r"status=401 .*request_id=[0-9a-f]{16}|request_id=[0-9a-f]{16}.*status=401", log
    )


def read_banner(process: subprocess.Popen[bytes], fd: int, seconds: float = 20) -> str:
    """What the process wrote to its terminal until the banner's last line."""
    out = b""
    deadline = time.monotonic() + seconds
    while b"/v1/messages" not in out and b"Authorization Header" not in out.split(b"\n")[-2:][0]:
        assert process.poll() is None and time.monotonic() < deadline, out
        if select.select([fd], [], [], 0.2)[0]:
            out += os.read(fd, 4096)
    time.sleep(0.3)
    while select.select([fd], [], [], 0.2)[0]:
        out += os.read(fd, 4096)
    return out.decode()


@pytest.mark.slow
def test_banner_on_a_terminal_masks_the_token_and_shows_reachable_urls(tmp_path: Path) -> None:
    """On a terminal (docker run -t) the banner never prints a token in full, and listening on
    0.0.0.0 it gives Logto URLs it can reach (host name, host.docker.internal), not 0.0.0.0."""
    config = tmp_path / "config.yaml"
    store = tmp_path / "outbox.sqlite3"
    config.write_text(
        yaml.safe_dump({"auth": {"tokens": [TOKEN]}, "store": {"path": str(store)}}),
        encoding="utf-8",
    )
    primary, secondary = pty.openpty()
    port = free_port()
    process = subprocess.Popen(
        [str(BIN), "serve", "--config", str(config), "--host", "0.0.0.0", "--port", str(port)],
        stdout=secondary, stderr=secondary, cwd=ROOT,
    )  # fmt: skip
    os.close(secondary)
    try:
        banner = read_banner(process, primary)
    finally:
        process.terminate()
        process.wait(timeout=20)
        os.close(primary)
    assert TOKEN not in banner and "Bearer <auth.tokens[0]: ops-" in banner
    endpoints = re.findall(r"Endpoint:\s+(\S+)", banner)
    assert endpoints and all("0.0.0.0" not in url for url in endpoints), banner
    assert endpoints[0] == f"http://{socket.gethostname()}:{port}/v1/email"
    assert f"http://host.docker.internal:{port}" in banner
    assert "WARNING server.host" in banner  # capture on a public address


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "check.yaml"
    config.setdefault("store", {"path": str(tmp_path / "outbox.sqlite3")})
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.slow
def test_check_config_warns_of_provider_sections_nothing_uses(tmp_path: Path) -> None:
    """An SMTP section with email.provider capture, or a Vonage section no route uses, is a
    warning from check-config (exit 0): codes would silently be captured, never sent."""
    vonage = {
        "apiKey": "a1b2c3d4",
        "apiSecret": "s3cret-value",
        "brandName": "Acme",
        "templates": [
            {"usageType": t, "content": "Code {{code}}"}
            for t in ("SignIn", "Register", "ForgotPassword", "Generic")
        ],
    }
    smtp = {"host": "smtp.example.com", "port": 587, "fromEmail": "otp@example.com"}
    path = write_config(
        tmp_path, {"email": {"provider": "capture", "smtp": smtp}, "sms": {"vonage": vonage}}
    )
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "2 warning(s)" in result.stdout
    assert "WARNING email.smtp:" in result.stdout and "email.provider: smtp" in result.stdout
    assert "WARNING sms.vonage:" in result.stdout


@pytest.mark.slow
def test_check_config_refuses_what_serve_refuses_with_the_same_exit_code(tmp_path: Path) -> None:
    """A public host without tokens: check-config and serve both refuse, with one exit code."""
    path = write_config(tmp_path, {"server": {"host": "0.0.0.0"}})
    checked = run("check-config", str(path))
    served = run("serve", "--config", str(path), "--port", str(free_port()))
    assert checked.returncode == served.returncode == 1
    assert "server.host" in checked.stderr and "server.host" in served.stderr


@pytest.mark.slow
def test_version_flag_prints_the_package_version() -> None:
    """otp-service --version prints the installed version and exits 0."""
    from otp_service import __version__

    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"otp-service {__version__}"


@pytest.mark.slow
def test_render_with_bad_payload_json_is_a_one_line_error() -> None:
    """render --payload with invalid JSON says so on one line, without a traceback."""
    result = run("render", "--channel", "email", "--type", "SignIn", "--payload", "{nope")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "--payload is not valid JSON" in result.stderr


@pytest.mark.slow
def test_store_files_are_private_to_the_service_user(
    tmp_path: Path, services: list[Service]
) -> None:
    """The outbox, its WAL and lock files are created 0600 (codes wait there for delivery)."""
    old = os.umask(0o022)
    try:
        service = Service(tmp_path, {})
    finally:
        os.umask(old)
    services.append(service)
    assert http("POST", f"{service.base}/v1/email", SIGN_IN)[0] == 200
    files = [p for p in tmp_path.iterdir() if p.name.startswith("outbox.sqlite3")]
    assert {p.name for p in files} >= {"outbox.sqlite3", "outbox.sqlite3.lock"}
    assert any(p.name.endswith("-wal") for p in files)
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path


@pytest.mark.slow
def test_text_log_format_is_one_readable_line_per_event(tmp_path: Path) -> None:
    """--log-format text writes 'time LEVEL logger event key=value' lines (the terminal default)."""
    code = (
        "import logging, sys\n"
        "from otp_service import logs\n"
        "logs.setup('text', 'INFO', sys.stdout)\n"
        "logs.request_id.set('r1')\n"
        "logs.event(logging.getLogger('otp_service.outbox'), logging.WARNING, 'expired',"
        " id='m1', to=logs.mask_recipient('+8613800138000'), last_error='connection refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING otp_service\.outbox expired "
        r'request_id=r1 id=m1 to=\+86\*\*\*8000 last_error="connection refused"\n',
        result.stdout,
    ), result.stdout


def test_other_libraries_records_are_masked_at_every_level() -> None:
    """A library's record, at any level, shows its format string with every argument that may
    carry data hidden, and any address or number left in its text or traceback masked; numbers
    and peers stay readable, and our own events are written as they are."""
    from otp_service import logs

    stream = io.StringIO()
    logs.setup("text", "DEBUG", stream)
    library = logging.getLogger("some.library")
    library.debug("DATA line: %r", b"Your code is 604931")
    library.info("%r recip: %s after %d tries", ("127.0.0.1", 2525), "ana@example.com", 3)
    library.info("sender <bob.sender@example.com> to +8613800138000")
    library.warning("count %d", "604931")  # a format the hidden value does not fit
    try:
        raise ValueError("no mailbox carla@example.com")
    except ValueError:
        library.exception("delivery failed for %s", "carla@example.com")
    logs.event(logging.getLogger("otp_service.web"), logging.INFO, "ours", id="m1")
    text = stream.getvalue()
    for secret in ("604931", "ana@", "bob.sender@", "13800138000", "carla@"):
        assert secret not in text, (secret, text)
    assert "DATA line: ***" in text
    assert "('127.0.0.1', 2525) recip: *** after 3 tries" in text
    assert "sender <b***@example.com> to +86***8000" in text
    assert "count %d" in text and "ValueError: no mailbox c***@example.com" in text
    assert "otp_service.web ours" in text and "id=m1" in text


def test_a_library_logging_each_protocol_line_speaks_at_info_only_of_its_warnings() -> None:
    """aiosmtpd writes each SMTP command of each client at INFO: at the service's INFO level
    only its warnings reach the log (a client's flood of commands is not a flood of lines);
    at DEBUG, every line (masked)."""
    from otp_service import logs

    mail_log = logging.getLogger("mail.log")
    command = "('127.0.0.1', 2525) >> ***"  # the command itself is masked
    for level, expected in (("INFO", ["warned"]), ("DEBUG", [command, "warned"])):
        stream = io.StringIO()
        logs.setup("text", level, stream)
        mail_log.info("%r >> %r", ("127.0.0.1", 2525), b"NOOP")
        mail_log.warning("warned")
        text = stream.getvalue()
        assert [w for w in (command, "warned") if w in text] == expected, (level, text)


async def test_alert_examples_use_metrics_a_scrape_returns(service: ClientFactory) -> None:
    """examples/alerts.yaml covers expired and failed codes, a stuck outbox and a provider down,
    and every otp_ series its expressions use is one the service exports."""
    rules = yaml.safe_load((ROOT / "examples" / "alerts.yaml").read_text(encoding="utf-8"))
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert {"OtpCodeExpired", "OtpCodeFailed", "OtpOutboxStuck", "OtpProviderDown"} <= set(alerts)
    assert "> 60" in alerts["OtpOutboxStuck"]
    client = await service()
    assert (await client.post("/v1/email", json=SIGN_IN)).status == 200
    sms = {"to": "+33612345678", "type": "SignIn", "payload": {"code": "482913"}}
    assert (await client.post("/v1/sms", json=sms)).status == 200  # its simulated receipt too
    used = {name for expr in alerts.values() for name in re.findall(r"\botp_\w+", expr)}
    for _ in range(50):  # the receipt is counted just after the answer
        text = await (await client.get("/metrics")).text()
        exported = set(re.findall(r"^(otp_\w+?)(?:\{| )", text, re.M))
        if used <= exported:
            break
        await asyncio.sleep(0.1)
    assert used and used <= exported, used - exported
