"""Email templates kept in Logto (templates.logto), read from a fake Logto over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from otp_service.config import TemplatesConfig, parse_config
from otp_service.config.logto import LogtoConfig
from otp_service.logto.sync import TemplateSync
from otp_service.message.templates import TemplateLibrary

from .support.command import BIN
from .support.fakes.logto import APP_SECRET, FakeLogto, fake_logto, logto_row
from .support.ports import free_port
from .support.service import ClientFactory, write_tree

__all__ = ["fake_logto"]

Client = TestClient[Any, Any]
_codes = itertools.count(100001)


def config(logto: dict[str, Any], **templates: Any) -> dict[str, Any]:
    return {"templates": {"logto": logto, **templates}, "store": {"path": ":memory:"}}


async def send(client: Client, locale: str | None = "en", **payload: Any) -> dict[str, Any]:
    """POST one SignIn email (unless payload says otherwise); the captured message."""
    usage = payload.pop("type", "SignIn")
    body: dict[str, Any] = {"code": f"{next(_codes):06d}", **payload}  # no dedupe between sends
    if locale is not None:
        body["locale"] = locale
    response = await client.post(
        "/v1/email", json={"to": "user@example.com", "type": usage, "payload": body}
    )
    assert response.status == 200, await response.text()
    answer = await response.json()
    message = await (await client.get(f"/v1/messages/{answer['id']}")).json()
    assert isinstance(message, dict)
    return message


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail after a generous bound (not a timing assertion)."""
    for _ in range(400):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def ready(client: Client) -> dict[str, Any]:
    body = await (await client.get("/readyz")).json()
    assert isinstance(body, dict)
    return body


def rows_fr_en() -> list[dict[str, Any]]:
    return [
        logto_row("fr", "SignIn", "Logto fr", "<p>Votre code : {{code}}</p>"),
        logto_row("en", "SignIn", "Logto en", "Your code: {{code}}", contentType="text/plain"),
    ]


async def test_logto_template_used_in_request_language_chain(
    service: ClientFactory, fake_logto: FakeLogto
) -> None:
    """A Logto template for the type serves each language of the chain: locale, uiLocales, default."""
    fake_logto.set_templates(*rows_fr_en())
    client = await service(config(fake_logto.config()))
    fr = await send(client, "fr-CA")
    code = fr["code"]
    assert fr["subject"] == "Logto fr" and fr["html"] == f"<p>Votre code : {code}</p>"
    assert fr["locale"] == "fr" and f"Votre code : {code}" in fr["text"]
    en = await send(client, "en-US")
    assert en["subject"] == "Logto en" and en["html"] is None
    by_ui = await send(client, "de", uiLocales="ja fr-BE")
    assert by_ui["subject"] == "Logto fr"
    by_default = await send(client, "de")  # templates.default_locale: en
    assert by_default["subject"] == "Logto en"


async def test_logto_operator_file_wins_for_same_language(
    service: ClientFactory, fake_logto: FakeLogto, tmp_path: Path
) -> None:
    """The operator's file beats Logto's template for the same type and language, not others."""
    fake_logto.set_templates(*rows_fr_en())
    write_tree(tmp_path, {"email/fr/SignIn.subject": "Fichier", "email/fr/SignIn.txt": "x"})
    client = await service(config(fake_logto.config(), directory=str(tmp_path)))
    assert (await send(client, "fr"))["subject"] == "Fichier"
    assert (await send(client, "en"))["subject"] == "Logto en"
    # A language earlier in the chain wins over the source order: Logto's fr before a file's en.
    write_tree(tmp_path / "b", {"email/en/SignIn.subject": "File en", "email/en/SignIn.txt": "x"})
    client = await service(config(fake_logto.config(), directory=str(tmp_path / "b")))
    assert (await send(client, "fr"))["subject"] == "Logto fr"


def smtp_json() -> dict[str, Any]:
    return {
        "host": "smtp.example.com",
        "port": 587,
        "fromEmail": "no-reply@example.com",
        "templates": [
            {"usageType": usage, "contentType": "text/plain", "subject": f"JSON {usage}",
             "content": "json {{code}}"}
            for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
        ],
    }  # fmt: skip


async def test_logto_template_beats_connector_json_which_beats_bundled(
    service: ClientFactory, fake_logto: FakeLogto
) -> None:
    """Logto's per-language template beats the connector JSON; without one, the JSON serves."""
    fake_logto.set_templates(logto_row("ja", "SignIn", "Logto ja", "ja {{code}}"))
    data = config(fake_logto.config(), default_locale="ja")
    data["email"] = {"provider": "capture", "smtp": smtp_json()}
    client = await service(data)
    assert (await send(client, "ja"))["subject"] == "Logto ja"
    assert (await send(client, "de", type="Register"))["subject"] == "JSON Register"


