"""Hostile templates kept in Logto: too large, a loop bomb, a header with CR/LF. Each is skipped
for the next source of the precedence, named in a warning; none fails or stalls a send."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from otp_service.config import TemplatesConfig
from otp_service.config.logto import LogtoConfig
from otp_service.logto.client import LogtoTemplate
from otp_service.logto.sync import TemplateSync
from otp_service.message.sources import MAX_TEMPLATE_BYTES
from otp_service.message.templates import TemplateLibrary

PAYLOAD: dict[str, Any] = {"code": "482913", "locale": "en"}


def warned(caplog: pytest.LogCaptureFixture) -> str:
    """The fields of the warnings logged (the template's name is one)."""
    return " ".join(str(r.__dict__) for r in caplog.records if r.levelname == "WARNING")


def library(*rows: LogtoTemplate) -> tuple[TemplateLibrary, list[str]]:
    """The bundled templates plus ``rows`` as Logto's; the problems the rows had."""
    templates = TemplateLibrary(TemplatesConfig())
    return templates, templates.use_logto(rows)


def row(subject: str = "Logto {{code}}", content: str = "<p>{{code}}</p>") -> LogtoTemplate:
    return LogtoTemplate("en", "SignIn", subject, content)


def test_logto_template_bounds_a_normal_template_renders_from_logto() -> None:
    """The budget leaves an ordinary Logto template (a loop, filters) rendering as before."""
    content = "{% for c in code %}<b>{{ c|upper }}</b>{% endfor %}{{ 'x' * 3 }}"
    templates, problems = library(row(content=content))
    email = templates.render_email("SignIn", PAYLOAD)
    assert problems == [] and email.source == "logto"
    assert (
        email.subject == "Logto 482913"
        and email.html == "".join(f"<b>{c}</b>" for c in "482913") + "xxx"
    )


def test_logto_template_with_40000_placeholders_is_skipped_for_the_next_source() -> None:
    """A 440 KB template of 40,000 placeholders is not compiled: it is reported by name and
    the send uses the bundled template."""
    huge = "{{ code }} " * 40_000
    assert len(huge.encode()) > MAX_TEMPLATE_BYTES
    templates, problems = library(row(content=huge))
    assert len(problems) == 1 and problems[0].startswith("en/SignIn (")
    assert "KiB" in problems[0]
    email = templates.render_email("SignIn", PAYLOAD)
    assert email.source == "bundled" and "482913" in email.text


@pytest.mark.parametrize(
    "bomb",
    [
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        "{% for a in range(100000) %}{% for b in range(100000) %}{% set c = b %}"
        "{% endfor %}{% endfor %}",
        "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}",
        "{{ 'x' * 1000000000 }}",
        "{{ 9 ** 999999999 }}",
    ],
    ids=["output", "silent", "recursion", "product", "power"],
)
def test_logto_template_loop_bomb_is_stopped_and_set_aside(
    bomb: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A template that would loop or allocate for minutes is stopped by its render budget:
    the send uses the next source, a warning names the template, and the template is set
    aside (later sends do not pay for it again) until Logto changes it."""
    templates, problems = library(row(content=bomb))
    assert problems == []
    email = templates.render_email("SignIn", PAYLOAD)
    assert email.source == "bundled" and "482913" in email.text
    assert "Logto's en/SignIn" in warned(caplog)
    assert templates.logto.get("SignIn", "en") is None  # set aside
    assert templates.use_logto([row(content=bomb)]) == ["en/SignIn (went over its render budget)"]
    assert templates.use_logto([row()]) == []  # changed in Logto: used again
    assert templates.render_email("SignIn", PAYLOAD).source == "logto"


@pytest.mark.parametrize("field", ["subject", "send_from", "reply_to"])
def test_logto_template_with_crlf_in_a_header_falls_back(
    field: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Logto template whose subject, sender or Reply-To renders CR/LF is a template error:
    the send falls back to the next source instead of failing with 400."""
    bad = "Hi{{ '\\r\\n' }}Bcc: victim@example.com"
    fields: dict[str, Any] = {"subject": "Logto {{code}}", "send_from": None, "reply_to": None}
    fields[field] = bad
    template = LogtoTemplate("en", "SignIn", fields["subject"], "<p>{{code}}</p>",
                             reply_to=fields["reply_to"], send_from=fields["send_from"])  # fmt: skip
    templates, _ = library(template)
    email = templates.render_email("SignIn", PAYLOAD)
    assert email.source == "bundled" and "\n" not in email.subject
    assert "Logto's en/SignIn" in warned(caplog)


async def test_logto_templates_compile_off_the_event_loop() -> None:
    """The sync hands the rows to the compiler in another thread: a large set of templates
    never holds up the event loop that answers sends."""
    threads: list[threading.Thread] = []

    def apply(rows: Any) -> list[str]:
        threads.append(threading.current_thread())
        return []

    class Rows:
        async def email_templates(self) -> tuple[list[LogtoTemplate], list[str]]:
            return [row()], []

        async def close(self) -> None:
            return None

    config = LogtoConfig(endpoint="http://127.0.0.1:9", app_id="a", app_secret="s")
    sync = TemplateSync(config, apply, Rows())  # type: ignore[arg-type]
    await sync.refresh()
    await asyncio.sleep(0)
    assert threads and threads[0] is not threading.main_thread()
