"""Wiring: build the template library, providers, composer and dispatcher from a Config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .compose import Channel, Composer
from .config import Config
from .delivery import Dispatcher
from .providers.base import Provider
from .providers.capture import CaptureInbox, CaptureProvider
from .providers.smtp import SmtpProvider
from .templates import TemplateLibrary

ProviderFactory = Callable[[Config, CaptureInbox], Provider]


def _smtp(config: Config, inbox: CaptureInbox) -> Provider:
    assert config.email.smtp is not None  # guaranteed by config validation
    return SmtpProvider(config.email.smtp, config.email.pool, config.delivery.timeout_seconds)


# Adding a provider is one module under providers/ plus one line here.
EMAIL_PROVIDERS: dict[str, ProviderFactory] = {
    "capture": lambda config, inbox: CaptureProvider(inbox),
    "smtp": _smtp,
}
SMS_PROVIDERS: dict[str, ProviderFactory] = {
    "capture": lambda config, inbox: CaptureProvider(inbox),
}


def build_library(config: Config) -> TemplateLibrary:
    """All templates compiled; raises ConfigError for a broken one."""
    connector = config.email.smtp.templates if config.email.smtp is not None else ()
    return TemplateLibrary(config.templates, connector)


@dataclass
class Services:
    config: Config
    inbox: CaptureInbox
    composer: Composer
    dispatcher: Dispatcher

    async def close(self) -> None:
        await self.dispatcher.close()


def build_services(config: Config, library: TemplateLibrary | None = None) -> Services:
    inbox = CaptureInbox(config.capture.max_messages)
    providers: dict[Channel, Provider] = {
        "email": EMAIL_PROVIDERS[config.email.provider](config, inbox),
        "sms": SMS_PROVIDERS[config.sms.provider](config, inbox),
    }
    composer = Composer(library or build_library(config), config.sms.default_region)
    return Services(config, inbox, composer, Dispatcher(providers, config.delivery))
