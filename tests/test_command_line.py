"""The command line as a newcomer meets it: ``latest`` against a running service, the help, the
options it refuses, and the hints in what it (and the API) says back."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from otp_service.cli import _parser
from otp_service.config import parse_config
from otp_service.config.checks import refusals

from .support.command import BIN
from .support.ports import free_port
from .support.processes import HTTP_TIMEOUT, ServiceProcess
from .support.service import ClientFactory

TOKEN = "tok_" + "L" * 28


def run(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OTP_SERVICE_TOKEN"}
    if token is not None:
        env["OTP_SERVICE_TOKEN"] = token
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=90, check=False, env=env
    )


def service_config(tmp_path: Path, **extra: Any) -> Path:
    file = tmp_path / "config.yaml"
    config = {"auth": {"tokens": [TOKEN]}, "store": {"path": str(tmp_path / "outbox.db")}}
    file.write_text(json.dumps(config | extra), encoding="utf-8")  # JSON is YAML
    return file


async def post(
    http: aiohttp.ClientSession, service: ServiceProcess, channel: str, to: str, code: str
) -> None:
    body = {"to": to, "type": "SignIn", "payload": {"code": code}}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(f"{service.url}/v1/{channel}", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()


@pytest.mark.slow
async def test_latest_prints_the_code_that_arrives_and_the_message_with_json(
    tmp_path: Path,
) -> None:
    """``otp-service latest`` started before the message is sent prints its code once it is
    captured (exit 0); ``--json`` prints the whole message; the filters are passed on."""
    service = ServiceProcess(service_config(tmp_path), tmp_path / "service.log")
    try:
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            await service.ready(http)
            env = {**os.environ, "OTP_SERVICE_TOKEN": TOKEN}
            waiting = await asyncio.create_subprocess_exec(
                str(BIN), "latest", "--to", "dev@example.com", "--wait", "60",
                "--server", service.url,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            )  # fmt: skip
            try:
                await post(http, service, "email", "dev@example.com", "271828")
                out, err = await asyncio.wait_for(waiting.communicate(), 90)
            finally:
                if waiting.returncode is None:
                    waiting.kill()
                    await waiting.wait()
            assert waiting.returncode == 0, err
            assert out == b"271828\n"
            await post(http, service, "sms", "+33612345678", "161803")
        whole = run("latest", "--to", "+33612345678", "--wait", "0", "--server", service.url,
                    "--json")  # fmt: skip
        assert whole.returncode == 0, whole.stderr
        message = json.loads(whole.stdout)
        assert message["code"] == "161803" and message["channel"] == "sms"
        assert message["to"] == "+33612345678" and message["status"] == "captured"
        email_only = run("latest", "--to", "dev@example.com", "--channel", "email",
                         "--type", "SignIn", "--wait", "0", "--server", service.url)  # fmt: skip
        assert email_only.stdout == "271828\n"
        banner = service.log_text(tail=None)  # the banner is at the start
    finally:
        service.stop()
    # The banner: the Authorization line under each connector's endpoint.
    auth = r"Endpoint: +\S+/v1/{}\n +Authorization Header: Bearer <auth\.tokens\[0\]: tok_"
    assert re.search(auth.format("email"), banner) and re.search(auth.format("sms"), banner)


@pytest.mark.slow
async def test_latest_exits_1_with_a_clear_line_when_nothing_arrives(tmp_path: Path) -> None:
    """Nothing in time, a wrong token, no service: exit 1 and one line saying which."""
    service = ServiceProcess(service_config(tmp_path), tmp_path / "service.log")
    try:
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            await service.ready(http)
            await post(http, service, "email", "dev@example.com", "271828")
        nothing = run("latest", "--to", "nobody@example.com", "--wait", "0",
                      "--server", service.url)  # fmt: skip
        assert nothing.returncode == 1 and nothing.stdout == ""
        assert nothing.stderr == "no message for nobody@example.com arrived within 0 s\n"
        other_type = run("latest", "--to", "dev@example.com", "--type", "Register",
                         "--channel", "email", "--wait", "0", "--server", service.url)  # fmt: skip
        assert other_type.returncode == 1
        assert "no message (channel=email type=Register) for dev@example.com" in other_type.stderr
        refused = run("latest", "--to", "dev@example.com", "--server", service.url, token=None)
        assert refused.returncode == 1 and "FAILED (401 unauthorized)" in refused.stderr
        bad_since = run("latest", "--to", "dev@example.com", "--since", "yesterday",
                        "--wait", "0", "--server", service.url)  # fmt: skip
        assert bad_since.returncode == 1 and "RFC 3339" in bad_since.stderr
    finally:
        service.stop()
    gone = run("latest", "--to", "dev@example.com", "--wait", "0", "--server", service.url)
    assert gone.returncode == 1 and gone.stderr.startswith(f"FAILED: cannot reach {service.url}")
    too_long = run("latest", "--to", "dev@example.com", "--wait", "61")
    assert too_long.returncode == 2 and "--wait: must be a number from 0 to 60" in too_long.stderr


@pytest.mark.slow
def test_every_command_and_option_has_a_help_line() -> None:
    """Each subcommand, positional and option says what it is (the hidden --worker aside),
    and the top-level help is plain text, without reST backticks."""
    parser = _parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {choice.dest for choice in commands._choices_actions if choice.help}
    assert listed == set(commands.choices) == {
        "serve", "render", "send", "latest", "check-config", "config", "migrate"
    }  # fmt: skip
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, each in [("otp-service", parser), *commands.choices.items()]
        for action in each._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert missing == []
    shown = run("--help")
    assert shown.returncode == 0 and "latest" in shown.stdout
    assert "`" not in shown.stdout


@pytest.mark.slow
def test_port_outside_0_to_65535_is_refused_as_the_config_refuses_it(tmp_path: Path) -> None:
    """--port 99999 is refused (it used to wrap to 34463), with the config's own words."""
    for option in ("--port", "--metrics-port"):
        refused = run("serve", option, "99999", "--config", str(service_config(tmp_path)))
        assert refused.returncode == 2
        assert f"argument {option}: must be between 0 and 65535" in refused.stderr
    assert "argument --port: must be a whole number" in run("serve", "--port", "x").stderr
    assert "argument --workers: must be >= 1" in run("serve", "--workers", "0").stderr
    config = service_config(tmp_path, server={"port": 99999})
    checked = run("check-config", str(config))
    assert checked.returncode == 1 and "server.port: must be between 0 and 65535" in checked.stderr


