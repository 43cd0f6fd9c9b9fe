"""The service configuration: a YAML (or JSON) file, ``${ENV}`` expanded, validated once.

Every setting is declared once, below and in the section modules (:func:`~.fields.setting`);
every problem is collected with its field path and a fix (``otp-service check-config``); a
config with problems never starts a server.
"""

from __future__ import annotations

import ipaddress
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from ..errors import ConfigError, ConfigProblem
from ..text.locales import TAG_PATTERN
from .capture import CaptureConfig
from .fields import Declared, Fields, join, read, section, setting
from .intakes import IntakesConfig
from .logto import LogtoConfig
from .registry import (
    BY_NAME,
    DEFAULT,
    INTAKES,
    names,
    read_sections,
    require_sections,
    sections_schema,
    spoken,
)
from .sms import SmsConfig
from .smtp import PoolConfig
from .store import StoreConfig

T = TypeVar("T")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _public_url(f: Fields, d: Declared) -> str | None:
    """An absolute http(s) URL without query or fragment; kept without a trailing slash."""
    url = f.string(d.key)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        f.problem(
            d.key,
            "must be an absolute http(s) URL without query or fragment",
            "e.g. https://otp.example.com (where providers reach this service)",
        )
        return None
    return url.rstrip("/")


@section
class ServerConfig:
    host: str = setting(
        "address to bind; a non-loopback one needs auth.tokens (or allow_unauthenticated)",
        default=DEFAULT_HOST,
    )
    port: int = setting("port to listen on", default=DEFAULT_PORT, minimum=0, maximum=65535)
    allow_unauthenticated: bool = setting(
        "listen beyond loopback without auth.tokens (a proxy guards it)", default=False
    )
    max_body_bytes: int = setting("the largest request body", default=64 * 1024, minimum=1024)
    header_timeout_seconds: float = setting(
        "a client must send its request (head, then body) within this", default=5.0, minimum=0.1
    )
    keepalive_seconds: float = setting(
        "an idle keep-alive connection is closed after this", default=60.0, minimum=0.1
    )
    max_connections: int = setting(
        "open connections; beyond, the slowest unfinished one is dropped, else 503",
        default=1000, minimum=8,
    )  # fmt: skip
    drain_seconds: float = setting(
        "on SIGTERM: keep answering (503 to new sends) this long before closing", default=1.0
    )
    metrics_port: int | None = setting(
        "serve /metrics on this port too, without a token (for a scraper)",
        default=None, minimum=0, maximum=65535,
    )  # fmt: skip
    metrics_host: str | None = setting("that listener's address (default: host)", default=None)
    public_url: str | None = setting(
        "the service's public base URL, which providers call back with delivery receipts",
        default=None, read=_public_url, schema={"type": ["string", "null"], "format": "uri"},
    )  # fmt: skip
    allowed_hosts: tuple[str, ...] = setting(
        "Host names (or host:port) the service answers to besides loopback, the bound address "
        'and, when bound beyond loopback, names no web page can own; "*.example.com": its '
        'subdomains; "*": any (no DNS-rebinding guard)',
        default=(), read=lambda f, d: _allowed_hosts(f, d),
        schema={"type": "array", "items": {"type": "string", "minLength": 1}},
    )  # fmt: skip

    @property
    def metrics_bind_host(self) -> str:
        """Where ``/metrics`` listens on its own port: ``metrics_host``, else ``host``."""
        return self.metrics_host or self.host

    def receipt_url(self, provider: str) -> str | None:
        """Where ``provider`` posts its delivery receipts, when ``public_url`` is set."""
        return None if self.public_url is None else f"{self.public_url}/v1/receipts/{provider}"


# What a token may do: send (the send routes and intakes), read (messages, their status, the
# inbox and its stream, metrics), admin (deletes and counter resets).
SCOPES = ("send", "read", "admin")


@dataclass(frozen=True)
class ApiToken:
    """One of ``auth.tokens``: the secret (never shown by ``repr``) and what it may do."""

    value: str = field(repr=False)
    scopes: frozenset[str] = frozenset(SCOPES)

    @property
    def unrestricted(self) -> bool:
        return self.scopes >= set(SCOPES)


