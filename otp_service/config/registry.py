"""The providers otp-service can deliver through: one entry each, the only list of their names.

An entry says which channels the provider serves and which section of the config file holds
its settings (``<channel>.<name>``: Logto's connector JSON for that provider, modelled in its
own module of this package). The provider's code loads only when a config uses it: its factory
is in ``services.py`` (the wiring), keyed by the same name. Adding a provider is its module
under ``providers/``, its connector model here in ``config/``, one entry below and its factory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any, Literal

from .aliyun import AliyunConfig
from .fields import Fields, read_optional
from .smtp import SmtpConfig
from .twilio import TwilioConfig
from .vonage import VonageConfig

Channel = Literal["email", "sms"]
DEFAULT = "capture"  # the provider of a channel the config names none for: the inbox


@dataclass(frozen=True)
class Registered:
    """One provider: its name in the config file and its place in it."""

    name: str
    title: str  # as people write it: "Vonage"
    channels: tuple[Channel, ...]
    model: type | None = None  # the settings at <channel>.<name> (Logto's connector JSON)
    captures: bool = False  # keeps messages in the inbox instead of sending them
    endpoint: bool = False  # sms.endpoints.<name>: where its API lives (a region, a fake)
    concurrency: tuple[int, int] | None = None  # sms.<name>_concurrency: (default, maximum)
    # The SMS texts its connector JSON carries, (usage type, template), when it carries any.
    texts: Callable[[Any], Sequence[tuple[str, str]]] | None = None


PROVIDERS = (
    Registered("capture", "the capture inbox", ("email", "sms"), captures=True),
    Registered("smtp", "SMTP", ("email",), SmtpConfig),
    Registered(
        "vonage",
        "Vonage",
        ("sms",),
        VonageConfig,
        endpoint=True,
        concurrency=(16, 256),
        texts=VonageConfig.text_templates,
    ),
    Registered("aliyun", "Aliyun", ("sms",), AliyunConfig, endpoint=True, concurrency=(32, 1024)),
    Registered(
        "twilio",
        "Twilio",
        ("sms",),
        TwilioConfig,
        endpoint=True,
        concurrency=(32, 1024),
        texts=TwilioConfig.text_templates,
    ),
)
BY_NAME = {p.name: p for p in PROVIDERS}


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