@pytest.mark.slow
def test_check_config_summary_shows_the_smtp_intake(tmp_path: Path) -> None:
    on = run("check-config", str(service_config(tmp_path, capture={"smtp": {"port": 2525}})))
    assert on.returncode == 0, on.stderr
    assert "  SMTP intake: 127.0.0.1:2525 (mail sent there is captured)" in on.stdout
    off = run("check-config", str(service_config(tmp_path)))
    assert "  SMTP intake: off\n" in off.stdout


async def test_local_phone_number_is_refused_with_a_hint(service: ClientFactory) -> None:
    """0612345678 is refused saying to add the country code or set sms.default_region; with
    the region set it is that country's number."""
    body = {"to": "0612345678", "type": "SignIn", "payload": {"code": "123456"}}
    for region, hint in (
        (None, "add its country code (e.g. 33612345678 for 0612345678 in France), or set "
               "sms.default_region"),
        ("US", "but is not a valid US number: add its country code"),
    ):  # fmt: skip
        sms = {"default_region": region} if region else {}
        client = await service({"sms": sms, "store": {"path": ":memory:"}})
        response = await client.post("/v1/sms", json=body)
        answer = await response.json()
        assert response.status == 400 and answer["error"]["code"] == "invalid_phone"
        assert "'to' looks like a local number (it starts with 0)" in answer["error"]["message"]
        assert hint in answer["error"]["message"]
    client = await service({"sms": {"default_region": "FR"}, "store": {"path": ":memory:"}})
    response = await client.post("/v1/sms", json=body)
    assert response.status == 200, await response.text()
    captured = await (await client.get("/v1/messages/latest?to=%2B33612345678")).json()
    assert captured["to"] == "+33612345678" and captured["code"] == "123456"


async def test_since_that_is_neither_a_time_nor_an_id_says_what_since_takes(
    service: ClientFactory,
) -> None:
    client = await service()
    for since in ("yesterday", "2026-13-45T99:00"):
        response = await client.get(f"/v1/messages/latest?to=a@example.com&since={since}")
        answer = await response.json()
        assert response.status == 400 and answer["error"]["code"] == "invalid_query"
        assert (
            "an RFC 3339 time (e.g. 2026-11-27T13:00:00Z) or the id of a captured message"
            in (answer["error"]["message"])
        )


