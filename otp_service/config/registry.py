"""The providers otp-service can deliver through: one entry each, the only list of their names.

An entry says which channels the provider serves, which section of the config file holds its
settings (``<channel>.<name>``: Logto's connector JSON for that provider, modelled in its own
module of this package, ``config/<name>.py``) and where its code is: the dotted path of its
factory (``build``, in ``providers/<name>.py``) and, for a provider with delivery receipts, of
its receipt reader's (``providers/<name>_receipts.py``). That code is imported only when a
config uses the provider (the SMS SDKs alone weigh ~40 MB of memory); the wiring
(``services.py``) builds every provider from its entry and names none. Adding a provider is
its modules under ``providers/``, its connector model here in ``config/`` and one entry below
(``tests/test_registry.py`` proves no other file names it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any, Literal

from .aliyun import AliyunConfig
from .fields import Fields, read_optional
from .smtp import EmailTemplate, SmtpConfig
from .twilio import TwilioConfig
from .vonage import VonageConfig

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