_GENERATE = "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _scopes(f: Fields, raw: Any) -> frozenset[str] | None:
    if not isinstance(raw, list) or not raw or not all(s in SCOPES for s in raw):
        f.problem("scopes", f"must be a non-empty list of {', '.join(SCOPES)}",
                  "e.g. scopes: [send] for Logto, [send, read] for a test suite")  # fmt: skip
        return None
    return frozenset(raw)


_HOST_ENTRY = re.compile(
    r"^(\*|(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
    r"|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$"
)


def _allowed_hosts(f: Fields, d: Declared) -> tuple[str, ...]:
    hosts: list[str] = []
    for path, entry in f.items(d.key) or []:
        value = entry.strip().lower().rstrip(".") if isinstance(entry, str) else ""
        if not _HOST_ENTRY.match(value) or (value.startswith("*") and ":" in value):
            f.problems.append(
                ConfigProblem(
                    path,
                    "must be a host name or address, optionally with :port; *.domain for its "
                    "subdomains; * for any",
                    'e.g. otp.example.com, otp.example.com:8443, "*.example.com", [2001:db8::1]',
                )
            )
            continue
        hosts.append(value)
    return tuple(hosts)


def _tokens(f: Fields, d: Declared) -> tuple[ApiToken, ...]:
    tokens: list[ApiToken] = []
    seen: set[str] = set()
    for path, entry in f.items(d.key) or []:
        scopes: frozenset[str] | None = frozenset(SCOPES)  # a bare string: every scope
        value = entry
        if isinstance(entry, Mapping):
            g = Fields(entry, path, f.problems, f.base)
            g.reject_unknown(("token", "scopes"))
            value = entry.get("token")
            scopes = _scopes(g, entry.get("scopes"))
            path = join(path, "token")
        if not isinstance(value, str) or len(value) < 16 or value != value.strip():
            f.problems.append(
                ConfigProblem(
                    path,
                    "must be a string of at least 16 characters without surrounding spaces",
                    _GENERATE,
                )
            )
            continue
        if value in seen:
            f.problems.append(ConfigProblem(path, "repeats an earlier token", "list each once"))
            continue
        seen.add(value)
        if scopes is not None:
            tokens.append(ApiToken(value, scopes))
    return tuple(tokens)


# At least 16 characters once ${VARIABLES} are expanded (an editor sees them unexpanded).
_TOKEN = {"anyOf": [{"type": "string", "minLength": 16},
                   {"type": "string", "pattern": r"\$\{[A-Za-z_]"}]}  # fmt: skip


@section
class AuthConfig:
    tokens: tuple[ApiToken, ...] = setting(
        "bearer tokens (>= 16 characters; several: rotation): a string may do everything; "
        "{token, scopes: [send, read, admin]} only what its scopes say (Logto: [send])",
        default=(), secret=True, read=_tokens,
        schema={"type": "array", "items": {"anyOf": [_TOKEN, {
            "type": "object", "additionalProperties": False, "required": ["token", "scopes"],
            "properties": {"token": _TOKEN, "scopes": {
                "type": "array", "minItems": 1, "uniqueItems": True,
                "items": {"enum": list(SCOPES)}}}}]}},
    )  # fmt: skip


@section
class EmailConfig:
    provider: str = setting("the email provider", default=DEFAULT, choices=names("email"))
    sections: tuple[tuple[str, Any], ...] = setting(
        "each email provider's settings: Logto's connector JSON for it, pasted as is",
        default=(), read=lambda f, d: read_sections(f, "email"), spread=sections_schema("email"),
    )  # fmt: skip
    pool: PoolConfig = setting("connections kept per SMTP server", default=PoolConfig())

    def checked(self, f: Fields) -> EmailConfig:
        require_sections(f, "email", {self.provider})
        return self

    def section(self, model: type[T]) -> T | None:
        """The provider settings of type ``model`` (a connector JSON), when configured."""
        return next((s for _, s in self.sections if isinstance(s, model)), None)

    if not typing.TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            """``config.email.<provider>``: that provider's settings (for tests and the REPL)."""
            if name in names("email"):
                return dict(self.sections).get(name)
            raise AttributeError(name)


def _language(f: Fields, d: Declared) -> str:
    value = f.string(d.key, default=d.value)
    if value is None or not re.match(TAG_PATTERN, value):
        f.problem(d.key, "must be a language tag", "use e.g. en, fr-CA or zh-CN")
        return str(d.value)
    return value


