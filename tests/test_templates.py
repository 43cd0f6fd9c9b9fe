"""Template lookup: Logto's precedence, usage-type and language fallback, safe rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import FileSystemLoader

from otp_service.config import TemplatesConfig
from otp_service.config.smtp import EmailTemplate
from otp_service.errors import ConfigError, RequestError, TemplateNotFoundError
from otp_service.message.sources import environment
from otp_service.message.templates import TemplateLibrary, bundled_root
from otp_service.text.locales import chain

from .support.service import write_tree

TYPES = (
    "SignIn", "Register", "ForgotPassword", "OrganizationInvitation", "Generic",
    "UserPermissionValidation", "BindNewIdentifier", "MfaVerification", "BindMfa",
)  # fmt: skip
LOCALES = ("en", "fr", "ja", "zh-CN")


def email_files(locale: str, usage: str, word: str) -> dict[str, str]:
    return {
        f"email/{locale}/{usage}.subject": f"{word} subject",
        f"email/{locale}/{usage}.txt": f"{word} text {{{{code}}}}",
    }


def json_template(usage: str, word: str, content_type: str = "text/plain") -> EmailTemplate:
    return EmailTemplate(usage, content_type, f"{word} subject", f"{word} {{{{code}}}}")


def library(
    tmp_path: Path | None = None,
    files: dict[str, str] | None = None,
    connector: tuple[EmailTemplate, ...] = (),
    *,
    bundled: bool = True,
) -> TemplateLibrary:
    directory = write_tree(tmp_path, files) if tmp_path is not None and files else None
    config = TemplatesConfig(directory=directory, bundled=bundled, brand="Acme")
    return TemplateLibrary(config, connector)


def test_locale_chain_order_and_region_fallback() -> None:
    """payload.locale, then each uiLocales tag, then the default; each tag also without region."""
    assert chain("fr-CA", "de-AT ja", "en") == ["fr-ca", "fr", "de-at", "de", "ja", "en"]


def test_locale_chain_simplified_chinese_aliases() -> None:
    """zh, zh-Hans and zh-SG find the zh-CN templates; Traditional tags do not."""
    assert "zh-cn" in chain("zh-Hans", None, "en")
    assert "zh-cn" in chain("zh", None, "en")
    assert "zh-cn" not in chain("zh-TW", None, "en")


def test_locale_chain_ignores_garbage_tags() -> None:
    """A malformed locale is skipped, not an error."""
    assert chain("../../etc", 42, "en") == ["en"]


def test_bundled_defaults_cover_every_type_and_language() -> None:
    """Every usage type has subject, text, HTML and SMS defaults in all four languages."""
    root = bundled_root()
    for locale in LOCALES:
        for usage in TYPES:
            for rel in (f"email/{locale}/{usage}.subject", f"email/{locale}/{usage}.txt",
                        f"email/{locale}/{usage}.html", f"sms/{locale}/{usage}.txt"):  # fmt: skip
                assert (root / rel).is_file(), rel


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("usage", TYPES)
def test_bundled_email_renders_code_never_in_subject(locale: str, usage: str) -> None:
    """Each bundled email shows the code in text and HTML, keeps it out of the subject."""
    lib = library()
    email = lib.render_email(
        usage, {"code": "918273", "locale": locale, "link": "https://x.test/j"}
    )
    assert email.locale == locale
    assert "918273" in email.text and email.html is not None and "918273" in email.html
    assert "918273" not in email.subject and "{{" not in email.subject
    assert "{{" not in email.text and "{{" not in email.html
    sms = lib.render_sms(usage, {"code": "918273", "locale": locale})
    assert "918273" in sms.text and "{{" not in sms.text


def test_bundled_falls_back_to_region_less_and_default_language() -> None:
    """fr-CA gets French; an unsupported language gets the default (English)."""
    lib = library()
    assert lib.render_email("SignIn", {"code": "1", "locale": "fr-CA"}).locale == "fr"
    assert lib.render_email("SignIn", {"code": "1", "locale": "de-DE"}).locale == "en"
    assert lib.render_email("SignIn", {"code": "1", "uiLocales": "de ja"}).locale == "ja"
    assert lib.render_sms("SignIn", {"code": "1", "locale": "zh-Hans-CN"}).locale == "zh-CN"


def test_unknown_and_test_types_use_generic(tmp_path: Path) -> None:
    """A type Logto adds later, and the old Test type, are rendered with Generic."""
    lib = library(tmp_path, email_files("en", "Generic", "generic"), bundled=False)
    assert lib.render_email("BrandNewType", {"code": "1"}).subject == "generic subject"
    assert lib.render_email("Test", {"code": "1"}).subject == "generic subject"


def test_template_edited_between_two_builds_renders_its_new_content(tmp_path: Path) -> None:
    """Compiled code is reused from one build of the library to the next only for unchanged
    content: a file edited in between (same name, same path) renders its new text."""
    before = library(tmp_path, email_files("en", "SignIn", "before"), bundled=False)
    assert before.render_email("SignIn", {"code": "1"}).subject == "before subject"
    after = library(tmp_path, email_files("en", "SignIn", "after"), bundled=False)
    assert after.render_email("SignIn", {"code": "1"}).subject == "after subject"
    assert after.render_email("SignIn", {"code": "2"}).text.strip() == "after text 2"
    assert before.render_email("SignIn", {"code": "1"}).subject == "before subject"


def test_html_and_text_sandboxes_never_share_compiled_code(tmp_path: Path) -> None:
    """One file compiled by both sandboxes escapes in the HTML one only, whichever came first."""
    files = {"email/en/SignIn.subject": "s", "email/en/SignIn.html": "<p>{{ code }}</p>"}
    html_first = library(tmp_path, files, bundled=False).render_email("SignIn", {"code": "<b>"})
    assert html_first.html == "<p>&lt;b&gt;</p>"
    directory = write_tree(tmp_path, files)
    text = environment(FileSystemLoader(str(directory)), html=False)
    assert text.get_template("email/en/SignIn.html").render(code="<b>") == "<p><b></p>"


def test_no_template_and_no_generic_is_422(tmp_path: Path) -> None:
    """Without the type and without Generic anywhere, rendering fails with template_not_found."""
    lib = library(tmp_path, email_files("en", "SignIn", "x"), bundled=False)
    with pytest.raises(TemplateNotFoundError) as caught:
        lib.render_email("Register", {"code": "1"})
    assert caught.value.status == 422 and caught.value.code == "template_not_found"


def test_operator_file_in_requested_language_beats_connector_json(tmp_path: Path) -> None:
    """Logto's precedence: the operator's template for this type and language wins."""
    files = email_files("fr", "SignIn", "fichier")
    lib = library(tmp_path, files, (json_template("SignIn", "json"),))
    assert lib.render_email("SignIn", {"code": "1", "locale": "fr"}).subject == "fichier subject"
    assert lib.render_email("SignIn", {"code": "1", "locale": "fr-BE"}).subject == "fichier subject"


def test_connector_json_used_when_no_file_for_language(tmp_path: Path) -> None:
    """No operator file in the chain's languages: the pasted JSON template serves."""
    files = email_files("fr", "SignIn", "fichier")
    lib = library(tmp_path, files, (json_template("SignIn", "json"),))
    email = lib.render_email("SignIn", {"code": "42", "locale": "ja"})
    assert email.subject == "json subject" and email.text.strip() == "json 42"
    assert email.source == "connector"


