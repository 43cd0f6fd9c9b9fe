"""Templates that compile but fail to render: check-config and serve name the file, the line and
the Jinja error; at run time the request's log line does, without the code or the recipient."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support.command import BIN
from .support.fakes.logto import FakeLogto, fake_logto, logto_row
from .support.processes import HTTP_TIMEOUT, ServiceProcess
from .support.service import ClientFactory, write_tree

__all__ = ["fake_logto"]

BROKEN = {
    # an {% extends %} of itself
    "email/en/SignIn.subject": "Sign in",
    "email/en/SignIn.txt": '{% extends "email/en/SignIn.txt" %}\n',
    # a block that does not exist, on line 2
    "email/en/Register.subject": "Welcome",
    "email/en/Register.txt": "Your code: {{ code }}\n{{ self.footer() }}\n",
    # a filter that raises, on line 2
    "sms/fr/SignIn.txt": "Code {{ code }}\n{{ code | format(1, 2) }}\n",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=60, check=False
    )


def config_file(tmp_path: Path, config: dict[str, Any]) -> Path:
    file = tmp_path / "config.yaml"
    file.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return file


def problem_line(output: str, file: str) -> str:
    """The one line of ``output`` that names ``file``."""
    [line] = [
        each for each in output.splitlines() if each.strip().startswith("- ") and file in each
    ]
    return line


@pytest.mark.slow
@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_template_that_fails_to_render_is_refused_naming_file_line_and_error(
    tmp_path: Path, command: str
) -> None:
    """Each template rendered with a sample payload: the ones that fail are listed with their
    file, line and Jinja error, and both check-config and serve exit 1 (serve before it
    listens)."""
    directory = write_tree(tmp_path / "templates", BROKEN)
    file = config_file(
        tmp_path, {"templates": {"directory": str(directory)}, "store": {"path": ":memory:"}}
    )
    args = ["check-config", str(file)] if command == "check-config" else ["serve", "--config",
                                                                           str(file), "--port", "0"]  # fmt: skip
    done = run(*args)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "configuration has 3 problem(s)" in done.stderr
    itself = problem_line(done.stderr, f"{directory}/email/en/SignIn.txt")
    assert "fails to render a SignIn email with a sample payload: line 1: RecursionError" in itself
    block = problem_line(done.stderr, f"{directory}/email/en/Register.txt")
    assert "line 2: UndefinedError:" in block and "no attribute 'footer'" in block
    raising = problem_line(done.stderr, f"{directory}/sms/fr/SignIn.txt")
    assert "a SignIn sms with a sample payload: line 2: TypeError: not all arguments" in raising
    assert "listening" not in done.stdout


@pytest.mark.slow
def test_connector_template_that_fails_to_render_is_named_by_its_place_in_the_config(
    tmp_path: Path,
) -> None:
    """A template pasted in the connector JSON is named by its index and field."""
    templates = [
        {"usageType": usage, "contentType": "text/plain", "subject": "Code",
         "content": "Your code:\n{{ code | int / 0 }}" if usage == "Register" else "{{ code }}"}
        for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
    ]  # fmt: skip
    smtp = {"host": "127.0.0.1", "port": 2525, "fromEmail": "a@example.com", "templates": templates}
    file = config_file(tmp_path, {"email": {"provider": "smtp", "smtp": smtp}})
    done = run("check-config", str(file))
    assert done.returncode == 1 and "configuration has 1 problem(s)" in done.stderr
    line = problem_line(done.stderr, "email.smtp.templates[1].content")
    assert "a Register email with a sample payload: line 2: ZeroDivisionError" in line


@pytest.mark.slow
def test_bundled_templates_render_and_check_config_passes(tmp_path: Path) -> None:
    """The same check on the bundled templates alone finds nothing."""
    done = run("check-config", str(config_file(tmp_path, {"store": {"path": ":memory:"}})))
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_check_config_online_renders_logtos_templates(
    fake_logto: FakeLogto, tmp_path: Path
) -> None:
    """--online renders Logto's templates too: one that fails is named with its line and the
    command exits 1 (the service would use the next source for it)."""
    fake_logto.set_templates(
        logto_row("fr", "SignIn", "Code", "Votre code : {{ code }}\n{{ self.pied() }}"),
        logto_row("en", "SignIn", "Code", "Your code: {{ code }}"),
    )
    file = config_file(
        tmp_path, {"templates": {"logto": fake_logto.config()}, "store": {"path": ":memory:"}}
    )
    done = run("check-config", "--online", str(file))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "credentials accepted, 2 email template(s)" in done.stdout
    [line] = [each for each in done.stderr.splitlines() if "Logto's fr/SignIn" in each]
    assert "Logto's fr/SignIn.content: fails to render a SignIn email" in line
    assert "line 2: UndefinedError" in line and "pied" in line
    assert "Logto's en/SignIn" not in done.stderr


def log_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a service process (its output is not a terminal)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
async def test_render_failure_at_run_time_is_logged_with_file_language_and_error(
    tmp_path: Path,
) -> None:
    """A template that renders the sample payload but not this request (it needs ``user``,
    which this request lacks) is a 422, and the log line names the file, the language and the
    error with its line; neither the code nor the recipient appears in the log."""
    directory = write_tree(tmp_path / "templates", {
        "email/en/SignIn.subject": "Sign in",
        "email/en/SignIn.txt": "Hello,\nyour code is {{ code }}.\n{{ user.name.upper() }}\n",
    })  # fmt: skip
    file = config_file(
        tmp_path,
        {"templates": {"directory": str(directory)}, "store": {"path": str(tmp_path / "o.db")}},
    )
    service = ServiceProcess(file, tmp_path / "service.log")
    try:
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            await service.ready(http)
            body = {"to": "ada.lovelace@example.com", "type": "SignIn",
                    "payload": {"code": "482913", "locale": "en"}}  # fmt: skip
            async with http.post(f"{service.url}/v1/email", json=body) as response:
                assert response.status == 422
                answer = await response.json()
        assert answer["error"]["code"] == "template_error"
    finally:
        service.stop()
    text = (tmp_path / "service.log").read_text(encoding="utf-8")
    [line] = [each for each in log_lines(text) if each["event"] == "request refused"]
    assert line["code"] == "template_error" and line["type"] == "SignIn"
    assert line["template"] == f"{directory}/email/en/SignIn.txt" and line["locale"] == "en"
    assert line["error"] == "line 3: UndefinedError: 'user' is undefined"
    assert "482913" not in text and "ada.lovelace" not in text


async def test_render_failure_log_masks_payload_values(
    service: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An error that quotes what the template rendered (a replyTo that is the code) is logged
    with the payload's values masked; the answer stays the plain 422."""
    templates = [
        {"usageType": usage, "contentType": "text/plain", "subject": "S", "content": "{{ code }}",
         "replyTo": "{{ code }}"}
        for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
    ]  # fmt: skip
    smtp = {"host": "127.0.0.1", "port": 2, "fromEmail": "a@example.com", "templates": templates}
    client = await service({"email": {"provider": "smtp", "smtp": smtp}})
    body = {"to": "ada@example.com", "type": "SignIn", "payload": {"code": "482913"}}
    with caplog.at_level(logging.INFO, logger="otp_service.web"):
        response = await client.post("/v1/email", json=body)
    assert response.status == 422
    assert "482913" not in await response.text()
    [record] = [r for r in caplog.records if r.getMessage() == "request refused"]
    fields = record.otp_fields  # type: ignore[attr-defined]
    assert fields["template"] == "email.smtp.templates[0].replyTo"
    assert fields["locale"] == "(no language)"
    assert fields["error"].startswith("renders to '***': ")
    assert "482913" not in caplog.text