async def test_logto_generic_below_connector_above_bundled(
    service: ClientFactory, fake_logto: FakeLogto
) -> None:
    """Logto's Generic serves a type it lacks only when the connector JSON has no template."""
    fake_logto.set_templates(logto_row("en", "Generic", "Logto generic", "g {{code}}"))
    client = await service(config(fake_logto.config()))
    message = await send(client, "en", type="MfaVerification")
    assert message["subject"] == "Logto generic"
    with_json = config(fake_logto.config())
    with_json["email"] = {"provider": "capture", "smtp": smtp_json()}
    client = await service(with_json)
    assert (await send(client, "en", type="MfaVerification"))["subject"] == "JSON Generic"


async def test_logto_template_rendered_in_sandbox_with_escaping_and_placeholders(
    service: ClientFactory, fake_logto: FakeLogto
) -> None:
    """Logto's templates follow Logto's placeholder rules and HTML-escape payload values."""
    content = "<p>Hi {{ user.name }} {{ user.profile.givenName }}|{{ unknown }}|{{code}}</p>"
    fake_logto.set_templates(logto_row("en", "SignIn", "Code {{code}}", content))
    client = await service(config(fake_logto.config()))
    message = await send(client, "en", user={"name": "<b>Bob</b>"}, code="246810")
    assert message["html"] == "<p>Hi &lt;b&gt;Bob&lt;/b&gt; |{{ unknown }}|246810</p>"


async def test_logto_reply_to_and_send_from_honoured(fake_logto: FakeLogto) -> None:
    """replyTo and sendFrom of a Logto template become the message's Reply-To and From."""
    fake_logto.set_templates(
        logto_row(
            "en", "SignIn", "S", "c {{code}}",
            replyTo="support+{{ application.name }}@example.com",
            sendFrom="{{ application.displayName }} <no-reply@example.com>",
        )
    )  # fmt: skip
    library, sync = await synced(fake_logto)
    application = {"name": "web", "displayName": "Acme Web"}
    email = library.render_email("SignIn", {"code": "1", "application": application})
    assert email.reply_to == "support+web@example.com"
    assert email.send_from == "Acme Web <no-reply@example.com>" and email.source == "logto"
    await sync.stop()


async def synced(fake: FakeLogto, **overrides: Any) -> tuple[TemplateLibrary, TemplateSync]:
    """A library fed by a TemplateSync that has read the fake once."""
    library = TemplateLibrary(TemplatesConfig())
    data = fake.config(**overrides)
    sync = TemplateSync(LogtoConfig(**data), library.use_logto)
    await sync.refresh()
    return library, sync


async def test_logto_refresh_picks_up_an_edit(
    service: ClientFactory, fake_logto: FakeLogto
) -> None:
    """An edit in Logto's console reaches the emails at the next background refresh."""
    fake_logto.set_templates(logto_row("en", "SignIn", "Before", "b {{code}}"))
    client = await service(config(fake_logto.config(refresh_seconds=0.1)))
    assert (await send(client, "en"))["subject"] == "Before"
    fake_logto.set_templates(logto_row("en", "SignIn", "After", "a {{code}}"))

    async def edited() -> bool:
        return (await send(client, "en"))["subject"] == "After"

    await eventually(edited, "the edited template is used")


async def test_logto_token_renewed_before_it_expires(fake_logto: FakeLogto) -> None:
    """A token near its expiry is replaced before use, so Logto never sees an expired one."""
    fake_logto.token_lifetime = 1
    fake_logto.set_templates(*rows_fr_en())
    _, sync = await synced(fake_logto)
    await asyncio.sleep(1.1)  # the first token has expired by now
    await sync.refresh()
    assert sync.state == "ok" and len(fake_logto.token_requests) == 2
    assert fake_logto.refused == 0
    [first, _] = fake_logto.token_requests
    assert first.form == {
        "grant_type": "client_credentials",
        "resource": "https://default.logto.app/api",
        "scope": "all",
    }
    await sync.stop()


async def test_logto_paged_answer_read_to_the_end(fake_logto: FakeLogto) -> None:
    """Should Logto page the list (Total-Number), every page is read."""
    fake_logto.page_size = 2
    fake_logto.set_templates(
        *(logto_row(tag, usage, f"{tag} {usage}", "c")
          for tag in ("en", "fr", "ja") for usage in ("SignIn", "Register"))
    )  # fmt: skip
    library, sync = await synced(fake_logto)
    assert sync.templates == 6 and len(fake_logto.list_requests) == 3
    assert library.render_email("Register", {"code": "1", "locale": "ja"}).subject == "ja Register"
    await sync.stop()


