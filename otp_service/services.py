"""Wiring: build the template library, providers, composer and dispatcher from a Config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from .config import Config
from .delivery.dispatcher import Dispatcher
from .delivery.limits import Limiter
from .delivery.outbox import Outbox
from .intake.smtp import SmtpIntake
from .logto.sync import TemplateSync
from .message.compose import Composer
from .message.templates import TemplateLibrary
from .metrics import Metrics
from .providers.base import Provider
from .providers.capture import CaptureProvider
from .store import CounterStore, Inbox, MemoryInbox, OutboxStore, SqliteStore

ProviderFactory = Callable[[Config, Inbox], Provider]


# Provider modules are imported when configured: the SMS SDKs alone weigh ~40 MB of memory.
def _smtp(config: Config, inbox: Inbox) -> Provider:
    from .providers.smtp import SmtpProvider

    assert config.email.smtp is not None  # guaranteed by config validation
    return SmtpProvider(config.email.smtp, config.email.pool, config.delivery.timeout_seconds)


def _vonage(config: Config, inbox: Inbox) -> Provider:
    from .providers.vonage import VonageProvider

    assert config.sms.vonage is not None  # guaranteed by config validation
    return VonageProvider(
        config.sms.vonage, config.sms.endpoint("vonage"), config.sms.vonage_concurrency
    )


def _aliyun(config: Config, inbox: Inbox) -> Provider:
    from .providers.aliyun import AliyunProvider

    assert config.sms.aliyun is not None  # guaranteed by config validation
    return AliyunProvider(
        config.sms.aliyun, config.sms.endpoint("aliyun"), config.sms.aliyun_concurrency
    )


def _capture(config: Config, inbox: Inbox) -> Provider:
    return CaptureProvider(inbox)


# Adding a provider is one module under providers/ plus one line here.
EMAIL_PROVIDERS: dict[str, ProviderFactory] = {"capture": _capture, "smtp": _smtp}
SMS_PROVIDERS: dict[str, ProviderFactory] = {
    "capture": _capture,
    "vonage": _vonage,
    "aliyun": _aliyun,
}


def build_library(config: Config) -> TemplateLibrary:
    """All templates compiled; raises ConfigError for a broken one."""
    email = config.email.smtp.templates if config.email.smtp is not None else ()
    sms = config.sms.vonage.templates if config.sms.vonage is not None else ()
    return TemplateLibrary(config.templates, email, sms)


@dataclass
class Services:
    """Everything a request needs; ``start`` opens the store and the outbox worker."""

    config: Config
    inbox: Inbox
    composer: Composer
    dispatcher: Dispatcher
    store: OutboxStore
    limiter: Limiter
    outbox: Outbox
    metrics: Metrics
    logto: TemplateSync | None = None  # Logto's email templates, when templates.logto is set
    intake: SmtpIntake | None = None  # capture.smtp: mail from any app into the inbox

    def provider_names(self) -> list[str]:
        """The configured providers, email first."""
        names = [self.dispatcher.email.name]
        return names + [n for n in sorted(self.dispatcher.sms) if n not in names]

    async def start(self) -> None:
        if self.logto is not None:
            await self.logto.start()
        await self.outbox.start()
        if self.intake is not None:
            try:
                await self.intake.start()
            except BaseException:
                await self.outbox.stop(0)
                if self.logto is not None:
                    await self.logto.stop()
                raise

    async def stop(self) -> None:
        """Finish in-flight attempts within the grace period; leave the rest stored."""
        if self.intake is not None:
            await self.intake.stop()
        await self.inbox.close()
        await self.outbox.stop(self.config.delivery.shutdown_grace_seconds)
        if self.logto is not None:
            await self.logto.stop()

    async def close(self) -> None:
        """Close the providers of services that were never started (CLI use)."""
        await self.dispatcher.close()


def build_store(config: Config) -> tuple[OutboxStore, CounterStore, Inbox]:
    """The three ports: outbox and counters in SQLite at ``store.path`` with the inbox in
    memory, or all three in PostgreSQL when ``store.url`` is set (every replica shares counts
    and lists what any captured)."""
    capture = config.capture
    if config.store.url:
        # asyncpg loads only when configured
        from .store.pg_inbox import PgInbox
        from .store.postgres import PostgresStore

        shared = PostgresStore(
            config.store.url, schema=config.store.schema, pool_size=config.store.pool_size
        )
        inbox = PgInbox(shared, capture.max_messages, max_bytes=capture.max_bytes)
        return shared, shared, inbox
    store = SqliteStore(config.store.path, max_limit_keys=config.limits.max_keys)
    return store, store, MemoryInbox(capture.max_messages, max_bytes=capture.max_bytes)


def build_services(config: Config, library: TemplateLibrary | None = None) -> Services:
    store, counters, inbox = build_store(config)
    email = EMAIL_PROVIDERS[config.email.provider](config, inbox)
    sms = {name: SMS_PROVIDERS[name](config, inbox) for name in sorted(config.sms.provider_names)}
    library = library or build_library(config)
    composer = Composer(library, config.sms)
    dispatcher = Dispatcher(
        email, sms, config.sms, dict(config.limits.provider_rate), config.delivery.timeout_seconds
    )
    metrics = Metrics()
    # Both decided here: in capture mode for tests they are off unless the config says on.
    delivery = replace(config.delivery, dedupe=config.dedupe_on)
    outbox = Outbox(store, dispatcher, delivery, config.store.retention_days, metrics)
    limiter = Limiter(counters, replace(config.limits, enabled=config.limits_on))
    logto = None
    if config.templates.logto is not None:
        logto = TemplateSync(config.templates.logto, library.use_logto)
        metrics.logto_templates(lambda: float(logto.up))
    intake = SmtpIntake(config.capture.smtp, inbox) if config.capture.smtp is not None else None
    return Services(
        config, inbox, composer, dispatcher, store, limiter, outbox, metrics, logto, intake
    )
