"""The ``sms`` section: the provider, each SMS provider's connector JSON, endpoints, routes and
countries.

``sms.<provider>`` is the JSON of Logto's own connector for that provider, pasted as is and
validated field for field by its model (including the usage types Logto requires).
"""

from __future__ import annotations

import re
import typing
from typing import Any, TypeVar

import phonenumbers

from ..errors import ConfigProblem
from .fields import Declared, Fields, read, section, setting
from .registry import DEFAULT, on, read_sections, require_sections, sections_schema, sending, spoken

T = TypeVar("T")
_PREFIX = re.compile(r"^\+[0-9]{1,15}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")  # host or host:port, IPv6 in brackets
_NAMES = tuple(p.name for p in on("sms"))
_CONCURRENCY = tuple((p.name, p.concurrency[0]) for p in on("sms") if p.concurrency is not None)
_COUNTRIES = {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z]{2}$"}}


def _host(f: Fields, d: Declared) -> str | None:
    host = f.string(d.key)
    if host is not None and not _HOST.match(host):
        f.problem(d.key, "must be host or host:port, not a URL", "e.g. dysmsapi.aliyuncs.com")
    return host


@section
class Endpoint:
    """Where a provider's API lives: a regional host, or a local fake in tests."""

    host: str | None = setting(
        "host[:port] of the API (default: the SDK's)", default=None, read=_host,
        schema={"type": ["string", "null"], "pattern": _HOST.pattern},
    )  # fmt: skip
    protocol: str = setting(
        "https, or http for a local fake", default="https", choices=("https", "http")
    )
    ca_file: str | None = setting("a CA bundle to trust for it (PEM file)", default=None)
    timeout_seconds: float = setting("one API call", default=10.0, minimum=0.1)


def _prefixes(f: Fields, d: Declared) -> tuple[str, ...]:
    prefixes = [p for _, p in f.items(d.key) or []]
    for prefix in prefixes:
        if not isinstance(prefix, str) or not _PREFIX.match(prefix):
            f.problem(d.key, f"{prefix!r} is not a +digits prefix", 'e.g. "+86"')
    return tuple(str(p) for p in prefixes)


def _providers(f: Fields, d: Declared) -> tuple[str, ...]:
    providers = [p for _, p in f.items(d.key) or []]
    if not providers:
        f.problem(
            d.key, "is required", f"list providers in order, e.g. [{', '.join(sending('sms'))}]"
        )
    for name in providers:
        if name not in _NAMES:
            f.problem(d.key, f"{name!r} is not a provider", f"use {spoken(_NAMES)}")
    return tuple(str(p) for p in providers)


@section
class Route:
    prefixes: tuple[str, ...] = setting(
        'E.164 prefixes ("+86", "+4477"); none: every number',
        absent=(), read=_prefixes,
        schema={"type": "array", "items": {"type": "string", "pattern": _PREFIX.pattern}},
    )  # fmt: skip
    providers: tuple[str, ...] = setting(
        "the providers to try, in order (the next one after a transient failure)",
        read=_providers,
        schema={"type": "array", "minItems": 1, "items": {"enum": list(_NAMES)}},
    )

    def matches(self, number: str) -> bool:
        return not self.prefixes or any(number.startswith(p) for p in self.prefixes)


def _region(f: Fields, d: Declared) -> str | None:
    region = f.string(d.key)
    if region is not None and region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        f.problem(d.key, "must be a two-letter country code", "use e.g. US, FR or CN")
        return None
    return region.upper() if region else None


def _endpoints(f: Fields, d: Declared) -> tuple[tuple[str, Endpoint], ...]:
    section = f.obj(d.key)
    if section is None:
        return ()
    names = [p.name for p in on("sms") if p.endpoint]
    section.reject_unknown(names)
    result = [(n, read(Endpoint, e)) for n in names if (e := section.obj(n)) is not None]
    return tuple(result)


def _concurrency(f: Fields, d: Declared) -> tuple[tuple[str, int], ...]:
    return tuple(
        (p.name, f.integer(f"{p.name}_concurrency", default=p.concurrency[0], minimum=1,
                           maximum=p.concurrency[1]))
        for p in on("sms") if p.concurrency is not None
    )  # fmt: skip


def _countries(f: Fields, d: Declared) -> frozenset[str]:
    result: set[str] = set()
    for path, code in f.items(d.key) or []:
        if not isinstance(code, str) or code.upper() not in phonenumbers.SUPPORTED_REGIONS:
            f.problems.append(
                ConfigProblem(path, f"{code!r} is not a country code", "use ISO codes like FR, CN")
            )
            continue
        result.add(code.upper())
    return frozenset(result)


