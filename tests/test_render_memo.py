"""The render memo (otp_service/message/memo.py): a template's output reused across requests that
differ only in their code and link, byte-identical to a fresh render, and never used where a
stand-in would not reproduce the template's output."""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import pytest

from otp_service.config import TemplatesConfig
from otp_service.message.memo import MAX_ENTRIES, TRIAL_MISSES, RenderMemo, memoisable
from otp_service.message.templates import TemplateLibrary
from otp_service.text.sanitize import json_problem, json_text_may_hold_problem

from .support.service import write_tree

HOSTILE_CODES = [
    "482913", "0", "<b>&amp;\"'</b>", "{{code}}", "{% raw %}", "ü€𝄞 \u2028x", "a" * 300,
    "\\u0041", "%s%d", "Zq00Xk",
]  # fmt: skip
LINKS = [None, "", 'https://auth.example.com/x?a=1&b=<2>&c="3"', "javascript:alert(1)"]


def _library(directory: Path | None = None, *, memo: bool = True) -> TemplateLibrary:
    library = TemplateLibrary(TemplatesConfig(directory=directory, brand="Acme"))
    if not memo:
        library.memo = None  # type: ignore[assignment]
    return library


def test_bundled_emails_and_texts_are_byte_identical_through_the_memo() -> None:
    """Every bundled type the hot path renders, in each language, with hostile codes and links,
    renders the same through the memo as without it; and the memo is used (reused entries)."""
    memoised, fresh = _library(), _library(memo=False)
    rng = random.Random(7)
    codes = HOSTILE_CODES + ["".join(rng.choices(string.printable, k=8)) for _ in range(20)]
    usages = ["SignIn", "Register", "ForgotPassword", "Generic", "Invite", "OrganizationInvitation",
              "Message", "PasswordChanged", "MfaVerification", "BindMfa"]  # fmt: skip
    for usage in usages:
        for locale in ("en", "fr", "ja", "zh-CN", "de"):
            for code in codes:
                for link in LINKS:
                    payload: dict[str, Any] = {"code": code, "locale": locale,
                                               "application": {"displayName": "Acme <&>"}}  # fmt: skip
                    if link is not None:
                        payload["link"] = link
                    assert memoised.render_email(usage, payload) == fresh.render_email(
                        usage, payload
                    ), (usage, locale, code, link)
            if usage in ("SignIn", "Register", "ForgotPassword", "Generic"):
                for code in codes:
                    payload = {"code": code, "locale": locale}
                    assert memoised.render_sms(usage, payload) == fresh.render_sms(usage, payload)
    assert memoised.memo is not None and sum(memoised.memo._hits.values()) > 1000


def test_the_sign_in_email_is_memoised_for_its_code() -> None:
    """The hot path's templates take stand-ins for the code: the memo is not idle there."""
    library = _library()
    templates = library.bundled.email[("SignIn", "en")]  # type: ignore[union-attr]
    for template in (templates.subject, templates.text, templates.html):
        assert template is not None and "code" in memoisable(template)


UNSAFE = {
    "filter": "{{ code|upper }}",
    "comparison": "{% if code == '1' %}one{% endif %}{{ code }}",
    "loop": "{% for c in code %}{{ c }}{% endfor %}",
    "loop_output": "{% for i in range(2) %}{{ code }}{% endfor %}",
    "set": "{% set code = 'x' %}{{ code }}",
    "filter_block": "{% filter upper %}{{ code }}{% endfilter %}",
    "macro": "{% macro m() %}{{ code }}{% endmacro %}{{ m()|lower }}",
    "reused_block": "{% block b %}{{ code }}{% endblock %}{{ self.b()|upper }}",
    "length": "{{ code|length }}",
    "concat": "{{ code ~ 'x' }}",
    "index": "{{ code[0] }}",
    "include": "{% include 'email/en/Part.txt' %}",
}


@pytest.mark.parametrize("name", list(UNSAFE))
def test_templates_using_the_code_otherwise_are_not_memoised(tmp_path: Path, name: str) -> None:
    """A filter, comparison, loop, set, macro, reused block or include on the code: no stand-in
    for it, and each code renders as a fresh render does."""
    root = write_tree(tmp_path / "t", {
        "email/en/SignIn.subject": "Code", "email/en/SignIn.txt": UNSAFE[name],
        "email/en/Part.txt": "{{ code }}",
    })  # fmt: skip
    memoised, fresh = _library(root), _library(root, memo=False)
    template = memoised.operator.email[("SignIn", "en")].text  # type: ignore[union-attr]
    assert template is not None and "code" not in memoisable(template)
    for code in ("ab", "cd", "Zq1", "12"):
        payload = {"code": code, "locale": "en"}
        assert memoised.render_email("SignIn", payload) == fresh.render_email("SignIn", payload)