@pytest.mark.slow
def test_render_command_names_the_template_that_fails(tmp_path: Path) -> None:
    """otp-service render with a payload the template cannot render says where and why."""
    directory = write_tree(tmp_path / "templates", {
        "email/en/SignIn.subject": "Sign in",
        "email/en/SignIn.txt": "Code {{ code }}\n{{ user.name.upper() }}\n",
    })  # fmt: skip
    file = config_file(tmp_path, {"templates": {"directory": str(directory)}})
    done = run("render", "--channel", "email", "--code", "482913", "--config", str(file))
    assert done.returncode == 1
    assert "error: template_error: the email template failed to render" in done.stderr
    assert f"{directory}/email/en/SignIn.txt (en): line 2: UndefinedError" in done.stderr
    assert "482913" not in done.stderr


@pytest.mark.slow
def test_sms_template_is_checked_with_what_logto_sends_for_sms(tmp_path: Path) -> None:
    """Logto sends an SMS no ``user``: an SMS template that needs one fails the check."""
    directory = write_tree(tmp_path / "templates", {
        "sms/en/SignIn.txt": "Code {{ code }}\n{{ user.name.upper() }}\n",
    })  # fmt: skip
    file = config_file(tmp_path, {"templates": {"directory": str(directory)}})
    done = run("check-config", str(file))
    assert done.returncode == 1
    line = problem_line(done.stderr, f"{directory}/sms/en/SignIn.txt")
    assert "line 2: UndefinedError: 'user' is undefined" in line
