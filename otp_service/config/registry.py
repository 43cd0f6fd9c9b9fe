"""The providers otp-service delivers through and the identity systems whose hooks it takes: one
entry each, the only list of their names.

A provider's entry says which channels it serves, which section of the config file holds its
settings (``<channel>.<name>``: Logto's connector JSON for that provider, modelled in its own
module of this package, ``config/<name>.py``) and where its code is: the dotted path of its
factory (``build``, in ``providers/<name>.py``) and, for a provider with delivery receipts, of
its receipt reader's (``providers/<name>_receipts.py``). That code is imported only when a
config uses the provider (the SMS SDKs alone weigh ~40 MB of memory); the wiring
(``services.py``) builds every provider from its entry and names none. Adding a provider is
its modules under ``providers/``, its connector model here in ``config/`` and one entry below.

An intake's entry (an identity system's hook) says where its settings are (``intakes.<name>``,
modelled in ``config/<name>.py``) and which :class:`~otp_service.intake.hook.Hook` serves it
(``intake/<name>.py``), built with those settings when they are present. Adding one is those two
modules and one entry in :data:`INTAKES`.

``tests/test_registry.py`` proves no other file names a provider or an intake.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any, Literal

from .aliyun import AliyunConfig
from .authentik import AuthentikIntakeConfig
from .fields import Fields, read_optional
from .generic import GenericIntakeConfig
from .kratos import KratosIntakeConfig
from .smtp import EmailTemplate, SmtpConfig
from .supabase import SupabaseIntakeConfig
from .twilio import TwilioConfig
from .vonage import VonageConfig
from .zitadel import ZitadelIntakeConfig

Channel = Literal["email", "sms"]
DEFAULT = "capture"  # the provider of a channel the config names none for: the inbox


@dataclass(frozen=True)
class Registered:
    """One provider: its name in the config file, its place in it and where its code is."""

    name: str
    title: str  # as people write it: "Vonage"
    channels: tuple[Channel, ...]
    model: type | None = None  # the settings at <channel>.<name> (Logto's connector JSON)
    # "module:function": its factory, (Config, Inbox) -> Provider, imported when configured.
    build: str = ""
    # "module:function": its receipt reader's factory, Config -> ReceiptReader, when it has one.
    receipts: str | None = None
    captures: bool = False  # keeps messages in the inbox instead of sending them
    endpoint: bool = False  # sms.endpoints.<name>: where its API lives (a region, a fake)
    concurrency: tuple[int, int] | None = None  # sms.<name>_concurrency: (default, maximum)
    # The SMS texts its connector JSON carries, (usage type, template), when it carries any.
    texts: Callable[[Any], Sequence[tuple[str, str]]] | None = None
    # The email templates its connector JSON carries, when it carries any.
    mails: Callable[[Any], Sequence[EmailTemplate]] | None = None
    calls_back: bool = False  # posts delivery receipts to server.public_url's /v1/receipts/<name>
    # Given its settings, whether its receipts would be taken unsigned (anyone could post one).
    unsigned_receipts: Callable[[Any], bool] | None = None


PROVIDERS = (
    Registered(
        "capture",
        "the capture inbox",
        ("email", "sms"),
        captures=True,
        build="otp_service.providers.capture:build",
    ),
    Registered(
        "smtp",
        "SMTP",
        ("email",),
        SmtpConfig,
        build="otp_service.providers.smtp:build",
        mails=SmtpConfig.email_templates,
    ),
    Registered(
        "vonage",
        "Vonage",
        ("sms",),
        VonageConfig,
        build="otp_service.providers.vonage:build",
        receipts="otp_service.providers.vonage_receipts:build",
        endpoint=True,
        concurrency=(16, 256),
        texts=VonageConfig.text_templates,
        calls_back=True,
        unsigned_receipts=VonageConfig.receipts_unsigned,
    ),
    Registered(
        "aliyun",
        "Aliyun",
        ("sms",),
        AliyunConfig,
        build="otp_service.providers.aliyun:build",
        receipts="otp_service.providers.aliyun_receipts:build",
        endpoint=True,
        concurrency=(32, 1024),
    ),
    Registered(
        "twilio",
        "Twilio",
        ("sms",),
        TwilioConfig,
        build="otp_service.providers.twilio:build",
        receipts="otp_service.providers.twilio_receipts:build",
        endpoint=True,
        concurrency=(32, 1024),
        texts=TwilioConfig.text_templates,
        calls_back=True,
    ),
)
BY_NAME = {p.name: p for p in PROVIDERS}


def load(path: str) -> Any:
    """What a ``module:name`` path of an entry names, its module imported now."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def on(channel: Channel) -> tuple[Registered, ...]:
    """The providers of ``channel``, in registry order."""
    return tuple(p for p in PROVIDERS if channel in p.channels)


