"""Templates: find the template for a usage type and language, and render it safely.

Sources, in Logto's precedence (docs/templates.md):

1. per-language templates for the type, in each language of the request's chain: the operator's
   template directory, then the templates kept in Logto (``templates.logto``) — for the same
   type and language the operator's file wins;
2. the templates pasted in the Logto connector JSON: the type, then its ``Generic``;
3. per-language ``Generic`` templates (operator's directory, then Logto), in each language;
4. the bundled defaults (unless disabled): the type, then ``Generic``, in each language.

The hooks' own types (:data:`NO_GENERIC`: notices, a text sent as is, invitations, email
changes) skip every ``Generic`` step: their bundled template is their fallback.

A directory holds ``email/<locale>/<Type>.subject`` with ``.txt`` and/or ``.html``, and
``sms/<locale>/<Type>.txt``. Files and connector JSON are compiled at start-up, so a broken one
is a configuration error, never a failed request; ``check-config`` and ``serve`` also render
each of them with a sample payload (:meth:`TemplateLibrary.render_problems`). Logto's templates
arrive while the service runs: one that does not compile, or fails to render, is skipped for the
next source down. A template that fails to render a request is a 422 ``template_error``, and the
log names its file, its language and the Jinja error with its line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateSyntaxError

from .. import logs
from ..config import TemplatesConfig
from ..config.smtp import EmailTemplate
from ..errors import (
    ConfigError,
    ConfigProblem,
    RequestError,
    TemplateNotFoundError,
    TemplateRenderError,
)
from ..logto.client import LogtoTemplate
from ..text import locales
from ..text.addresses import parse_mailbox
from ..text.htmltext import html_to_text
from ..text.sanitize import has_control
from .branding import branding
from .memo import RenderMemo
from .sources import (
    Budgeted,
    Connector,
    Directory,
    EmailSet,
    LogtoSource,
    OverBudget,
    budgeted_render,
)

log = logging.getLogger("otp_service.templates")
GENERIC = "Generic"
_RESOLVED_MAX = 512  # (channel, type, languages) whose templates are kept worked out
_ALIASES = {"Test": GENERIC}  # older Logto versions send Test for the connector's test button
# Usage types of other identity systems' hooks (otp_service/intake/) whose text no Generic
# template can stand in for: a notice without a code, a text sent as is, an invitation or an
# email change with its link. They skip the Generic steps (the bundled template of the type is
# their fallback), so a connector JSON's "Your code is {{code}}" never goes out as a notice.
NO_GENERIC = frozenset(
    {
        "Message", "Invite", "EmailChangeNew", "EmailChangeCurrent", "PasswordChanged",
        "EmailChanged", "PhoneChanged", "IdentityLinked", "IdentityUnlinked",
        "MfaFactorEnrolled", "MfaFactorUnenrolled", "UnknownAccount",
    }
)  # fmt: skip
_PERSON = {
    "id": "u1a2b3c4", "name": "Ada Lovelace", "username": "ada", "avatar": "",
    "primaryEmail": "ada@example.com", "primaryPhone": "15551234567", "profile": {},
}  # fmt: skip
_BRANDING = {"logoUrl": "https://example.com/logo.png", "darkLogoUrl": ""}
SAMPLE_PAYLOAD: Mapping[str, Any] = {
    "code": "123456",
    "link": "https://auth.example.com/invitation/abcdefghijklmnopqrstuvwxyz012345",
    "uiLocales": "en",
    "user": _PERSON,
    "inviter": _PERSON,
    "application": {"id": "app1", "name": "Example", "displayName": "Example App",
                    "branding": _BRANDING},
    "organization": {"id": "org1", "name": "Example Organization", "branding": _BRANDING},
}  # fmt: skip
"""What the checks render every email template with: each key Logto may send
(docs/logto-contract.md)."""
SAMPLE_SMS_PAYLOAD: Mapping[str, Any] = {
    "code": "123456",
    "link": SAMPLE_PAYLOAD["link"],
    "uiLocales": "en",
    "organization": {"name": "Example Organization"},
}
"""... and every SMS template (Logto sends SMS only ``code`` and the languages; a link and an
organization's name make the longest text)."""


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


def _masked(text: str, context: Mapping[str, Any]) -> str:
    """``text`` with every value of ``context`` of 3 characters or more (the code, a link, an
    address in the payload) replaced by ``***``: an error may quote a value it choked on."""
    found: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, Mapping):
            for each in value.values():
                collect(each)
        elif isinstance(value, list | tuple):
            for each in value:
                collect(each)
        elif isinstance(value, str | int | float) and len(str(value)) >= 3:
            found.append(str(value))

    collect(context)
    for value in sorted(found, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _failure(exc: BaseException, template: Template, context: Mapping[str, Any]) -> str:
    """What went wrong, for the log: where (the line, and the file when it is not
    ``template``'s own, e.g. a base template) and the error, without the payload's values."""
    entry = _name(template)
    where, line = entry, None
    if isinstance(exc, TemplateSyntaxError) and exc.lineno:  # an included file does not compile
        where, line = exc.filename or exc.name or entry, exc.lineno
    else:
        tb = exc.__traceback__
        while tb is not None:  # the innermost template frame (Jinja maps it to the template line)
            name = tb.tb_frame.f_code.co_filename
            if not name.endswith(".py") and not name.startswith("<"):
                where, line = name, tb.tb_lineno
            tb = tb.tb_next
    message = " ".join(str(getattr(exc, "message", None) or exc).split())
    message = _masked(message, context)
    message = message if len(message) <= 200 else message[:199] + "…"
    place = ("" if where == entry else f"{where}, ") + (f"line {line}" if line else "")
    head = f"{place}: " if place else ""
    tail = f": {message}" if message else ""
    return f"{head}{type(exc).__name__}{tail}"


def _name(template: Template | EmailSet) -> str:
    """The template's file (or where in the config it was pasted)."""
    if isinstance(template, EmailSet):
        return _name(template.text or template.html or template.subject).rpartition(".")[0]
    return template.filename or template.name or "<template>"


def _render(
    template: Template,
    context: Mapping[str, Any],
    locale: str,
    channel: str,
    memo: RenderMemo | None = None,
    frozen: str | None = None,
) -> str:
    """``template`` rendered (through ``memo`` when given, ``frozen`` its key of ``context``);
    a failure is a :class:`TemplateRenderError` naming it."""
    try:
        if isinstance(template.environment, Budgeted):  # one of Logto's
            return budgeted_render(template, context)
        if memo is not None:
            return memo.render(template, context, frozen)
        return template.render(context)
    except Exception as exc:  # TemplateError, or e.g. a division by zero inside one
        raise TemplateRenderError(
            f"the {channel} template failed to render",
            template=_name(template),
            locale=locale or "(no language)",
            detail=_failure(exc, template, context),
        ) from exc


def _header(
    template: Template | None,
    context: Mapping[str, Any],
    what: str,
    locale: str,
    memo: RenderMemo | None = None,
    frozen: str | None = None,
) -> str | None:
    if template is None:
        return None
    value = _render(template, context, locale, "email", memo, frozen).strip()
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
        # (channel, type, locale, uiLocales) -> its candidates, for one set of Logto's templates
        self._resolved: dict[tuple[Any, ...], list[Any]] = {}
        self._resolved_for: object = None
        self.memo = RenderMemo()  # the configured sources' renders, reused across requests
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
        names = (wanted,) if wanted in NO_GENERIC else (wanted, GENERIC)
        yield from self._per_language(channel, wanted, chain)
        for name in names:
            if (found := connector.get(name)) is not None:
                yield "", "connector", found
        if wanted != GENERIC and wanted not in NO_GENERIC:
            yield from self._per_language(channel, GENERIC, chain)
        for name in names:
            for tag in chain:
                if self.bundled and (hit := self.bundled.get(channel, name, tag)):
                    yield hit[0], "bundled", hit[1]
                    break

    def _resolve(self, channel: str, usage: str, payload: Mapping[str, Any]) -> list[Any]:
        """:meth:`_candidates` for this request's type and languages, worked out once per
        (channel, type, ``locale``, ``uiLocales``) while Logto's set is the same: the other
        sources do not change while the service runs. Bounded: the languages are the caller's."""
        locale, ui_locales = payload.get("locale"), payload.get("uiLocales")
        if not (isinstance(locale, str | None) and isinstance(ui_locales, str | None)):
            return list(self._candidates(channel, usage, self._chain(payload)))
        current = self.logto.current  # one read: a refresh swaps it whole
        if current is not self._resolved_for or len(self._resolved) >= _RESOLVED_MAX:
            self._resolved, self._resolved_for = {}, current
        key = (channel, usage, locale, ui_locales)
        found = self._resolved.get(key)
        if found is None:
            found = self._resolved[key] = list(
                self._candidates(channel, usage, self._chain(payload))
            )
        return found

    def _skip(self, usage: str, error: TemplateRenderError) -> None:
        """Log (once per template) that one of Logto's templates failed: the next source is
        used."""
        if (error.template, usage) not in self._render_failures:
            self._render_failures.add((error.template, usage))
            logs.event(
                log, logging.WARNING, "Logto's template failed to render; using the next source",
                template=error.template, locale=error.locale, type=usage, error=error.detail,
            )  # fmt: skip

    def _email(
        self, locale: str, t: EmailSet, ctx: dict[str, Any], source: str = "", *, reuse: bool = True
    ) -> EmailContent:
        """``reuse``: through the render memo (the start-up checks' sample renders are not, nor
        Logto's templates, which render within their budget)."""
        from_logto = isinstance(t.subject.environment, Budgeted)
        memo = self.memo if reuse and not from_logto else None
        frozen = memo.freeze(ctx) if memo is not None else None
        subject = _header(t.subject, ctx, "subject", locale, memo, frozen) or ""
        html = _render(t.html, ctx, locale, "email", memo, frozen) if t.html is not None else None
        text = (
            _render(t.text, ctx, locale, "email", memo, frozen).strip()
            if t.text is not None
            else html_to_text(html or "")
        )
        reply_to = _header(t.reply_to, ctx, "Reply-To", locale, memo, frozen)
        send_from = _header(t.send_from, ctx, "From", locale, memo, frozen)
        for what, value, template in (
            ("replyTo", reply_to, t.reply_to),
            ("sendFrom", send_from, t.send_from),
        ):
            try:
                if value:
                    parse_mailbox(value)
            except ValueError as exc:  # found now, before anything is stored
                assert template is not None
                raise TemplateRenderError(
                    f"the email template's {what} is not an address",
                    template=_name(template),
                    locale=locale or "(no language)",
                    detail=_masked(f"renders to {value!r}: {exc}", ctx),
                ) from exc
        return EmailContent(subject, text + "\n", html, locale, source, reply_to, send_from)

    def render_email(self, usage: str, payload: Mapping[str, Any]) -> EmailContent:
        """Subject, text and HTML for ``usage``; 422 when no template exists, or when the one
        chosen fails to render (one of Logto's is skipped for the next source instead)."""
        context = self._context(usage, payload)
        for locale, source, templates in self._resolve("email", usage, payload):
            try:
                return self._email(locale, templates, context, source)
            except TemplateRenderError as exc:
                if source != "logto":
                    raise
                if isinstance(exc.__cause__, OverBudget | RecursionError | MemoryError):  # costly
                    self.logto.set_aside(templates)
                self._skip(usage, exc)
            except RequestError as exc:  # a header with CR/LF: Logto's template is broken
                if source != "logto" or exc.code != "invalid_header_value":
                    raise
                self._skip(usage, TemplateRenderError(
                    "the email template renders an invalid header", template=_name(templates),
                    locale=locale, detail=exc.message,
                ))  # fmt: skip
        raise TemplateNotFoundError("email", usage)

    def render_sms(self, usage: str, payload: Mapping[str, Any]) -> SmsContent:
        """The SMS text for ``usage``; 422 when no template exists or it fails to render."""
        found = next(iter(self._resolve("sms", usage, payload)), None)
        if found is None:
            raise TemplateNotFoundError("sms", usage)
        locale, source, template = found
        context = self._context(usage, payload)
        text = _render(template, context, locale, "SMS", self.memo).strip()
        return SmsContent(text=text, locale=locale, source=source)

    def _templates(self, *, logto: bool) -> Iterator[tuple[str, str, str, EmailSet | Template]]:
        """(channel, usage, locale, template) of every template of the configured sources
        (operator directory, connector JSON, bundled), or with ``logto`` of Logto's."""
        if logto:
            for (usage, tag), email in self.logto.email.items():
                yield "email", usage, self.logto.tags[tag], email
            return
        for usage, email in self.connector.email.items():
            yield "email", usage, "", email
        for usage, sms in self.connector.sms.items():
            yield "sms", usage, "", sms
        for directory in (self.operator, self.bundled):
            if directory is not None:
                for (usage, locale), email in directory.email.items():
                    yield "email", usage, locale, email
                for (usage, locale), sms in directory.sms.items():
                    yield "sms", usage, locale, sms

    def render_problems(self, *, logto: bool = False) -> list[ConfigProblem]:
        """Render every template (each usage type, channel and language) with
        :data:`SAMPLE_PAYLOAD`: one problem per template that fails, naming its file and the
        error with its line. ``logto``: Logto's templates instead of the configured ones."""
        problems = []
        for channel, usage, locale, template in self._templates(logto=logto):
            sample = SAMPLE_PAYLOAD if channel == "email" else SAMPLE_SMS_PAYLOAD
            context = self._context(usage, {**sample, "locale": locale or "en"})
            try:
                if isinstance(template, EmailSet):
                    self._email(locale, template, context, reuse=False)
                else:
                    _render(template, context, locale, channel)
            except TemplateRenderError as exc:
                problems.append(
                    ConfigProblem(
                        exc.template,
                        f"fails to render a {usage} {channel} with a sample payload: {exc.detail}",
                        "fix the template",
                    )
                )
            except RequestError as exc:  # a control character in a header
                problems.append(ConfigProblem(_name(template), exc.message, "fix the template"))
        return problems

    def sms_samples(self) -> list[tuple[str, str]]:
        """Every SMS template rendered with a sample payload: (where it lives, text)."""
        context = self._context("Generic", SAMPLE_SMS_PAYLOAD)
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
