"""Templates: find the template for a usage type and language, and render it safely.

Sources, in Logto's precedence (docs/templates.md):

1. per-language templates for the type, in each language of the request's chain: the operator's
   template directory, then the templates kept in Logto (``templates.logto``) — for the same
   type and language the operator's file wins;
2. the templates pasted in the Logto connector JSON: the type, then its ``Generic``;
3. per-language ``Generic`` templates (operator's directory, then Logto), in each language;
4. the bundled defaults (unless disabled): the type, then ``Generic``, in each language.

A directory holds ``email/<locale>/<Type>.subject`` with ``.txt`` and/or ``.html``, and
``sms/<locale>/<Type>.txt``. Files and connector JSON are compiled at start-up, so a broken one
is a configuration error, never a failed request. Logto's templates arrive while the service
runs: one that does not compile, or fails to render, is skipped for the next source down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Template

from ..config import TemplatesConfig
from ..config.smtp import EmailTemplate
from ..errors import ConfigError, RequestError, TemplateNotFoundError
from ..logto.client import LogtoTemplate
from ..text import locales
from ..text.addresses import parse_mailbox
from ..text.htmltext import html_to_text
from ..text.sanitize import has_control
from .branding import branding
from .sources import Connector, Directory, EmailSet, LogtoSource

log = logging.getLogger("otp_service.templates")
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


class _Skip(Exception):
    """A Logto template failed for this request: use the next source down."""


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
        *,
        email_at: str = "connector email templates",
        sms_at: str = "connector SMS templates",
    ) -> None:
        self.config = config
        bundled = bundled_root()
        self.operator = (
            Directory(config.directory, str(config.directory), [config.directory, bundled])
            if config.directory is not None
            else None
        )
        self.connector = Connector(connector_email, connector_sms, email_at, sms_at)
        self.bundled = Directory(bundled, "templates", [bundled]) if config.bundled else None
        self.logto = LogtoSource()
        self._render_failures: set[tuple[str, str]] = set()  # Logto templates warned about
        problems = [
            *(self.operator.problems if self.operator else []),
            *self.connector.problems,
            *(self.bundled.problems if self.bundled else []),
        ]
        if problems:
            raise ConfigError(problems)

    def use_logto(self, rows: Sequence[LogtoTemplate]) -> list[str]:
        """Serve these templates read from Logto from now on; returns the broken ones."""
        self._render_failures.clear()
        return self.logto.update(rows)

    def _context(self, usage: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **branding(payload, self.config.brand),
            "ttl_minutes": self.config.code_ttl_minutes,
            "type": usage,
            **payload,
        }

    def _chain(self, payload: Mapping[str, Any]) -> list[str]:
        return locales.chain(
            payload.get("locale"), payload.get("uiLocales"), self.config.default_locale
        )

    def _per_language(self, channel: str, usage: str, chain: list[str]) -> Iterator[Any]:
        for tag in chain:
            if self.operator and (hit := self.operator.get(channel, usage, tag)):
                yield hit[0], "directory", hit[1]
            if channel == "email" and (hit := self.logto.get(usage, tag)):
                yield hit[0], "logto", hit[1]

    def _candidates(self, channel: str, usage: str, chain: list[str]) -> Iterator[Any]:
        """(locale, source, template) in Logto's precedence (see the module docstring)."""
        wanted = _ALIASES.get(usage, usage)
        connector: Mapping[str, Any] = (
            self.connector.email if channel == "email" else self.connector.sms
        )
        yield from self._per_language(channel, wanted, chain)
        for name in (wanted, GENERIC):
            if (found := connector.get(name)) is not None:
                yield "", "connector", found
        if wanted != GENERIC:
            yield from self._per_language(channel, GENERIC, chain)
        for name in (wanted, GENERIC):
            for tag in chain:
                if self.bundled and (hit := self.bundled.get(channel, name, tag)):
                    yield hit[0], "bundled", hit[1]
                    break

    def _skip(self, locale: str, usage: str, what: str) -> _Skip:
        if (locale, usage) not in self._render_failures:
            self._render_failures.add((locale, usage))
            log.warning(
                "Logto's %s template for a %s email %s; using the next source", locale, usage, what
            )
        return _Skip()

    def _email(self, locale: str, source: str, t: EmailSet, ctx: dict[str, Any]) -> EmailContent:
        try:
            subject = _header(t.subject, ctx, "subject") or ""
            html = t.html.render(ctx) if t.html is not None else None
            text = t.text.render(ctx).strip() if t.text is not None else html_to_text(html or "")
            reply_to = _header(t.reply_to, ctx, "Reply-To")
            send_from = _header(t.send_from, ctx, "From")
        except RequestError:
            raise
        except Exception as exc:  # TemplateError, or e.g. a division by zero inside one
            if source == "logto":
                raise self._skip(locale, str(ctx["type"]), "failed to render") from exc
            raise RequestError(
                "template_error", "the email template failed to render", 422
            ) from exc
        for what, value in (("replyTo", reply_to), ("sendFrom", send_from)):
            try:
                if value:
                    parse_mailbox(value)
            except ValueError as exc:  # found now, before anything is stored
                if source == "logto":
                    raise self._skip(locale, str(ctx["type"]), f"has a bad {what}") from exc
                raise RequestError(
                    "template_error", f"the email template's {what} is not an address", 422
                ) from exc
        return EmailContent(subject, text + "\n", html, locale, source, reply_to, send_from)

    def render_email(self, usage: str, payload: Mapping[str, Any]) -> EmailContent:
        """Subject, text and HTML for ``usage``; 422 when no template exists."""
        context = self._context(usage, payload)
        for locale, source, templates in self._candidates("email", usage, self._chain(payload)):
            try:
                return self._email(locale, source, templates, context)
            except _Skip:
                continue
        raise TemplateNotFoundError("email", usage)

    def render_sms(self, usage: str, payload: Mapping[str, Any]) -> SmsContent:
        """The SMS text for ``usage``; 422 when no template exists."""
        found = next(self._candidates("sms", usage, self._chain(payload)), None)
        if found is None:
            raise TemplateNotFoundError("sms", usage)
        locale, source, template = found
        try:
            text = template.render(self._context(usage, payload)).strip()
        except Exception as exc:  # TemplateError, or e.g. a division by zero inside one
            raise RequestError("template_error", "the SMS template failed to render", 422) from exc
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
            (f"{self.connector.sms_at} {usage}", template)
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