def _directory(f: Fields, d: Declared) -> Path | None:
    raw = f.string(d.key)
    if raw is None:
        return None
    directory = (f.base / raw).resolve()
    if not directory.is_dir():
        f.problem(d.key, f"{directory} is not a directory", "point it at your templates")
        return None
    return directory


@section
class TemplatesConfig:
    directory: Path | None = setting(
        "your template files (email/<locale>/<Type>.*, sms/<locale>/<Type>.txt), relative "
        "to the config file",
        default=None, read=_directory, schema={"type": ["string", "null"]},
    )  # fmt: skip
    default_locale: str = setting(
        "the language when the request names none (a language tag: en, fr-CA, zh-CN)",
        default="en", read=_language, schema={"type": "string", "pattern": TAG_PATTERN},
    )  # fmt: skip
    bundled: bool = setting(
        "use the bundled defaults (false: a missing Generic is a 422)", default=True
    )
    brand: str = setting("shown when Logto sends no application name", default="")
    code_ttl_minutes: int = setting(
        'the "expires in" figure in the default texts', default=10, minimum=1, maximum=1440
    )
    logto: LogtoConfig | None = setting(
        "read the per-language email templates kept in Logto", default=None
    )


@section
class DeliveryConfig:
    retry_delay_seconds: float = setting(
        "the first backoff; it doubles per attempt", default=0.25, minimum=0.01
    )
    backoff_max_seconds: float = setting("the longest backoff", default=60.0)
    timeout_seconds: float = setting("one attempt at one provider", default=30.0, minimum=0.1)
    wait_seconds: float = setting(
        "how long a request waits for the outcome before 202", default=3.0
    )
    ttl_seconds: float = setting(
        "Logto's code lifetime: never deliver later than this", default=600.0, minimum=1
    )
    lease_seconds: float = setting(
        "a claimed message is retaken after this", default=120.0, minimum=1
    )
    poll_seconds: float = setting(
        "how often the outbox looks for due work", default=0.5, minimum=0.01
    )
    concurrency: int = setting("deliveries in flight at once", default=64, minimum=1, maximum=4096)
    shutdown_grace_seconds: float = setting(
        "on shutdown: how long in-flight attempts may finish", default=10.0
    )
    dedupe: bool | None = setting(
        "the same content again is answered as a duplicate (default: on, unless everything "
        "is captured)",
        default=None,
    )


@section
class Limit:
    count: int = setting(
        "requests allowed per window", default=10, minimum=1, shown="the limit's own"
    )
    window_seconds: float = setting("the window", default=600.0, minimum=1, shown="the limit's own")


def _limit(f: Fields, d: Declared) -> Limit | None:
    if d.key in f.data and f.data[d.key] in (None, False):
        return None  # switched off
    g = f.obj(d.key)
    default = typing.cast(Limit | None, d.default)
    return default if g is None else read(Limit, g, default)


_LIMIT = {"anyOf": [Limit, {"enum": [False, None]}]}


def _rates(f: Fields, d: Declared) -> tuple[tuple[str, float], ...]:
    rates: list[tuple[str, float]] = []
    if (r := f.obj(d.key)) is not None:
        for name in r.data:
            if name not in BY_NAME:
                r.problem(str(name), "is not a provider", f"use {spoken(names())}")
                continue
            rates.append((str(name), r.number(str(name), default=10.0, minimum=0.1)))
    return tuple(rates)


@section
class LimitsConfig:
    enabled: bool | None = setting(
        "abuse limits (default: on, unless everything is captured)", default=None
    )
    per_recipient: Limit | None = setting(
        "sends per recipient (false: off)", default=Limit(10, 600), read=_limit, schema=_LIMIT
    )
    per_ip: Limit | None = setting(
        "sends per client address (false: off)", default=Limit(60, 600), read=_limit, schema=_LIMIT
    )
    per_sms_prefix: Limit | None = setting(
        "SMS per number prefix (false: off)", default=Limit(300, 3600), read=_limit, schema=_LIMIT
    )
    sms_prefix_digits: int = setting(
        'digits of the prefix ("+86138...": country code and first digits)',
        default=6, minimum=1, maximum=15,
    )  # fmt: skip
    provider_rate: tuple[tuple[str, float], ...] = setting(
        "sends per second, per provider, for the whole service (every worker and replica)",
        default=(), read=_rates,
        schema={"type": "object", "additionalProperties": False, "properties": {
            name: {"type": "number", "minimum": 0.1} for name in names()}},
    )  # fmt: skip
    max_keys: int = setting(
        "counters kept per window length (memory bound, ~120 B each)", default=500_000, minimum=1000
    )