async def test_logto_stale_token_renewed_once_on_401(fake_logto: FakeLogto) -> None:
    """A token Logto no longer accepts (401) is renewed once and the read retried."""
    fake_logto.set_templates(*rows_fr_en())
    library, sync = await synced(fake_logto)
    fake_logto.revoke_tokens()
    fake_logto.set_templates(logto_row("en", "SignIn", "Renewed", "r"))
    await sync.refresh()
    assert sync.state == "ok" and fake_logto.refused == 1
    assert len(fake_logto.token_requests) == 2
    assert library.render_email("SignIn", {"code": "1"}).subject == "Renewed"
    await sync.stop()


async def test_logto_wrong_secret_is_refused_state(fake_logto: FakeLogto) -> None:
    """Credentials Logto refuses give state 'refused', with no secret in the problem."""
    library, sync = await synced(fake_logto, app_secret="wrong-secret-value")
    assert sync.state == "refused" and sync.problem is not None
    assert "invalid_client" in sync.problem and "wrong-secret-value" not in sync.problem
    assert library.render_email("SignIn", {"code": "1"}).source == "bundled"
    await sync.stop()


async def test_logto_down_at_start_falls_back_then_recovers(
    service: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Logto down at start: sends use the other templates, /readyz and the metric say so,
    and Logto's templates are used once it answers."""
    fake = FakeLogto(port=free_port())
    fake.set_templates(logto_row("en", "SignIn", "From Logto", "l {{code}}"))
    client = await service(config(fake.config(refresh_seconds=0.1)))
    status = await ready(client)
    assert status["status"] == "ready" and status["logto_templates"]["state"] == "unreachable"
    metrics = await (await client.get("/metrics")).text()
    assert "otp_logto_templates_up 0" in metrics
    message = await send(client, "en")
    assert message["subject"] != "From Logto" and message["code"] in message["text"]
    with fake:

        async def recovered() -> bool:
            return (await ready(client))["logto_templates"]["state"] == "ok"

        await eventually(recovered, "Logto's templates read after it came up")
        assert (await send(client, "en"))["subject"] == "From Logto"
        assert "otp_logto_templates_up 1" in await (await client.get("/metrics")).text()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "Logto" in r.message]
    assert len(warnings) == 1  # once per state change, not once per failed refresh


async def test_logto_down_during_service_keeps_last_good_templates(
    service: ClientFactory, fake_logto: FakeLogto, caplog: pytest.LogCaptureFixture
) -> None:
    """Logto going away mid-service keeps the templates last read; sends never fail."""
    fake_logto.set_templates(logto_row("en", "SignIn", "Cached", "c {{code}}"))
    client = await service(config(fake_logto.config(refresh_seconds=0.1)))
    assert (await send(client, "en"))["subject"] == "Cached"
    fake_logto.stop()

    async def noticed() -> bool:
        return (await ready(client))["logto_templates"]["state"] == "unreachable"

    await eventually(noticed, "the outage is noticed")
    for _ in range(3):
        assert (await send(client, "en"))["subject"] == "Cached"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "Logto" in r.message]
    assert len(warnings) == 1 and APP_SECRET not in caplog.text


async def test_logto_broken_template_keeps_last_good_or_falls_back(
    fake_logto: FakeLogto,
) -> None:
    """A Logto template that stops compiling keeps its last good version; one never good
    falls back down the precedence; the state says which templates are broken."""
    fake_logto.set_templates(logto_row("fr", "SignIn", "Bon {{code}}", "ok {{code}}"))
    library, sync = await synced(fake_logto)
    fake_logto.set_templates(
        logto_row("fr", "SignIn", "Cassé {% if %}", "x"),
        logto_row("ja", "SignIn", "壊れた", "{% for %}"),
    )
    await sync.refresh()
    assert sync.state == "template_error" and sync.problem is not None
    assert "fr/SignIn" in sync.problem and "ja/SignIn" in sync.problem
    assert library.render_email("SignIn", {"code": "7", "locale": "fr"}).subject == "Bon 7"
    ja = library.render_email("SignIn", {"code": "7", "locale": "ja"})
    assert ja.source == "bundled" and ja.locale == "ja"
    fake_logto.set_templates(logto_row("fr", "SignIn", "Réparé {{code}}", "ok"))
    await sync.refresh()
    assert sync.state == "ok"
    assert library.render_email("SignIn", {"code": "7", "locale": "fr"}).subject == "Réparé 7"
    await sync.stop()