def test_child_block_reused_by_its_parent_is_not_memoised(tmp_path: Path) -> None:
    """The parent trims a block the child fills with the code: the output is not the code's."""
    root = write_tree(tmp_path / "t", {
        "email/base.txt": "[{{ self.inner()|title }}]{% block inner %}{% endblock %}",
        "email/en/SignIn.subject": "Code",
        "email/en/SignIn.txt": "{% extends 'email/base.txt' %}{% block inner %}{{ code }}{% endblock %}",
    })  # fmt: skip
    memoised, fresh = _library(root), _library(root, memo=False)
    template = memoised.operator.email[("SignIn", "en")].text  # type: ignore[union-attr]
    assert template is not None and "code" not in memoisable(template)
    for code in ("abc def", "xyz"):
        payload = {"code": code, "locale": "en"}
        assert memoised.render_email("SignIn", payload) == fresh.render_email("SignIn", payload)


def test_output_a_stand_in_does_not_reproduce_is_never_memoised(tmp_path: Path) -> None:
    """A template whose output changes from one render to the next (``lipsum``) passes the scan
    but fails the check against a real render: it is never memoised, and stays random."""
    root = write_tree(tmp_path / "t", {
        "email/en/SignIn.subject": "Code", "email/en/SignIn.txt": "{{ code }} {{ lipsum(1) }}",
    })  # fmt: skip
    library = _library(root)
    template = library.operator.email[("SignIn", "en")].text  # type: ignore[union-attr]
    assert template is not None and "code" in memoisable(template)
    texts = {library.render_email("SignIn", {"code": "1", "locale": "en"}).text for _ in range(5)}
    assert len(texts) > 1
    assert library.memo._safe[template] == frozenset()
    assert not [key for key in library.memo._entries if key[0] is template]


def test_contexts_seldom_reused_stop_being_memoised(tmp_path: Path) -> None:
    """Every request with another user name: after the trial the template renders as before,
    so it never costs two renders for long; the memo stays bounded."""
    root = write_tree(tmp_path / "t", {
        "email/en/SignIn.subject": "Code",
        "email/en/SignIn.txt": "Hello {{ user.name }}, {{ code }}",
    })  # fmt: skip
    library = _library(root)
    template = library.operator.email[("SignIn", "en")].text  # type: ignore[union-attr]
    for number in range(TRIAL_MISSES + 5):
        payload = {"code": "1", "locale": "en", "user": {"name": f"user {number}"}}
        assert library.render_email("SignIn", payload).text == f"Hello user {number}, 1\n"
    assert library.memo._safe[template] == frozenset()
    assert len([key for key in library.memo._entries if key[0] is template]) <= TRIAL_MISSES


def test_the_memo_is_bounded() -> None:
    """More distinct contexts than entries: the oldest are dropped, output still right."""
    library = _library()
    memo = RenderMemo(max_entries=8)
    library.memo = memo
    for number in range(40):
        payload = {"code": "123", "locale": "en", "application": {"displayName": f"App {number}"}}
        assert f"App {number}" in library.render_email("SignIn", payload).text
    assert len(memo._entries) <= 8 < MAX_ENTRIES


@pytest.mark.parametrize(
    "text",
    ['{"a":"\\ud800"}', '{"a":"\\uDFFF"}', '{"a":"\ud800"}', "[" * 40 + "]" * 40,
     '{"a":' * 33 + "1" + "}" * 33],
)  # fmt: skip
def test_json_text_with_a_possible_problem_is_walked(text: str) -> None:
    """The look at the text never waves through what the walk refuses."""
    assert json_text_may_hold_problem(text)


@pytest.mark.parametrize("text", ['{"to":"a@example.com","payload":{"code":"1"}}', '{"a":"😀"}'])
def test_plain_json_text_is_not_walked(text: str) -> None:
    import json

    assert not json_text_may_hold_problem(text) and json_problem(json.loads(text)) is None
