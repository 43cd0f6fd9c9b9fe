"""Templates: find the template for a usage type and language, and render it safely.

Sources, in Logto's precedence (README, "Templates"):

1. the operator's template directory: the type, in each language of the request's chain;
2. the templates pasted in the Logto connector JSON: the type, then its ``Generic``;
3. the operator's template directory: ``Generic``, in each language of the chain;
4. the bundled defaults (unless disabled): the type, then ``Generic``, in each language.

A directory holds ``email/<locale>/<Type>.subject`` with ``.txt`` and/or ``.html``, and
``sms/<locale>/<Type>.txt``. Everything is compiled at start-up, so a broken template is a
configuration error, never a failed request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import BaseLoader, ChainableUndefined, FileSystemLoader, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from ..config import TemplatesConfig
from ..config.smtp import EmailTemplate
from ..errors import (
    ConfigError,
    ConfigProblem,
    RequestError,
    TemplateNotFoundError,
)
from ..text import locales
from ..text.htmltext import html_to_text
from ..text.sanitize import has_control
from .placeholders import LogtoPlaceholders

GENERIC = "Generic"
_ALIASES = {"Test": GENERIC}  # older Logto versions send Test for the connector's test button


def bundled_root() -> Path:
    """The bundled ``templates/`` tree, in an installed wheel or in a source checkout."""
    here = Path(__file__).resolve().parent.parent  # the otp_service package
    installed = here / "_templates"
    return installed if installed.is_dir() else here.parent / "templates"


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str | None
    locale: str
    source: str
    reply_to: str | None = None
    send_from: str | None = None


@dataclass(frozen=True)
class SmsContent:
    text: str
    locale: str
    source: str


@dataclass(frozen=True)
class _EmailSet:
    subject: Template
    text: Template | None
    html: Template | None
    reply_to: Template | None = None
    send_from: Template | None = None


def _environment(loader: BaseLoader | None, *, html: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=loader,
        autoescape=html,
        undefined=ChainableUndefined,
        extensions=[LogtoPlaceholders],
        keep_trailing_newline=False,
        auto_reload=False,  # compiled once at start-up; a file edited later is not re-read
    )


class _Directory:
    """A template tree on disk, compiled once."""

    def __init__(self, root: Path, name: str, search: Sequence[Path]) -> None:
        self.name = name
        loader = FileSystemLoader([str(p) for p in search])
        self.text_env = _environment(loader, html=False)
        self.html_env = _environment(loader, html=True)
        self.email: dict[tuple[str, str], _EmailSet] = {}
        self.sms: dict[tuple[str, str], Template] = {}
        self.locales: dict[str, dict[str, str]] = {"email": {}, "sms": {}}
        self.problems: list[ConfigProblem] = []
        for channel in ("email", "sms"):
            base = root / channel
            for folder in sorted(base.iterdir()) if base.is_dir() else []:
                if folder.is_dir():
                    self.locales[channel][folder.name.lower()] = folder.name
                    self._load(channel, folder)

    def _compile(self, path: str, *, html: bool) -> Template | None:
        try:
            return (self.html_env if html else self.text_env).get_template(path)
        except TemplateError as exc:
            self.problems.append(ConfigProblem(f"{self.name}/{path}", str(exc), "fix the template"))
            return None

    def _load(self, channel: str, folder: Path) -> None:
        locale = folder.name
        if channel == "sms":
            for file in sorted(folder.glob("*.txt")):
                if (template := self._compile(f"sms/{locale}/{file.name}", html=False)) is not None:
                    self.sms[(file.stem, locale)] = template
            return
        for file in sorted(folder.glob("*.subject")):
            rel = f"email/{locale}/{file.stem}"
            has_text, has_html = (
                (folder / f"{file.stem}.txt").is_file(),
                (folder / f"{file.stem}.html").is_file(),
            )
            if not (has_text or has_html):
                self.problems.append(
                    ConfigProblem(
                        f"{self.name}/{rel}.subject", "has no body", f"add {rel}.txt or .html"
                    )
                )
                continue
            subject = self._compile(f"{rel}.subject", html=False)
            text = self._compile(f"{rel}.txt", html=False) if has_text else None
            body = self._compile(f"{rel}.html", html=True) if has_html else None
            if subject is not None:
                self.email[(file.stem, locale)] = _EmailSet(subject, text, body)

    def find(self, channel: str, usage: str, chain: list[str]) -> tuple[str, Any] | None:
        """(locale, compiled template) for ``usage`` in the first language of ``chain`` held."""
        table: Mapping[tuple[str, str], Any] = self.email if channel == "email" else self.sms
        for locale in locales.pick(chain, self.locales[channel]):
            if (found := table.get((usage, locale))) is not None:
                return locale, found
        return None


class _Connector:
    """Templates pasted in a Logto connector JSON, keyed by usage type."""

    def __init__(
        self, templates: Sequence[EmailTemplate], sms: Sequence[tuple[str, str]] = ()
    ) -> None:
        text_env, html_env = _environment(None, html=False), _environment(None, html=True)
        self.email: dict[str, _EmailSet] = {}
        self.sms: dict[str, Template] = {}
        self.problems: list[ConfigProblem] = []
        for index, (usage, content) in enumerate(sms):
            try:
                self.sms.setdefault(usage, text_env.from_string(content))
            except TemplateError as exc:
                self.problems.append(
                    ConfigProblem(f"sms.vonage.templates[{index}]", str(exc), "fix the template")
                )
        for index, t in enumerate(templates):
            try:
                is_html = t.content_type == "text/html"
                body = (html_env if is_html else text_env).from_string(t.content)
                self.email.setdefault(
                    t.usage_type,
                    _EmailSet(
                        subject=text_env.from_string(t.subject),
                        text=None if is_html else body,
                        html=body if is_html else None,
                        reply_to=text_env.from_string(t.reply_to) if t.reply_to else None,
                        send_from=text_env.from_string(t.send_from) if t.send_from else None,
                    ),
                )
            except TemplateError as exc:
                self.problems.append(
                    ConfigProblem(f"email.smtp.templates[{index}]", str(exc), "fix the template")
                )


def _header(template: Template | None, context: Mapping[str, Any], what: str) -> str | None:
    if template is None:
        return None
    value = template.render(context).strip()
    if has_control(value):
        raise RequestError(
            "invalid_header_value", f"a payload value would put a control character in the {what}"
        )
    return value


class TemplateLibrary:
    """Every template source, compiled; renders email and SMS content for a request."""

    def __init__(
        self,
        config: TemplatesConfig,
        connector_email: Sequence[EmailTemplate] = (),
        connector_sms: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.config = config
        bundled = bundled_root()
        self.operator = (
            _Directory(config.directory, str(config.directory), [config.directory, bundled])
            if config.directory is not None
            else None
        )
        self.connector = _Connector(connector_email, connector_sms)
        self.bundled = _Directory(bundled, "templates", [bundled]) if config.bundled else None
        problems = [
            *(self.operator.problems if self.operator else []),
            *self.connector.problems,
            *(self.bundled.problems if self.bundled else []),
        ]
        if problems:
            raise ConfigError(problems)

    def _context(self, usage: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        application = payload.get("application")
        brand = self.config.brand
        if isinstance(application, Mapping):
            brand = str(application.get("displayName") or application.get("name") or brand)
        return {
            "brand": brand,
            "ttl_minutes": self.config.code_ttl_minutes,
            "type": usage,
            **payload,
        }

    def _chain(self, payload: Mapping[str, Any]) -> list[str]:
        return locales.chain(
            payload.get("locale"), payload.get("uiLocales"), self.config.default_locale
        )

    def _find(self, channel: str, usage: str, chain: list[str]) -> tuple[str, str, Any] | None:
        """(locale, source, template) by Logto's precedence (see the module docstring)."""
        wanted = _ALIASES.get(usage, usage)
        connector: Mapping[str, Any] = (
            self.connector.email if channel == "email" else self.connector.sms
        )
        if self.operator and (hit := self.operator.find(channel, wanted, chain)):
            return hit[0], "directory", hit[1]
        for name in (wanted, GENERIC):
            if (found := connector.get(name)) is not None:
                return "", "connector", found
        if self.operator and (hit := self.operator.find(channel, GENERIC, chain)):
            return hit[0], "directory", hit[1]
        for name in (wanted, GENERIC):
            if self.bundled and (hit := self.bundled.find(channel, name, chain)):
                return hit[0], "bundled", hit[1]
        return None

    def render_email(self, usage: str, payload: Mapping[str, Any]) -> EmailContent:
        """Subject, text and HTML for ``usage``; 422 when no template exists."""
        found = self._find("email", usage, self._chain(payload))
        if found is None:
            raise TemplateNotFoundError("email", usage)
        locale, source, templates = found
        context = self._context(usage, payload)
        try:
            subject = _header(templates.subject, context, "subject") or ""
            html = templates.html.render(context) if templates.html is not None else None
            if templates.text is not None:
                text = templates.text.render(context).strip() + "\n"
            else:
                text = html_to_text(html or "") + "\n"
            return EmailContent(
                subject=subject,
                text=text,
                html=html,
                locale=locale,
                source=source,
                reply_to=_header(templates.reply_to, context, "Reply-To"),
                send_from=_header(templates.send_from, context, "From"),
            )
        except TemplateError as exc:
            raise RequestError("template_error", "the template failed to render", 422) from exc

    def render_sms(self, usage: str, payload: Mapping[str, Any]) -> SmsContent:
        """The SMS text for ``usage``; 422 when no template exists."""
        found = self._find("sms", usage, self._chain(payload))
        if found is None:
            raise TemplateNotFoundError("sms", usage)
        locale, source, template = found
        try:
            text = template.render(self._context(usage, payload)).strip()
        except TemplateError as exc:
            raise RequestError("template_error", "the template failed to render", 422) from exc
        return SmsContent(text=text, locale=locale, source=source)

    def sms_samples(self) -> list[tuple[str, str]]:
        """Every SMS template rendered with a sample payload: (where it lives, text)."""
        sample = {
            "code": "123456",
            "link": "https://auth.example.com/invitation/abcdefghijklmnopqrstuvwxyz012345",
            "organization": {"name": "Example Organization"},
        }
        context = self._context("Generic", sample)
        found: list[tuple[str, Template]] = [
            (f"sms.vonage.templates {usage}", template)
            for usage, template in self.connector.sms.items()
        ]
        for directory in (self.operator, self.bundled):
            if directory is not None:
                found += [
                    (f"{directory.name}/sms/{locale}/{usage}.txt", template)
                    for (usage, locale), template in directory.sms.items()
                ]
        return [
            (where, template.render({**context, "type": where}).strip())
            for where, template in found
        ]
