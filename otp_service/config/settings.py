"""The service configuration: a YAML (or JSON) file, ``${ENV}`` expanded, validated once.

Every problem is collected with its field path and a fix (``otp-service check-config``); a
config with problems never starts a server.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, ConfigProblem
from .capture import CaptureConfig, parse_capture
from .fields import Fields
from .logto import LogtoConfig, parse_logto
from .sms import SmsConfig, parse_sms
from .smtp import SmtpConfig, parse_smtp_config
from .store import StoreConfig, parse_store

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
EMAIL_PROVIDERS = ("capture", "smtp")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allow_unauthenticated: bool = False
    max_body_bytes: int = 64 * 1024
    header_timeout_seconds: float = 5.0  # a client must send its request (headers, body) by then
    keepalive_seconds: float = 60.0  # an idle keep-alive connection is closed after this
    max_connections: int = 1000  # beyond: the slowest unfinished one is dropped, else 503
    drain_seconds: float = 1.0  # on SIGTERM: keep answering (503 to new sends) before closing
    metrics_port: int | None = None  # /metrics on a listener of its own, without a token
    metrics_host: str | None = None  # that listener's address (default: host)


@dataclass(frozen=True)
class AuthConfig:
    tokens: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class PoolConfig:
    """SMTP connection reuse: at most ``size`` connections per target, idle ones recycled."""

    size: int = 4
    max_idle_seconds: float = 30.0


@dataclass(frozen=True)
class EmailConfig:
    provider: str = "capture"
    smtp: SmtpConfig | None = None
    pool: PoolConfig = PoolConfig()


@dataclass(frozen=True)
class TemplatesConfig:
    directory: Path | None = None
    default_locale: str = "en"
    bundled: bool = True
    brand: str = ""
    code_ttl_minutes: int = 10
    logto: LogtoConfig | None = None  # per-language email templates read from Logto


@dataclass(frozen=True)
class DeliveryConfig:
    retry_delay_seconds: float = 0.25  # the first backoff; it doubles per attempt
    backoff_max_seconds: float = 60.0
    timeout_seconds: float = 30.0  # one attempt at one provider
    wait_seconds: float = 3.0  # how long a request waits for the outcome before 202
    ttl_seconds: float = 600.0  # Logto's code lifetime: never deliver later than this
    lease_seconds: float = 120.0
    poll_seconds: float = 0.5
    concurrency: int = 64  # deliveries in flight at once
    shutdown_grace_seconds: float = 10.0
    dedupe: bool | None = None  # None: on, unless every channel is captured (Config.dedupe_on)


@dataclass(frozen=True)
class Limit:
    count: int
    window_seconds: float


@dataclass(frozen=True)
class LimitsConfig:
    enabled: bool | None = None  # None: on, unless every channel is captured (Config.limits_on)
    per_recipient: Limit | None = Limit(10, 600)
    per_ip: Limit | None = Limit(60, 600)
    per_sms_prefix: Limit | None = Limit(300, 3600)
    sms_prefix_digits: int = 6  # "+86138...": the country code and the first digits
    provider_rate: tuple[tuple[str, float], ...] = ()  # sends per second, per provider
    max_keys: int = 500_000  # counters kept per window length (memory bound, ~120 B each)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    email: EmailConfig = EmailConfig()
    sms: SmsConfig = field(default_factory=SmsConfig)
    templates: TemplatesConfig = TemplatesConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    limits: LimitsConfig = LimitsConfig()

    @property
    def captures_everything(self) -> bool:
        """Every channel goes to the capture inbox: a laptop or an end-to-end test run."""
        return self.email.provider == "capture" and self.sms.provider_names == {"capture"}

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
        problems.append(
            ConfigProblem(path, f"refers to ${{{name}}}, which is not set", f"export {name}=...")
        )
        return ""

    return _ENV.sub(substitute, value)


def _server(root: Fields) -> ServerConfig:
    f = root.obj("server")
    if f is None:
        return ServerConfig()
    d = ServerConfig()
    f.reject_unknown(d.__dataclass_fields__)
    metrics_port = None
    if f.has("metrics_port"):
        metrics_port = f.integer("metrics_port", default=0, minimum=0, maximum=65535)
    return ServerConfig(
        host=f.string("host", default=DEFAULT_HOST) or DEFAULT_HOST,
        port=f.integer("port", default=DEFAULT_PORT, minimum=0, maximum=65535),
        allow_unauthenticated=f.boolean("allow_unauthenticated", default=False),
        max_body_bytes=f.integer("max_body_bytes", default=64 * 1024, minimum=1024),
        header_timeout_seconds=f.number(
            "header_timeout_seconds", default=d.header_timeout_seconds, minimum=0.1
        ),
        keepalive_seconds=f.number("keepalive_seconds", default=d.keepalive_seconds, minimum=0.1),
        max_connections=f.integer("max_connections", default=d.max_connections, minimum=8),
        drain_seconds=f.number("drain_seconds", default=d.drain_seconds, minimum=0),
        metrics_port=metrics_port,
        metrics_host=f.string("metrics_host"),
    )


def _auth(root: Fields) -> AuthConfig:
    f = root.obj("auth")
    if f is None:
        return AuthConfig()
    f.reject_unknown(("tokens",))
    tokens: list[str] = []
    for path, token in f.items("tokens") or []:
        if not isinstance(token, str) or len(token) < 16 or token != token.strip():
            root.problems.append(
                ConfigProblem(
                    path,
                    "must be a string of at least 16 characters without surrounding spaces",
                    "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                )
            )
            continue
        tokens.append(token)
    return AuthConfig(tuple(tokens))


def _email(root: Fields) -> EmailConfig:
    f = root.obj("email")
    if f is None:
        return EmailConfig()
    f.reject_unknown(("provider", "smtp", "pool"))
    provider = f.string("provider", default="capture", choices=EMAIL_PROVIDERS) or "capture"
    smtp_fields = f.obj("smtp", required=provider == "smtp")
    smtp = parse_smtp_config(smtp_fields) if smtp_fields is not None else None
    pool = PoolConfig()
    if (pf := f.obj("pool")) is not None:
        pf.reject_unknown(("size", "max_idle_seconds"))
        pool = PoolConfig(
            size=pf.integer("size", default=4, minimum=1, maximum=64),
            max_idle_seconds=pf.number("max_idle_seconds", default=30.0),
        )
    return EmailConfig(provider=provider, smtp=smtp, pool=pool)


def _sms(root: Fields) -> SmsConfig:
    f = root.obj("sms")
    return SmsConfig() if f is None else parse_sms(f)


def _templates(root: Fields, base: Path) -> TemplatesConfig:
    f = root.obj("templates")
    if f is None:
        return TemplatesConfig()
    f.reject_unknown(
        ("directory", "default_locale", "bundled", "brand", "code_ttl_minutes", "logto")
    )
    directory = None
    if (raw := f.string("directory")) is not None:
        directory = (base / raw).resolve()
        if not directory.is_dir():
            f.problem("directory", f"{directory} is not a directory", "point it at your templates")
            directory = None
    return TemplatesConfig(
        directory=directory,
        default_locale=f.string("default_locale", default="en") or "en",
        bundled=f.boolean("bundled", default=True),
        brand=f.string("brand", default="") or "",
        code_ttl_minutes=f.integer("code_ttl_minutes", default=10, minimum=1, maximum=1440),
        logto=parse_logto(logto) if (logto := f.obj("logto")) is not None else None,
    )


def _delivery(root: Fields) -> DeliveryConfig:
    f = root.obj("delivery")
    if f is None:
        return DeliveryConfig()
    d = DeliveryConfig()
    f.reject_unknown(d.__dataclass_fields__)
    return DeliveryConfig(
        retry_delay_seconds=f.number(
            "retry_delay_seconds", default=d.retry_delay_seconds, minimum=0.01
        ),
        backoff_max_seconds=f.number("backoff_max_seconds", default=d.backoff_max_seconds),
        timeout_seconds=f.number("timeout_seconds", default=d.timeout_seconds, minimum=0.1),
        wait_seconds=f.number("wait_seconds", default=d.wait_seconds),
        ttl_seconds=f.number("ttl_seconds", default=d.ttl_seconds, minimum=1),
        lease_seconds=f.number("lease_seconds", default=d.lease_seconds, minimum=1),
        poll_seconds=f.number("poll_seconds", default=d.poll_seconds, minimum=0.01),
        concurrency=f.integer("concurrency", default=d.concurrency, minimum=1, maximum=4096),
        shutdown_grace_seconds=f.number("shutdown_grace_seconds", default=d.shutdown_grace_seconds),
        dedupe=f.optional_boolean("dedupe"),
    )


def _limit(f: Fields, key: str, default: Limit | None) -> Limit | None:
    if key in f.data and f.data[key] in (None, False):
        return None  # switched off
    g = f.obj(key)
    if g is None:
        return default
    g.reject_unknown(("count", "window_seconds"))
    fallback = default or Limit(10, 600)
    return Limit(
        count=g.integer("count", default=fallback.count, minimum=1),
        window_seconds=g.number("window_seconds", default=fallback.window_seconds, minimum=1),
    )


def _limits(root: Fields) -> LimitsConfig:
    f = root.obj("limits")
    if f is None:
        return LimitsConfig()
    d = LimitsConfig()
    f.reject_unknown(d.__dataclass_fields__)
    rates: list[tuple[str, float]] = []
    if (r := f.obj("provider_rate")) is not None:
        for name in r.data:
            if name not in ("capture", "smtp", "vonage", "aliyun"):
                r.problem(str(name), "is not a provider", "use smtp, vonage, aliyun or capture")
                continue
            rates.append((str(name), r.number(str(name), default=10.0, minimum=0.1)))
    return LimitsConfig(
        enabled=f.optional_boolean("enabled"),
        per_recipient=_limit(f, "per_recipient", d.per_recipient),
        per_ip=_limit(f, "per_ip", d.per_ip),
        per_sms_prefix=_limit(f, "per_sms_prefix", d.per_sms_prefix),
        sms_prefix_digits=f.integer("sms_prefix_digits", default=6, minimum=1, maximum=15),
        provider_rate=tuple(rates),
        max_keys=f.integer("max_keys", default=d.max_keys, minimum=1000),
    )


def parse_config(data: Any, base: Path | None = None) -> Config:
    """Validate a parsed document into a :class:`Config`; raises :class:`ConfigError`."""
    problems: list[ConfigProblem] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem("<root>", "must be a mapping", "start with e.g. email:")])
    data = expand_env(data, "", problems)
    root = Fields(data, "", problems)
    root.reject_unknown(Config.__dataclass_fields__)
    config = Config(
        server=_server(root),
        auth=_auth(root),
        email=_email(root),
        sms=_sms(root),
        templates=_templates(root, base or Path.cwd()),
        delivery=_delivery(root),
        capture=parse_capture(root),
        store=parse_store(root, base or Path.cwd()),
        limits=_limits(root),
    )
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
