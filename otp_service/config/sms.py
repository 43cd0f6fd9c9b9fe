"""The ``sms`` section: Logto's Vonage and Aliyun connector JSON, endpoints, routes, countries.

``sms.vonage`` and ``sms.aliyun`` are the JSON of Logto's own connectors, pasted as is and
validated field for field (including the usage types Logto requires).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import phonenumbers

from ..errors import ConfigProblem
from .fields import Fields

SMS_PROVIDER_TYPES = ("capture", "vonage", "aliyun")
_PREFIX = re.compile(r"^\+[0-9]{1,15}$")


@dataclass(frozen=True)
class VonageConfig:
    """Logto's Vonage SMS connector: ``apiKey``, ``apiSecret``, ``brandName``, ``templates``."""

    api_key: str
    api_secret: str = field(repr=False)
    brand_name: str
    templates: tuple[tuple[str, str], ...]  # (usageType, content)


@dataclass(frozen=True)
class AliyunTemplate:
    usage_type: str
    china: str  # the template code for mainland China numbers
    overseas: str  # ... and for the others (the same code when one string was given)


@dataclass(frozen=True)
class AliyunConfig:
    """Logto's Aliyun SMS connector (Dysmsapi 2017-05-25, ``SendSms``)."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    sign_name: str
    templates: tuple[AliyunTemplate, ...]
    strict_phone_region_number_check: bool = False

    def template(self, usage: str) -> AliyunTemplate | None:
        """The template for ``usage``, else the Generic one (Logto's fallback)."""
        by_type = {t.usage_type: t for t in self.templates}
        return by_type.get(usage) or by_type.get("Generic")


@dataclass(frozen=True)
class Endpoint:
    """Where a provider's API lives: a regional host, or a local fake in tests."""

    host: str | None = None  # host[:port]; None = the SDK's default
    protocol: str = "https"
    ca_file: str | None = None
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class Route:
    prefixes: tuple[str, ...]  # E.164 prefixes ("+86", "+4477"); empty = every number
    providers: tuple[str, ...]

    def matches(self, number: str) -> bool:
        return not self.prefixes or any(number.startswith(p) for p in self.prefixes)


@dataclass(frozen=True)
class SmsConfig:
    provider: str = "capture"
    default_region: str | None = None
    vonage: VonageConfig | None = None
    aliyun: AliyunConfig | None = None
    endpoints: tuple[tuple[str, Endpoint], ...] = ()
    routes: tuple[Route, ...] = ()
    allow_countries: frozenset[str] = frozenset()
    deny_countries: frozenset[str] = frozenset()
    max_segments: int = 3
    vonage_concurrency: int = 16
    aliyun_concurrency: int = 32

    def endpoint(self, provider: str) -> Endpoint:
        return dict(self.endpoints).get(provider, Endpoint())

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


def parse_vonage(f: Fields) -> VonageConfig | None:
    before = len(f.problems)
    f.reject_unknown(("apiKey", "apiSecret", "brandName", "templates"))
    api_key = f.string("apiKey", required=True, fix="copy the API key from the Vonage dashboard")
    secret = f.string("apiSecret", required=True, fix="set apiSecret, e.g. ${VONAGE_API_SECRET}")
    brand = f.string("brandName", required=True, fix="set brandName, the sender id shown")
    templates: list[tuple[str, str]] = []
    entries = f.items("templates")
    if entries is None:
        f.problem("templates", "is required", "paste the templates array of the connector")
    for path, item in entries or []:
        if not isinstance(item, dict):
            f.problems.append(ConfigProblem(path, "must be an object", "use {usageType, content}"))
            continue
        entry = Fields(item, path, f.problems)
        entry.reject_unknown(("usageType", "content"))
        usage = entry.string("usageType", required=True)
        content = entry.string("content", required=True)
        if usage and content:
            templates.append((usage, content))
    if entries is not None:
        f.require_usage_types(u for u, _ in templates)
    if len(f.problems) != before or not (api_key and secret and brand):
        return None
    return VonageConfig(api_key, secret, brand, tuple(templates))


def parse_aliyun(f: Fields) -> AliyunConfig | None:
    before = len(f.problems)
    f.reject_unknown(
        ("accessKeyId", "accessKeySecret", "signName", "templates", "strictPhoneRegionNumberCheck")
    )
    key_id = f.string("accessKeyId", required=True, fix="copy the AccessKey ID from Aliyun RAM")
    secret = f.string("accessKeySecret", required=True, fix="e.g. ${ALIYUN_ACCESS_KEY_SECRET}")
    sign = f.string("signName", required=True, fix="set signName, the approved SMS signature")
    strict = f.boolean("strictPhoneRegionNumberCheck", default=False)
    templates: list[AliyunTemplate] = []
    entries = f.items("templates")
    if entries is None:
        f.problem("templates", "is required", "paste the templates array of the connector")
    for path, item in entries or []:
        entry = Fields(item if isinstance(item, dict) else {}, path, f.problems)
        if not isinstance(item, dict):
            entry.problem(None, "must be an object", "use {usageType, templateCode}")
            continue
        entry.reject_unknown(("usageType", "templateCode", "type"))
        usage = entry.string("usageType", required=True)
        code = item.get("templateCode")
        if isinstance(code, str) and code:
            china = overseas = code
        elif isinstance(code, dict) and all(isinstance(code.get(k), str) and code.get(k)
                                            for k in ("china", "overseas")):  # fmt: skip
            china, overseas = code["china"], code["overseas"]
        else:
            entry.problem(
                "templateCode", "must be a template code or {china, overseas}", "e.g. SMS_123456789"
            )
            continue
        if usage:
            templates.append(AliyunTemplate(usage, china, overseas))
    if entries is not None:
        f.require_usage_types(t.usage_type for t in templates)
    if len(f.problems) != before or not (key_id and secret and sign):
        return None
    return AliyunConfig(key_id, secret, sign, tuple(templates), strict)


def _endpoints(f: Fields) -> tuple[tuple[str, Endpoint], ...]:
    section = f.obj("endpoints")
    if section is None:
        return ()
    section.reject_unknown(("vonage", "aliyun"))
    result: list[tuple[str, Endpoint]] = []
    for name in ("vonage", "aliyun"):
        e = section.obj(name)
        if e is None:
            continue
        e.reject_unknown(("host", "protocol", "ca_file", "timeout_seconds"))
        host = e.string("host")
        if host is not None and ("/" in host or not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", host)):
            e.problem("host", "must be host or host:port, not a URL", "e.g. dysmsapi.aliyuncs.com")
        result.append(
            (
                name,
                Endpoint(
                    host=host,
                    protocol=e.string("protocol", default="https", choices=("https", "http"))
                    or "https",
                    ca_file=e.string("ca_file"),
                    timeout_seconds=e.number("timeout_seconds", default=10.0, minimum=0.1),
                ),
            )
        )
    return tuple(result)


def _routes(f: Fields) -> tuple[Route, ...]:
    routes: list[Route] = []
    for path, item in f.items("routes") or []:
        entry = Fields(item if isinstance(item, dict) else {}, path, f.problems)
        if not isinstance(item, dict):
            entry.problem(None, "must be an object", "use {prefixes: [+86], providers: [aliyun]}")
            continue
        entry.reject_unknown(("prefixes", "providers"))
        prefixes = [p for _, p in entry.items("prefixes") or []]
        for prefix in prefixes:
            if not isinstance(prefix, str) or not _PREFIX.match(prefix):
                entry.problem("prefixes", f"{prefix!r} is not a +digits prefix", 'e.g. "+86"')
        providers = [p for _, p in entry.items("providers") or []]
        if not providers:
            entry.problem(
                "providers", "is required", "list providers in order, e.g. [aliyun, vonage]"
            )
        for name in providers:
            if name not in SMS_PROVIDER_TYPES:
                entry.problem(
                    "providers", f"{name!r} is not a provider", "use capture, vonage or aliyun"
                )
        routes.append(Route(tuple(str(p) for p in prefixes), tuple(str(p) for p in providers)))
    return tuple(routes)


def _countries(f: Fields, key: str) -> frozenset[str]:
    result: set[str] = set()
    regions = phonenumbers.SUPPORTED_REGIONS
    for path, code in f.items(key) or []:
        if not isinstance(code, str) or code.upper() not in regions:
            f.problems.append(
                ConfigProblem(path, f"{code!r} is not a country code", "use ISO codes like FR, CN")
            )
            continue
        result.add(code.upper())
    return frozenset(result)


def parse_sms(f: Fields) -> SmsConfig:
    """Validate the whole ``sms`` section."""
    f.reject_unknown(
        ("provider", "default_region", "vonage", "aliyun", "endpoints", "routes", "allow_countries",
         "deny_countries", "max_segments", "vonage_concurrency", "aliyun_concurrency")
    )  # fmt: skip
    region = f.string("default_region")
    if region is not None and region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        f.problem("default_region", "must be a two-letter country code", "use e.g. US, FR or CN")
        region = None
    vonage_f, aliyun_f = f.obj("vonage"), f.obj("aliyun")
    config = SmsConfig(
        provider=f.string("provider", default="capture", choices=SMS_PROVIDER_TYPES) or "capture",
        default_region=region.upper() if region else None,
        vonage=parse_vonage(vonage_f) if vonage_f is not None else None,
        aliyun=parse_aliyun(aliyun_f) if aliyun_f is not None else None,
        endpoints=_endpoints(f),
        routes=_routes(f),
        allow_countries=_countries(f, "allow_countries"),
        deny_countries=_countries(f, "deny_countries"),
        max_segments=f.integer("max_segments", default=3, minimum=1, maximum=10),
        vonage_concurrency=f.integer("vonage_concurrency", default=16, minimum=1, maximum=256),
        aliyun_concurrency=f.integer("aliyun_concurrency", default=32, minimum=1, maximum=1024),
    )
    routed = {p for route in config.routes for p in route.providers} - {"capture"}
    catch_all = any(not route.prefixes for route in config.routes)
    if routed and not catch_all and config.provider == "capture":
        f.problem(
            "provider",
            "is capture: numbers no route matches would be captured, not sent",
            "add a last route without prefixes, or set sms.provider to vonage or aliyun",
        )
    for name in sorted(config.provider_names):
        if name in ("vonage", "aliyun") and not f.has(name):
            f.problem(name, f"is required: a route or sms.provider uses {name}",
                      f"paste Logto's {name} connector JSON under sms.{name}")  # fmt: skip
    return config
