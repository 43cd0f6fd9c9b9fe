"""The ``otp-service`` command as the README tells people to use it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .support import ROOT
from .support.command import BIN, run
from .support.ports import free_port


def readme_command(marker: str) -> str:
    """The command line the README shows right after ``<!-- marker -->``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```(?:sh|bash)\n(.+?)\n```", text, re.S)
    assert match, f"README lost its {marker} block"
    return match.group(1).strip()


@pytest.mark.slow
def test_readme_serve_command_starts_a_service_that_answers() -> None:
    """The quick-start command starts the service on its defaults; Logto's endpoint answers."""
    command = readme_command("quickstart-serve")
    assert command.endswith("otp-service serve"), command
    port = free_port()
    with subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            banner = [process.stdout.readline() for _ in range(6)]
            endpoint = next(line.split()[-1] for line in banner if "/v1/email" in line)
            assert endpoint == f"http://127.0.0.1:{port}/v1/email"
            body = json.dumps(
                {"to": "dev@example.com", "type": "SignIn", "payload": {"code": "246810"}}
            )
            request = urllib.request.Request(
                endpoint, data=body.encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/v1/messages", timeout=10
            ) as response:
                messages = json.load(response)["messages"]
            assert messages[0]["code"] == "246810"
        finally:
            process.terminate()
            process.wait(timeout=10)
    assert process.returncode == 0


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's test command is the one .ci/run executes."""
    command = readme_command("quickstart-test")
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.slow
def test_serve_refuses_public_address_without_tokens() -> None:
    """Without tokens the service will not listen beyond loopback unless told explicitly."""
    result = run("serve", "--host", "0.0.0.0", "--port", str(free_port()), timeout=10)
    assert result.returncode == 1 and "auth.tokens" in result.stderr


@pytest.mark.slow
def test_check_config_reports_every_problem_with_path_and_fix(tmp_path: Path) -> None:
    """check-config lists each problem with its field path and a fix, and exits non-zero."""
    config = tmp_path / "bad.yaml"
    config.write_text(
        "email:\n  provider: smtp\n  smtp:\n    host: ''\n    port: 99999\n    fromEmail: nobody\n"
        "auth:\n  tokens: [short]\nsms:\n  provider: pigeon\nfoo: 1\n"
    )
    result = run("check-config", str(config))
    assert result.returncode == 1
    for path in ("email.smtp.host", "email.smtp.port", "email.smtp.fromEmail", "auth.tokens[0]",
                 "sms.provider", "foo"):  # fmt: skip
        assert f"- {path}:" in result.stderr, path
    assert result.stderr.count("fix:") >= 6


