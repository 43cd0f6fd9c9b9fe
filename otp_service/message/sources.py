"""The template sources the library chooses from, each compiled in the same Jinja2 sandbox.

- :class:`Directory`: a tree on disk (the operator's ``templates.directory``, or the bundled one);
- :class:`Connector`: the templates pasted in a Logto connector JSON;
- :class:`LogtoSource`: the per-language templates read from Logto's Management API, replaced on
  every refresh but keeping the last good version of a template that stops compiling.

Logto's templates are written by whoever administers Logto, and arrive while we run, so they are
bounded (docs/hostile-input.md): a row larger than :data:`MAX_TEMPLATE_BYTES` is not compiled,
and one render may take :data:`MAX_RENDER_STEPS` steps (loop iterations and calls), at most
:data:`MAX_RENDER_SECONDS` and :data:`MAX_RENDER_CHARS` of output (:class:`Budgeted`). Past
any, the render fails, the template is skipped for the next source and set aside until Logto
changes it. They are compiled off the event loop (the sync hands :meth:`LogtoSource.update` to
a thread), and swapped in with one assignment.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
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
from jinja2.exceptions import SecurityError
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


def environment(
    loader: BaseLoader | None,
    *,
    html: bool,
    kind: Callable[..., SandboxedEnvironment] | None = None,
) -> SandboxedEnvironment:
    """The sandbox every template renders in: HTML-escaping for HTML, Logto's placeholders;
    ``kind``: :class:`Budgeted` for templates from outside (Logto's)."""
    return (kind or SandboxedEnvironment)(
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


MAX_TEMPLATE_BYTES = 64 * 1024  # one Logto row: subject, content, replyTo and sendFrom
MAX_RENDER_STEPS = 100_000  # loop iterations and calls in one render
MAX_RENDER_SECONDS = 0.25
MAX_RENDER_CHARS = 1024 * 1024  # what one render may produce


class OverBudget(SecurityError):
    """A render went past its budget: steps, time or output."""


@dataclass
class _Budget:
    steps: int
    deadline: float


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("budget", default=None)
_FOR = re.compile(r"^(\s*)for (.+?) in (.*):$", re.MULTILINE)


class Budgeted(SandboxedEnvironment):
    """The sandbox with a render budget: every loop iteration and every call is one step, and
    every 256 steps the clock is read. Jinja's own sandbox bounds ``range`` but not nested
    loops, so the compiled code's ``for`` loops are wrapped (on their own line: the line
    numbers that error messages show stay right). ``*`` and ``**`` are bounded too."""

    intercepted_binops = frozenset(["*", "**"])

    def _compile(self, source: str, filename: str) -> CodeType:
        return super()._compile(_FOR.sub(r"\1for \2 in environment.steps(\3):", source), filename)

    def steps(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.step()
            yield item

    def step(self) -> None:
        budget = _BUDGET.get()
        if budget is None:
            return
        budget.steps -= 1
        if budget.steps < 0:
            raise OverBudget(f"the template took over {MAX_RENDER_STEPS} steps")
        if budget.steps % 256 == 0 and time.monotonic() > budget.deadline:
            raise OverBudget(f"the template took over {MAX_RENDER_SECONDS:g} s to render")

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        self.step()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and right > 64:
            raise OverBudget("an exponent over 64")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_RENDER_CHARS:
                    raise OverBudget(f"a product over {MAX_RENDER_CHARS} items")
        return super().call_binop(context, operator, left, right)


def budgeted_render(template: Template, context: Any) -> str:
    """``template`` rendered within the budget (a :class:`Budgeted` environment's template)."""
    token = _BUDGET.set(_Budget(MAX_RENDER_STEPS, time.monotonic() + MAX_RENDER_SECONDS))
    try:
        out: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_RENDER_CHARS:
                raise OverBudget(f"the template rendered over {MAX_RENDER_CHARS} characters")
            out.append(chunk)
        return "".join(out)
    finally:
        _BUDGET.reset(token)


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


@dataclass(frozen=True)
class _LogtoSet:
    """What renders see of Logto's templates, swapped whole."""

    email: dict[tuple[str, str], EmailSet]  # (type, lower-cased tag)
    tags: dict[str, str]  # lower-cased tag -> Logto's spelling


def _row_bytes(row: LogtoTemplate) -> int:
    parts = (row.subject, row.content, row.reply_to or "", row.send_from or "")
    return sum(len(p.encode("utf-8", "surrogatepass")) for p in parts)


class LogtoSource:
    """Logto's per-language email templates, compiled; swapped whole on each refresh."""

    def __init__(self) -> None:
        self.text_env = environment(None, html=False, kind=Budgeted)
        self.html_env = environment(None, html=True, kind=Budgeted)
        self.current = _LogtoSet({}, {})
        self._rows: dict[tuple[str, str], LogtoTemplate] = {}  # the rows behind current.email
        self._set_aside: dict[tuple[str, str], LogtoTemplate] = {}  # went over the budget

    @property
    def email(self) -> dict[tuple[str, str], EmailSet]:
        return self.current.email

    @property
    def tags(self) -> dict[str, str]:
        return self.current.tags

    def update(self, rows: Sequence[LogtoTemplate]) -> list[str]:
        """Compile ``rows`` in place of the current set; returns one line per broken row.

        A row that does not compile, or is too large, keeps its last good version (if any);
        a row gone from Logto is gone here too. Runs in a thread: one swap at the end.
        """
        current = self.current
        email: dict[tuple[str, str], EmailSet] = {}
        kept: dict[tuple[str, str], LogtoTemplate] = {}
        tags: dict[str, str] = {}
        problems: list[str] = []
        seen = {(row.template_type, row.language_tag.lower()) for row in rows}
        for row in rows:
            key = (row.template_type, row.language_tag.lower())
            name = f"{row.language_tag}/{row.template_type}"
            if self._set_aside.get(key) == row:
                problems.append(f"{name} (went over its render budget)")
                continue
            if self._rows.get(key) == row and key in current.email:
                email[key], kept[key] = current.email[key], row  # unchanged: no recompiling
            elif (size := _row_bytes(row)) > MAX_TEMPLATE_BYTES:
                problems.append(f"{name} ({size} bytes, over {MAX_TEMPLATE_BYTES // 1024} KiB)")
                if key in current.email:
                    email[key], kept[key] = current.email[key], self._rows[key]
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
                        where=f"Logto's {name}",
                    )
                    kept[key] = row
                except (TemplateError, RecursionError, MemoryError) as exc:
                    detail = _one_line(exc) if isinstance(exc, TemplateError) else "too complex"
                    problems.append(f"{name} ({detail})")
                    if key in current.email:
                        email[key], kept[key] = current.email[key], self._rows[key]
            if key in email:
                tags[key[1]] = row.language_tag
        self._rows = kept
        self._set_aside = {k: v for k, v in self._set_aside.items() if k in seen}
        self.current = _LogtoSet(email, tags)  # one swap: renders see either set
        return problems

    def set_aside(self, template: EmailSet) -> None:
        """Stop using ``template`` (it went over its render budget) until Logto changes it."""
        current = self.current
        key = next((k for k, v in current.email.items() if v is template), None)
        if key is None:
            return
        self._set_aside[key] = self._rows[key]
        email = {k: v for k, v in current.email.items() if k != key}
        tags = {t: spelled for t, spelled in current.tags.items()
                if any(k[1] == t for k in email)}  # fmt: skip
        self.current = _LogtoSet(email, tags)

    def get(self, usage: str, tag: str) -> tuple[str, EmailSet] | None:
        current = self.current  # one read: a swap in between cannot mix two sets
        found = current.email.get((usage, tag))
        return None if found is None else (current.tags[tag], found)
