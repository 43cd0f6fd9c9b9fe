"""The template sources the library chooses from, each compiled in the same Jinja2 sandbox.

- :class:`Directory`: a tree on disk (the operator's ``templates.directory``, or the bundled one);
- :class:`Connector`: the templates pasted in a Logto connector JSON;
- :class:`LogtoSource`: the per-language templates read from Logto's Management API, replaced on
  every refresh but keeping the last good version of a template that stops compiling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    BytecodeCache,
    ChainableUndefined,
    FileSystemLoader,
    Template,
    TemplateError,
)
from jinja2.bccache import Bucket
from jinja2.sandbox import SandboxedEnvironment

from ..config.smtp import EmailTemplate
from ..errors import ConfigProblem
from ..logto.client import LogtoTemplate
from .placeholders import LogtoPlaceholders


@dataclass(frozen=True)
class EmailSet:
    """The compiled parts of one email template."""

    subject: Template
    text: Template | None
    html: Template | None
    reply_to: Template | None = None
    send_from: Template | None = None


class _CompiledCode(BytecodeCache):
    """The compiled code of template files, kept for the life of the process.

    Building the library again (each service a test starts, a CLI command after another)
    reuses the code of files whose content is unchanged instead of compiling the bundled tree
    anew; a file with other content has another checksum and is compiled again.
    """

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if (code := self._code.get(bucket.key)) is not None:
            bucket.bytecode_from_string(code)  # ignored unless its checksum is the file's

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


# One per sandbox: the HTML one escapes and the text one does not, so their code differs.
_COMPILED = {True: _CompiledCode(), False: _CompiledCode()}


def environment(loader: BaseLoader | None, *, html: bool) -> SandboxedEnvironment:
    """The sandbox every template renders in: HTML-escaping for HTML, Logto's placeholders."""
    return SandboxedEnvironment(
        loader=loader,
        autoescape=html,
        undefined=ChainableUndefined,
        extensions=[LogtoPlaceholders],
        keep_trailing_newline=False,
        auto_reload=False,  # compiled once at start-up; a file edited later is not re-read
        bytecode_cache=_COMPILED[html],
    )


def flat_globals(template: Template) -> Template:
    """``template`` with its globals in one dict instead of Jinja's ChainMap (template over
    environment globals): each render copies them, and copying a ChainMap costs about 15% of
    composing an email. Nothing adds globals after start-up, so one dict sees them all."""
    template.globals = dict(template.globals)
    return template


def from_string(env: SandboxedEnvironment, source: str, where: str) -> Template:
    """``source`` compiled under the name ``where`` (e.g. ``email.smtp.templates[0].subject``):
    a render error's traceback then names it, as it names a template file by its path."""
    return flat_globals(
        env.template_class.from_code(
            env, env.compile(source, filename=where), env.make_globals(None), None
        )
    )


def _one_line(exc: TemplateError) -> str:
    text = " ".join(str(exc).split())
    line = getattr(exc, "lineno", None)
    return (f"line {line}: " if line else "") + (text[:120] or type(exc).__name__)


class Directory:
    """A template tree on disk, compiled once."""

    def __init__(self, root: Path, name: str, search: Sequence[Path]) -> None:
        self.name = name
        loader = FileSystemLoader([str(p) for p in search])
        self.text_env = environment(loader, html=False)
        self.html_env = environment(loader, html=True)
        self.email: dict[tuple[str, str], EmailSet] = {}
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
            return flat_globals((self.html_env if html else self.text_env).get_template(path))
        except TemplateError as exc:
            self.problems.append(
                ConfigProblem(f"{self.name}/{path}", _one_line(exc), "fix the template")
            )
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
                self.email[(file.stem, locale)] = EmailSet(subject, text, body)

    def get(self, channel: str, usage: str, tag: str) -> tuple[str, Any] | None:
        """(locale, compiled template) for ``usage`` in the lower-cased language ``tag``."""
        locale = self.locales[channel].get(tag)
        if locale is None:
            return None
        found = (self.email if channel == "email" else self.sms).get((usage, locale))
        return None if found is None else (locale, found)