@pytest.mark.slow
def test_check_config_accepts_pasted_logto_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config whose smtp section is Logto's connector JSON, secrets from env, passes."""
    config = tmp_path / "ok.yaml"
    config.write_text(
        "auth:\n  tokens: ['${OTP_TOKEN}']\nemail:\n  provider: smtp\n  smtp:\n"
        '    {"host": "smtp.example.com", "port": 587, "auth": {"user": "u", "pass": "${SMTP_PASS}"},'
        ' "fromEmail": "Acme <no-reply@example.com>", "templates": []}\n'
    )
    result = subprocess.run(
        [str(BIN), "check-config", str(config)], capture_output=True, text=True, check=False,
        env={"OTP_TOKEN": "x" * 20, "SMTP_PASS": "hunter2-secret", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "smtp.example.com:587" in result.stdout and "hunter2-secret" not in result.stdout


@pytest.mark.slow
def test_render_prints_french_sign_in() -> None:
    """render shows what would be sent, in the asked language, without sending."""
    result = run(
        "render", "--channel", "email", "--type", "SignIn", "--locale", "fr", "--code", "123456"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "Locale:  fr" in result.stdout and "123456" in result.stdout and "Subject:" in result.stdout
    )


@pytest.mark.slow
def test_send_with_capture_defaults() -> None:
    """send delivers one message through the configured provider and says how it went."""
    result = run(
        "send", "--channel", "sms", "--to", "+33612345678", "--type", "SignIn", "--code", "7788"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("captured via capture") and "7788" in result.stdout


@pytest.mark.slow
def test_send_reports_bad_recipient() -> None:
    """send fails with the same stable code the API would give."""
    result = run("send", "--channel", "email", "--to", "nobody", "--type", "SignIn", "--code", "1")
    assert result.returncode == 1 and "invalid_email" in result.stderr


@pytest.mark.slow
def test_render_into_a_closed_pipe_ends_quietly() -> None:
    """``otp-service render | head``: when the reader has gone, no traceback, exit 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(BIN), "render", "--channel", "email"], stdout=write_end, stderr=subprocess.PIPE,
            text=True, check=False, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


@pytest.mark.slow
def test_python_dash_m_entry_point() -> None:
    """python -m otp_service works as well as the installed script."""
    result = subprocess.run(
        [sys.executable, "-m", "otp_service", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "check-config" in result.stdout


@pytest.mark.slow
def test_send_over_smtp_refused_port_is_transient(tmp_path: Path) -> None:
    """send against an SMTP server that is down reports a transient failure, exit 1."""
    config = tmp_path / "smtp.json"
    config.write_text(json.dumps({"email": {"provider": "smtp", "smtp": {
        "host": "127.0.0.1", "port": free_port(), "fromEmail": "a@example.com",
        "connectionTimeout": 1000, "name": "test"}}, "delivery": {"retry_delay_seconds": 0.01}}))  # fmt: skip
    started = time.monotonic()
    result = run(
        "send",
        "--channel",
        "email",
        "--to",
        "x@example.com",
        "--code",
        "99",
        "--config",
        str(config),
    )
    assert result.returncode == 1 and "FAILED (transient)" in result.stderr
    assert "99" not in result.stderr.split("FAILED", 1)[1]
    assert time.monotonic() - started < 25


@pytest.mark.parametrize(
    ("page", "section"),
    [
        ("docs/sms.md", "# SMS"),
        ("docs/delivery.md", "## Abuse limits"),
        ("docs/templates.md", "## Using Logto's email templates"),
    ],
)
def test_docs_config_examples_are_valid(
    page: str, section: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The configuration examples the documentation shows pass validation as written."""
    import yaml

    from otp_service.config import parse_config

    text = (ROOT / page).read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(section)}\n.*?```yaml\n(.*?)```", text, re.S | re.M)
    assert match, f"{page} lost its {section} example"
    monkeypatch.setenv("VONAGE_API_SECRET", "secret")
    monkeypatch.setenv("ALIYUN_ACCESS_KEY_SECRET", "secret")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "secret")
    monkeypatch.setenv("LOGTO_M2M_APP_ID", "app-id")
    monkeypatch.setenv("LOGTO_M2M_APP_SECRET", "app-secret")
    parse_config(yaml.safe_load(match.group(1)))


@pytest.mark.slow
def test_send_through_a_running_service_shows_in_its_inbox(tmp_path: Path) -> None:
    """send --server delivers through the running service, with $OTP_SERVICE_TOKEN, so the
    message is in that service's inbox; without the token it fails with 401."""
    token = "tok_" + "c" * 28
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"auth": {"tokens": [token]}, "store": {"path": str(tmp_path / "o.db")}})
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with subprocess.Popen(
        [str(BIN), "serve", "--port", str(port), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            banner = [process.stdout.readline() for _ in range(13)]
            assert any(f"{base}/inbox (asks once for one of auth.tokens)" in b for b in banner)
            assert any("capture mode for tests: abuse limits and dedupe off" in b for b in banner)
            args = [str(BIN), "send", "--server", base, "--channel", "email",
                    "--to", "dev@example.com", "--code", "314159"]  # fmt: skip
            env = {**os.environ, "OTP_SERVICE_TOKEN": token}
            sent = subprocess.run(
                args, capture_output=True, text=True, env=env, timeout=30, check=False
            )
            assert sent.returncode == 0, sent.stderr
            assert sent.stdout.startswith("captured via capture: id=")
            request = urllib.request.Request(
                f"{base}/v1/messages/latest?to=dev@example.com",
                headers={"Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.load(response)["code"] == "314159"
            env.pop("OTP_SERVICE_TOKEN")
            refused = subprocess.run(
                args, capture_output=True, text=True, env=env, timeout=30, check=False
            )
            assert refused.returncode == 1 and "401 unauthorized" in refused.stderr
        finally:
            process.terminate()
            process.wait(timeout=10)