def names(channel: Channel | None = None) -> tuple[str, ...]:
    return tuple(p.name for p in (PROVIDERS if channel is None else on(channel)))


def spoken(names: Sequence[str], last: str = "or") -> str:
    """``a, b or c``: names in a sentence."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"


def sending(channel: Channel) -> tuple[str, ...]:
    """The providers of ``channel`` that send (everything but capture)."""
    return tuple(p.name for p in on(channel) if not p.captures)


def read_sections(f: Fields, channel: Channel) -> tuple[tuple[str, Any], ...]:
    """Each provider section present under ``f`` (a channel's object), read by its model."""
    found = ((p.name, read_optional(p.model, f, p.name)) for p in on(channel) if p.model)
    return tuple((name, section) for name, section in found if section is not None)


def sections_schema(channel: Channel) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each provider section of ``channel``, by key."""
    return {
        p.name: {"description": f"Logto's {p.title} connector JSON", "$ref": p.model}
        for p in on(channel)
        if p.model is not None
    }


def require_sections(f: Fields, channel: Channel, used: Set[str]) -> None:
    """A provider in use needs its section (Logto's connector JSON for it)."""
    for p in on(channel):
        if p.model is not None and p.name in used and not f.has(p.name):
            uses = f"{channel}.provider" + (" or a route" if channel == "sms" else "")
            f.problem(
                p.name,
                "is required",
                f"{uses} uses {p.name}: paste Logto's {p.title} connector JSON under "
                f"{channel}.{p.name}",
            )


# -- intakes: the identity systems' hooks


@dataclass(frozen=True)
class Intake:
    """One identity system's hook: its section ``intakes.<name>`` and the hook it turns on."""

    name: str  # in the config file and the routes: /v1/hooks/<name>/<channel>
    title: str  # as people write it: "ZITADEL"
    model: type  # the settings at intakes.<name> (off unless present)
    help: str  # what the section turns on, as the reference says it
    # "module:class": its Hook, built with its settings (imported when first configured).
    hook: str
    # Takes any caller's JSON: where the other hooks send a caller whose shape they cannot read.
    fallback: bool = False


INTAKES = (
    Intake(
        "supabase",
        "Supabase",
        SupabaseIntakeConfig,
        "Supabase Auth's hooks: POST /v1/hooks/supabase/email and /sms (off unless set)",
        "otp_service.intake.supabase:SupabaseHook",
    ),
    Intake(
        "authentik",
        "Authentik",
        AuthentikIntakeConfig,
        "Authentik's generic SMS provider: POST /v1/hooks/authentik/sms (off unless set)",
        "otp_service.intake.authentik:AuthentikHook",
    ),
    Intake(
        "generic",
        "the generic hook",
        GenericIntakeConfig,
        "any caller: POST /v1/hooks/generic/email and /sms (off unless set)",
        "otp_service.intake.generic:GenericHook",
        fallback=True,
    ),
    Intake(
        "zitadel",
        "ZITADEL",
        ZitadelIntakeConfig,
        "ZITADEL's HTTP providers: POST /v1/hooks/zitadel/email and /sms (off unless set)",
        "otp_service.intake.zitadel:ZitadelHook",
    ),
    Intake(
        "kratos",
        "Ory Kratos",
        KratosIntakeConfig,
        "Ory Kratos's courier: POST /v1/hooks/kratos/email and /sms (off unless set)",
        "otp_service.intake.kratos:KratosHook",
    ),
)
INTAKE = {i.name: i for i in INTAKES}


def intake_names() -> tuple[str, ...]:
    return tuple(INTAKE)


def fallback_intake() -> str:
    """The intake that takes any caller's JSON (the one entry with ``fallback``)."""
    return next(i.name for i in INTAKES if i.fallback)


def read_intakes(f: Fields) -> tuple[tuple[str, Any], ...]:
    """Each intake section present under ``f`` (the ``intakes`` object), read by its model."""
    found = ((i.name, read_optional(i.model, f, i.name)) for i in INTAKES)
    return tuple((name, section) for name, section in found if section is not None)


def intakes_schema() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each intake section, by key."""
    return {i.name: {"$ref": i.model, "description": i.help} for i in INTAKES}