def _email_set(
    text_env: SandboxedEnvironment,
    html_env: SandboxedEnvironment,
    *,
    subject: str,
    content: str,
    html: bool,
    reply_to: str | None,
    send_from: str | None,
    where: str,
) -> EmailSet:
    body = from_string(html_env if html else text_env, content, f"{where}.content")
    return EmailSet(
        subject=from_string(text_env, subject, f"{where}.subject"),
        text=None if html else body,
        html=body if html else None,
        reply_to=from_string(text_env, reply_to, f"{where}.replyTo") if reply_to else None,
        send_from=from_string(text_env, send_from, f"{where}.sendFrom") if send_from else None,
    )


class Connector:
    """Templates pasted in a Logto connector JSON, keyed by usage type."""

    def __init__(
        self,
        templates: Sequence[EmailTemplate],
        sms: Sequence[tuple[str, str]] = (),
        email_at: str = "connector email templates",
        sms_at: str = "connector SMS templates",
    ) -> None:
        """``email_at`` and ``sms_at``: where the templates are in the config file."""
        self.sms_at = sms_at
        text_env, html_env = environment(None, html=False), environment(None, html=True)
        self.email: dict[str, EmailSet] = {}
        self.sms: dict[str, Template] = {}
        self.problems: list[ConfigProblem] = []
        for index, (usage, content) in enumerate(sms):
            try:
                where = f"{sms_at}[{index}]"
                self.sms.setdefault(usage, from_string(text_env, content, f"{where}.content"))
            except TemplateError as exc:
                self.problems.append(ConfigProblem(where, _one_line(exc), "fix the template"))
        for index, t in enumerate(templates):
            try:
                compiled = _email_set(
                    text_env,
                    html_env,
                    subject=t.subject,
                    content=t.content,
                    html=t.content_type == "text/html",
                    reply_to=t.reply_to,
                    send_from=t.send_from,
                    where=f"{email_at}[{index}]",
                )
                self.email.setdefault(t.usage_type, compiled)
            except TemplateError as exc:
                where = f"{email_at}[{index}]"
                self.problems.append(ConfigProblem(where, _one_line(exc), "fix the template"))


class LogtoSource:
    """Logto's per-language email templates, compiled; swapped whole on each refresh."""

    def __init__(self) -> None:
        self.text_env, self.html_env = environment(None, html=False), environment(None, html=True)
        self.email: dict[tuple[str, str], EmailSet] = {}  # (type, lower-cased tag)
        self.tags: dict[str, str] = {}  # lower-cased tag -> Logto's spelling
        self._rows: dict[tuple[str, str], LogtoTemplate] = {}  # the rows behind self.email

    def update(self, rows: Sequence[LogtoTemplate]) -> list[str]:
        """Compile ``rows`` in place of the current set; returns one line per broken row.

        A row that does not compile keeps its last good version (if any); a row gone from
        Logto is gone here too.
        """
        email: dict[tuple[str, str], EmailSet] = {}
        kept: dict[tuple[str, str], LogtoTemplate] = {}
        tags: dict[str, str] = {}
        problems: list[str] = []
        for row in rows:
            key = (row.template_type, row.language_tag.lower())
            if self._rows.get(key) == row and key in self.email:
                email[key], kept[key] = self.email[key], row  # unchanged: no recompiling
            else:
                try:
                    email[key] = _email_set(
                        self.text_env,
                        self.html_env,
                        subject=row.subject,
                        content=row.content,
                        html=row.content_type != "text/plain",
                        reply_to=row.reply_to,
                        send_from=row.send_from,
                        where=f"Logto's {row.language_tag}/{row.template_type}",
                    )
                    kept[key] = row
                except TemplateError as exc:
                    problems.append(f"{row.language_tag}/{row.template_type} ({_one_line(exc)})")
                    if key in self.email:
                        email[key], kept[key] = self.email[key], self._rows[key]
            if key in email:
                tags[key[1]] = row.language_tag
        self.email, self._rows, self.tags = email, kept, tags  # one swap: renders see either set
        return problems

    def get(self, usage: str, tag: str) -> tuple[str, EmailSet] | None:
        found = self.email.get((usage, tag))
        return None if found is None else (self.tags[tag], found)