def test_connector_generic_beats_operator_generic_and_bundled(tmp_path: Path) -> None:
    """For a type without its own template, the JSON's Generic comes before file Generic."""
    files = email_files("en", "Generic", "file-generic")
    lib = library(tmp_path, files, (json_template("Generic", "json-generic"),))
    assert lib.render_email("MfaVerification", {"code": "1"}).subject == "json-generic subject"


def test_operator_generic_beats_bundled_type(tmp_path: Path) -> None:
    """Bundled defaults serve only where neither operator files nor the JSON have a template."""
    lib = library(tmp_path, email_files("en", "Generic", "file-generic"))
    assert lib.render_email("BindMfa", {"code": "1"}).subject == "file-generic subject"


def test_bundled_used_without_files_or_json() -> None:
    """Capture mode with no templates configured still sends a good default."""
    email = library().render_email("ForgotPassword", {"code": "555111"})
    assert email.source == "bundled" and "555111" in email.text


def test_connector_html_template_gets_text_alternative() -> None:
    """A text/html JSON template produces HTML plus a derived plain-text part."""
    html = EmailTemplate(
        "Generic", "text/html", "S", "<p>Your code: <b>{{code}}</b></p><style>p{}</style>"
    )
    email = library(connector=(html,)).render_email("SignIn", {"code": "777"})
    assert email.html == "<p>Your code: <b>777</b></p><style>p{}</style>"
    assert email.text.strip() == "Your code: 777"


def test_connector_plain_template_has_no_html() -> None:
    """A text/plain JSON template is sent as text only."""
    email = library(connector=(json_template("Generic", "plain"),)).render_email(
        "SignIn", {"code": "1"}
    )
    assert email.html is None and email.text.strip() == "plain 1"


def test_payload_line_break_in_subject_refused(tmp_path: Path) -> None:
    """A payload value that would add a header line through the subject is a 400."""
    files = {"email/en/Generic.subject": "Hi {{ user.name }}", "email/en/Generic.txt": "x"}
    lib = library(tmp_path, files, bundled=False)
    with pytest.raises(RequestError) as caught:
        lib.render_email("SignIn", {"user": {"name": "Bob\r\nBcc: evil@example.com"}})
    assert caught.value.code == "invalid_header_value" and caught.value.status == 400


def test_broken_operator_template_is_config_error(tmp_path: Path) -> None:
    """A syntax error in a template file stops start-up with the file named."""
    files = {"email/en/SignIn.subject": "{% if %}", "email/en/SignIn.txt": "x"}
    with pytest.raises(ConfigError) as caught:
        library(tmp_path, files)
    assert any("email/en/SignIn.subject" in p.path for p in caught.value.problems)


def test_operator_html_can_extend_bundled_layout(tmp_path: Path) -> None:
    """An operator's HTML body may reuse the bundled layout of its language."""
    files = {
        "email/en/SignIn.subject": "S",
        "email/en/SignIn.html": '{% extends "email/en/_layout.html" %}'
        "{% block intro %}<p>Custom {{code}}</p>{% endblock %}",
    }
    email = library(tmp_path, files).render_email("SignIn", {"code": "31337"})
    assert "<p>Custom 31337</p>" in (email.html or "")
    assert "<html" in (email.html or "").lower() and "Custom 31337" in email.text


def test_brand_from_application_display_name() -> None:
    """The brand shown is the application's display name when Logto sends it."""
    email = library().render_email(
        "SignIn", {"code": "1", "application": {"name": "app", "displayName": "Zeta Bank"}}
    )
    assert "Zeta Bank" in email.subject