@pytest.mark.slow
def test_unset_variable_is_reported_once_and_default_locale_must_be_a_language_tag(
    tmp_path: Path,
) -> None:
    """A ${VARIABLE} that is not set is one problem (not a second one for the value it left
    empty), however often one value names it; templates.default_locale must be a tag."""
    file = tmp_path / "config.yaml"
    file.write_text(
        "server:\n  port: ${OTP_TEST_UNSET_PORT}\n"
        'auth:\n  tokens: ["${OTP_TEST_UNSET_TOKEN}${OTP_TEST_UNSET_TOKEN}"]\n'
        "templates:\n  default_locale: en US!\n",
        encoding="utf-8",
    )
    done = run("check-config", str(file))
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert problems == [
        "  - server.port: refers to ${OTP_TEST_UNSET_PORT}, which is not set",
        "  - auth.tokens[0]: refers to ${OTP_TEST_UNSET_TOKEN}, which is not set",
        "  - templates.default_locale: must be a language tag",
    ], done.stderr
    assert "fix: use e.g. en, fr-CA or zh-CN" in done.stderr
    for tag in ("fr-CA", "zh-Hans-CN", "pt_BR"):
        config = service_config(tmp_path, templates={"default_locale": tag})
        accepted = run("check-config", str(config))
        assert accepted.returncode == 0, accepted.stderr


@pytest.mark.slow
async def test_send_server_and_latest_work_with_scoped_tokens(tmp_path: Path) -> None:
    """``send --server`` with a send-only token sends; ``latest`` with it is refused with the
    server's 403 insufficient_scope (exit 1), and with a read token prints the code."""
    sender, reader = "send_" + "S" * 27, "read_" + "R" * 27
    tokens = [{"token": sender, "scopes": ["send"]}, {"token": reader, "scopes": ["read"]}]
    config = service_config(tmp_path, auth={"tokens": tokens})
    service = ServiceProcess(config, tmp_path / "service.log")
    try:
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            await service.ready(http)
        sent = run("send", "--channel", "email", "--to", "scoped@example.com", "--code", "112358",
                   "--server", service.url, token=sender)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        args = ("latest", "--to", "scoped@example.com", "--wait", "0", "--server", service.url)
        refused = run(*args, token=sender)
        assert refused.returncode == 1 and "403 insufficient_scope" in refused.stderr
        assert sender not in refused.stderr + refused.stdout
        found = run(*args, token=reader)
        assert (found.returncode, found.stdout) == (0, "112358\n"), found.stderr
    finally:
        service.stop()


@pytest.mark.slow
def test_one_port_for_two_listeners_is_refused_by_serve_and_check_config(tmp_path: Path) -> None:
    """One process, --metrics-port equal to --port (or capture.smtp.port equal to server.port):
    serve refuses it up front naming the port to change, not "stop what holds the port" after
    the second bind failed; check-config reports the same problem."""
    port = str(free_port())
    served = run("serve", "--config", str(service_config(tmp_path)), "--port", port,
                 "--metrics-port", port)  # fmt: skip
    assert served.returncode == 1, served.stderr
    assert f"- server.metrics_port: is {port}, as server.port is" in served.stderr
    assert "fix: choose another port for /metrics (--metrics-port" in served.stderr
    assert "stop what holds" not in served.stderr
    config = service_config(
        tmp_path, server={"port": int(port)}, capture={"smtp": {"port": int(port)}}
    )
    for command in (("serve", "--config", str(config)), ("check-config", str(config))):
        refused = run(*command)
        assert refused.returncode == 1, refused.stderr
        assert f"- capture.smtp.port: is {port}, as server.port is" in refused.stderr
        assert "fix: choose another port for the SMTP intake" in refused.stderr


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("0.0.0.0", "127.0.0.2", True),
        ("::", "127.0.0.1", True),  # the HTTP listener on :: takes IPv4 too
        ("::1", "127.0.0.1", False),
        ("0.0.0.0", "::1", False),
        ("localhost", "127.0.0.1", True),
        ("otp.internal", "0.0.0.0", True),
        ("otp.internal", "10.0.0.1", False),  # not resolved: the bind says, if it clashes
    ],
)
def test_listeners_clash_on_one_port_only_on_overlapping_addresses(
    first: str, second: str, clash: bool
) -> None:
    """The metrics listener on the HTTP port is refused only where the kernel would refuse the
    second bind; a port of 0 (any free one) never clashes."""
    tokens = {"auth": {"tokens": [TOKEN]}}
    server = {"host": first, "port": 8787, "metrics_port": 8787, "metrics_host": second}
    assert bool(refusals(parse_config(tokens | {"server": server}))) is clash
    free = {"host": first, "port": 0, "metrics_port": 0, "metrics_host": second}
    assert refusals(parse_config(tokens | {"server": free})) == []