@section
class Config:
    server: ServerConfig = setting("the HTTP listener", default=ServerConfig())
    auth: AuthConfig = setting("who may call the API", default=AuthConfig())
    email: EmailConfig = setting("email delivery", default=EmailConfig())
    sms: SmsConfig = setting("SMS delivery", factory=SmsConfig)
    templates: TemplatesConfig = setting("message templates", default=TemplatesConfig())
    delivery: DeliveryConfig = setting("retries, deadlines, dedupe", default=DeliveryConfig())
    capture: CaptureConfig = setting("the capture inbox and the SMTP intake", factory=CaptureConfig)
    store: StoreConfig = setting("the outbox: SQLite or PostgreSQL", factory=StoreConfig)
    limits: LimitsConfig = setting("abuse limits and provider rates", default=LimitsConfig())
    intakes: IntakesConfig = setting(
        f"hooks other identity systems call ({', '.join(i.title for i in INTAKES[:2])}, ...)",
        default=IntakesConfig(),
    )

    @property
    def inbox_api_on(self) -> bool:
        """The capture inbox's routes exist (listing, latest, events, deletes, the page): some
        channel is captured, the SMTP intake is on, or ``capture.api`` asks for them."""
        return bool(self.captured_channels()) or self.capture.smtp is not None or self.capture.api

    def captured_channels(self) -> list[str]:
        """The channels some of whose messages go to the capture inbox."""
        chosen = (("email", {self.email.provider}), ("sms", self.sms.provider_names))
        return [ch for ch, used in chosen if any(BY_NAME[n].captures for n in used if n in BY_NAME)]

    @property
    def captures_everything(self) -> bool:
        """Every channel goes to the capture inbox: a laptop or an end-to-end test run."""
        used = {self.email.provider, *self.sms.provider_names}
        return all(BY_NAME[name].captures for name in used if name in BY_NAME)

    @property
    def limits_on(self) -> bool:
        """Abuse limits apply: as configured, else unless everything is captured."""
        enabled = self.limits.enabled
        return not self.captures_everything if enabled is None else enabled

    @property
    def dedupe_on(self) -> bool:
        """Repeated content is answered as a duplicate: as configured, else unless everything
        is captured (an Idempotency-Key works either way)."""
        dedupe = self.delivery.dedupe
        return not self.captures_everything if dedupe is None else dedupe


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def expand_env(value: Any, path: str, problems: list[ConfigProblem]) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string of a parsed document."""
    if isinstance(value, dict):
        return {
            k: expand_env(v, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        problem = ConfigProblem(
            path, f"refers to ${{{name}}}, which is not set", f"export {name}=..."
        )
        if problem not in problems:  # "${A}:${A}" is one problem
            problems.append(problem)
        return ""

    return _ENV.sub(substitute, value)


def parse_config(data: Any, base: Path | None = None) -> Config:
    """Validate a parsed document into a :class:`Config`; raises :class:`ConfigError`."""
    problems: list[ConfigProblem] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("<root>", "must be a mapping", "start with e.g. email:")])
    data = expand_env(data, "", problems)
    unset = {problem.path for problem in problems}  # each reported once: not as empty again
    found: list[ConfigProblem] = []
    config = read(Config, Fields(data, "", found, base))
    problems += [problem for problem in found if problem.path not in unset]
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path | None) -> Config:
    """Read, expand and validate a config file; the embedded defaults when ``path`` is None."""
    if path is None:
        return Config()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(file), exc.strerror or str(exc), "check the path")]
        ) from exc
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON: a JSON file loads as is
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(
            [ConfigProblem(str(file), f"is not valid YAML or JSON{at}", "fix the syntax")]
        ) from exc
    return parse_config(data, file.parent)
