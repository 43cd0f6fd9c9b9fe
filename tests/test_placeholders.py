"""Logto's placeholder rules (docs/logto-contract.md, "Placeholders"), rendered through our sandboxed Jinja2."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import ChainableUndefined
from jinja2.sandbox import SandboxedEnvironment

from otp_service.message.placeholders import LogtoPlaceholders


def render(template: str, payload: dict[str, Any], *, html: bool = False) -> str:
    env = SandboxedEnvironment(
        extensions=[LogtoPlaceholders], undefined=ChainableUndefined, autoescape=html
    )
    return env.from_string(template).render(payload)


CASES = [
    # (template, payload, expected) — the rules of docs/logto-contract.md, "Placeholders"
    ("Code {{code}}", {"code": "123456"}, "Code 123456"),
    ("Code {{ code }}", {"code": "123456"}, "Code 123456"),
    ("Code {{     code }}", {"code": "123456"}, "Code 123456"),
    ("Code {{code}}", {}, "Code {{code}}"),
    ("Code {{  code  }}!", {}, "Code {{  code  }}!"),
    ("{{code}} and {{foo}}", {"code": "1", "foo": "bar"}, "1 and bar"),
    ("{{code}} and {{foo}}", {"code": "1"}, "1 and {{foo}}"),
    ("Hi {{ user.profile.givenName }}", {"user": {"profile": {"givenName": "Ada"}}}, "Hi Ada"),
    ("Hi {{ user.profile.givenName }}.", {"user": {"name": "Ada"}}, "Hi ."),
    ("Hi {{ user.name }}.", {"user": None}, "Hi ."),
    ("Hi {{ user.name }}.", {"user": {"name": None}}, "Hi ."),
    ("Hi {{ application.name }}.", {}, "Hi {{ application.name }}."),
    (
        "{{ application.customData.baz.1 }}",
        {"application": {"customData": {"baz": ["a", "b"]}}},
        "b",
    ),
    ("[{{ application.customData.baz.5 }}]", {"application": {"customData": {"baz": ["a"]}}}, "[]"),
    ("[{{ a.b.c }}]", {"a": {"b": "text"}}, "[]"),
    (
        "{{ n }}/{{ f }}/{{ t }}/{{ no }}",
        {"n": 7, "f": 2.0, "t": True, "no": False},
        "7/2/true/false",
    ),
    ("{{ xs }}", {"xs": [1, "a", None]}, "1,a,"),
    ("{{ link }}", {"link": "https://x.test/i?a=1&b=2"}, "https://x.test/i?a=1&b=2"),
]


@pytest.mark.parametrize(("template", "payload", "expected"), CASES)
def test_placeholder_renders_like_logto(
    template: str, payload: dict[str, Any], expected: str
) -> None:
    """Each placeholder case renders exactly as Logto's connectors render it."""
    assert render(template, payload) == expected


def test_placeholder_values_escaped_in_html() -> None:
    """A payload value cannot inject markup into an HTML template."""
    out = render("<p>{{ user.name }}</p>", {"user": {"name": "<script>x</script>"}}, html=True)
    assert out == "<p>&lt;script&gt;x&lt;/script&gt;</p>"


def test_placeholder_absent_root_verbatim_in_html() -> None:
    """The verbatim placeholder of an absent root survives HTML escaping unchanged."""
    assert render("<b>{{code}}</b>", {}, html=True) == "<b>{{code}}</b>"


def test_placeholder_loop_variable_still_jinja() -> None:
    """Jinja loop variables keep working inside bare placeholders."""
    assert render("{% for x in xs %}{{ x }};{% endfor %}", {"xs": ["a", "b"]}) == "a;b;"


def test_placeholder_dict_methods_not_reachable() -> None:
    """A key like 'items' reads the payload value, not a Python method."""
    assert render("{{ data.items }}", {"data": {"items": "three"}}) == "three"


def test_placeholder_sandbox_blocks_python_internals() -> None:
    """Template authors cannot reach Python internals through the sandbox."""
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        render("{{ code.__class__.__mro__[1].__subclasses__() }}", {"code": "1"})