@section
class SmsConfig:
    provider: str = setting(
        "the provider of numbers no route matches", default=DEFAULT, choices=_NAMES
    )
    default_region: str | None = setting(
        "the country of numbers typed without +country code (ISO code, e.g. FR)",
        default=None, read=_region, schema={"type": ["string", "null"], "pattern": "^[A-Za-z]{2}$"},
    )  # fmt: skip
    sections: tuple[tuple[str, Any], ...] = setting(
        "each SMS provider's settings: Logto's connector JSON for it, pasted as is",
        default=(),
        read=lambda f, d: read_sections(f, "sms"),
        spread=sections_schema("sms"),
    )
    endpoints: tuple[tuple[str, Endpoint], ...] = setting(
        "where each provider's API lives: a regional host, or a local fake in tests",
        default=(),
        read=_endpoints,
        schema={"type": "object", "additionalProperties": False,
                "properties": {p.name: Endpoint for p in on("sms") if p.endpoint}},
    )  # fmt: skip
    routes: tuple[Route, ...] = setting(
        "by number prefix, the providers to try in order; the first match wins", default=()
    )
    allow_countries: frozenset[str] = setting(
        "only numbers of these countries (ISO codes); none: every country",
        default=frozenset(), read=_countries, schema=_COUNTRIES,
    )  # fmt: skip
    deny_countries: frozenset[str] = setting(
        "never numbers of these countries (ISO codes)",
        default=frozenset(), read=_countries, schema=_COUNTRIES,
    )  # fmt: skip
    max_segments: int = setting(
        "the most SMS segments one message may take (checked on every template)",
        default=3, minimum=1, maximum=10,
    )  # fmt: skip
    concurrency: tuple[tuple[str, int], ...] = setting(
        "calls at once to each provider",
        default=_CONCURRENCY,
        read=_concurrency,
        spread={f"{p.name}_concurrency": {"type": "integer", "minimum": 1,
                                           "maximum": p.concurrency[1],
                                           "default": p.concurrency[0],
                                           "description": f"calls at once to {p.title}"}
                for p in on("sms") if p.concurrency is not None},
    )  # fmt: skip

    failover_on_undelivered: bool = setting(
        "resend once through the route's next provider when a receipt says undelivered while "
        "the code is valid (off: a late receipt could mean two texts)",
        default=False,
    )
    receipt_horizon_seconds: float = setting(
        "an SMS without a final delivery receipt after this is counted unknown",
        default=3600.0, minimum=60,
    )  # fmt: skip
    receipt_poll_seconds: float = setting(
        "how often providers that are asked (not called back) are asked about SMS waiting for "
        "a receipt",
        default=30.0, minimum=1,
    )  # fmt: skip
    receipt_query_rate: float = setting(
        "calls per second at most asking a provider for receipts (a per-account limit)",
        default=5.0, minimum=0.1,
    )  # fmt: skip

    def endpoint(self, provider: str) -> Endpoint:
        return dict(self.endpoints).get(provider, Endpoint())

    def calls_at_once(self, provider: str) -> int:
        return dict(self.concurrency).get(provider, 1)

    def section(self, model: type[T]) -> T | None:
        """The provider settings of type ``model`` (a connector JSON), when configured."""
        return next((s for _, s in self.sections if isinstance(s, model)), None)

    def route_for(self, number: str) -> Route:
        """The first route whose prefixes match ``number``; ``provider`` alone otherwise."""
        for route in self.routes:
            if route.matches(number):
                return route
        return Route((), (self.provider,))

    @property
    def provider_names(self) -> frozenset[str]:
        names = {self.provider, *(p for r in self.routes for p in r.providers)}
        return frozenset(names)

    def checked(self, f: Fields) -> SmsConfig:
        """What no single field says: a provider in use without its settings, a catch-all gap."""
        routed = {p for route in self.routes for p in route.providers} - {DEFAULT}
        catch_all = any(not route.prefixes for route in self.routes)
        if routed and not catch_all and self.provider == DEFAULT:
            f.problem(
                "provider",
                f"is {DEFAULT}: numbers no route matches would be captured, not sent",
                "add a last route without prefixes, or set sms.provider to "
                + spoken(sending("sms")),
            )
        require_sections(f, "sms", self.provider_names)
        return self

    if not typing.TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            """``config.sms.<provider>`` (its settings) and ``config.sms.<provider>_concurrency``,
            as the file names them (for tests, the bench and the REPL)."""
            if name in _NAMES:
                return dict(self.sections).get(name)
            provider = name.removesuffix("_concurrency")
            if provider != name and provider in _NAMES:
                return self.calls_at_once(provider)
            raise AttributeError(name)