async def test_logto_template_failing_at_render_falls_back(fake_logto: FakeLogto) -> None:
    """A Logto template that compiles but fails for a payload is skipped, not a failed send."""
    fake_logto.set_templates(
        logto_row("en", "SignIn", "S", "{{ nothing() }}"),
        logto_row("en", "Generic", "G", "{{code}}", replyTo="not an address"),
    )
    library, sync = await synced(fake_logto)
    email = library.render_email("SignIn", {"code": "9"})
    assert email.source == "bundled" and "9" in email.text
    assert library.render_email("Generic", {"code": "9"}).source == "bundled"
    await sync.stop()


def test_logto_config_keeps_secret_out_of_repr_and_checks_fields() -> None:
    """templates.logto needs endpoint, app_id and app_secret; the secret never shows."""
    parsed = parse_config(
        config({"endpoint": "https://auth.example.com/", "app_id": "a", "app_secret": "s3cr3t!"})
    )
    logto = parsed.templates.logto
    assert logto is not None and logto.endpoint == "https://auth.example.com"
    assert logto.resource == "https://default.logto.app/api" and logto.refresh_seconds == 300
    assert "s3cr3t!" not in repr(parsed)
    with pytest.raises(Exception) as caught:
        parse_config(config({"endpoint": "ftp://x", "app_secret": "s3cr3t!"}))
    text = str(caught.value)
    assert "templates.logto.endpoint" in text and "templates.logto.app_id" in text
    assert "s3cr3t!" not in text


def check_online(fake: FakeLogto, tmp_path: Path, **overrides: Any) -> Any:
    file = tmp_path / "config.yaml"
    file.write_text(json.dumps(config(fake.config(**overrides))), encoding="utf-8")
    return subprocess.run(
        [str(BIN), "check-config", "--online", str(file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_check_config_online_lists_templates_per_language(
    fake_logto: FakeLogto, tmp_path: Path
) -> None:
    """check-config --online tries the credentials and counts Logto's templates per language."""
    fake_logto.set_templates(*rows_fr_en(), logto_row("fr", "Register", "S", "c"))
    done = check_online(fake_logto, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "credentials accepted, 3 email template(s)" in done.stdout
    assert "en: 1 (SignIn)" in done.stdout and "fr: 2 (Register, SignIn)" in done.stdout
    assert APP_SECRET not in done.stdout + done.stderr


@pytest.mark.slow
def test_check_config_online_wrong_secret_fails_without_echoing_it(
    fake_logto: FakeLogto, tmp_path: Path
) -> None:
    """Refused credentials exit 1 with the reason, never the secret; the hint names the
    endpoint too (an admin console's URL is the usual mistake)."""
    done = check_online(fake_logto, tmp_path, app_secret="NotTheS3cret")
    assert done.returncode == 1 and "invalid_client" in done.stderr
    assert "templates.logto.endpoint (Logto's core endpoint" in done.stderr
    assert "NotTheS3cret" not in done.stdout + done.stderr


@pytest.mark.slow
def test_render_command_uses_logto_templates(fake_logto: FakeLogto, tmp_path: Path) -> None:
    """otp-service render previews what the service would send, Logto's templates included."""
    fake_logto.set_templates(logto_row("fr", "SignIn", "Logto fr", "Code : {{code}}"))
    file = tmp_path / "config.yaml"
    file.write_text(json.dumps(config(fake_logto.config())), encoding="utf-8")
    done = subprocess.run(
        [str(BIN), "render", "--channel", "email", "--locale", "fr", "--code", "135790",
         "--config", str(file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Locale:  fr [logto]" in done.stdout and "Subject: Logto fr" in done.stdout
    assert "Code : 135790" in done.stdout


async def test_logto_refresh_after_a_render_changes_the_template_chosen(
    fake_logto: FakeLogto,
) -> None:
    """A language's template added or removed in Logto is chosen, or no longer, by the next
    render, though that type and language were rendered before (their choice is kept)."""
    fake_logto.set_templates(logto_row("fr", "SignIn", "fr SignIn", "f"))
    library, sync = await synced(fake_logto)
    payload = {"code": "1", "locale": "en"}
    assert library.render_email("SignIn", payload).source == "bundled"
    fake_logto.set_templates(logto_row("en", "SignIn", "en SignIn", "e"))
    await sync.refresh()
    assert library.render_email("SignIn", payload).subject == "en SignIn"
    fake_logto.set_templates()
    await sync.refresh()
    assert library.render_email("SignIn", payload).source == "bundled"
    await sync.stop()
