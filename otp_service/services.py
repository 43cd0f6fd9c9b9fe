"""Wiring: build the template library, providers, composer and dispatcher from a Config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .config import Config, registry
from .delivery.dispatcher import Dispatcher
from .delivery.limits import Limiter
from .delivery.outbox import Outbox
from .delivery.receipts import ReceiptDesk
from .delivery.send import SendPath
from .intake.smtp import SmtpIntake
from .logto.sync import TemplateSync
from .message.compose import Composer
from .message.templates import TemplateLibrary
from .metrics import Metrics
from .providers.base import Provider, ReceiptReader
from .store import CounterStore, Inbox, MemoryInbox, OutboxStore, SqliteStore

ProviderFactory = Callable[[Config, Inbox], Provider]
ReceiptFactory = Callable[[Config], ReceiptReader]


def build_provider(config: Config, name: str, inbox: Inbox) -> Provider:
    """Provider ``name`` built by the factory its registry entry names (its module imported
    only now: the SMS SDKs alone weigh ~40 MB of memory)."""
    factory: ProviderFactory = registry.load(registry.BY_NAME[name].build)
    return factory(config, inbox)


def build_receipt_readers(config: Config) -> dict[str, ReceiptReader]:
    """The receipt readers of the configured SMS providers that have one, by provider name."""
    readers: dict[str, ReceiptReader] = {}
    for name in sorted(config.sms.provider_names):
        if (path := registry.BY_NAME[name].receipts) is not None:
            factory: ReceiptFactory = registry.load(path)
            readers[name] = factory(config)
    return readers


def build_library(config: Config) -> TemplateLibrary:
    """All templates compiled; raises ConfigError for a broken one. A provider's connector JSON
    may carry templates (its registry entry says how to read them): the first one found serves."""
    mails = [
        (f"email.{name}.templates", entry.mails(section))
        for name, section in config.email.sections
        if (entry := registry.BY_NAME[name]).mails is not None
    ]
    texts = [
        (f"sms.{name}.templates", entry.texts(section))
        for name, section in config.sms.sections
        if (entry := registry.BY_NAME[name]).texts is not None
    ]
    email_at, email = mails[0] if mails else ("", ())
    sms_at, sms = texts[0] if texts else ("", ())
    return TemplateLibrary(config.templates, email, sms, email_at=email_at, sms_at=sms_at)


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
    sender: SendPath  # the one way in for a send, from every intake
    logto: TemplateSync | None = None  # Logto's email templates, when templates.logto is set
    intake: SmtpIntake | None = None  # capture.smtp: mail from any app into the inbox
    # The receipt readers of the configured SMS providers that call back, by provider name.
    receipt_readers: dict[str, ReceiptReader] = field(default_factory=dict)

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
        inbox = PgInbox(
            shared,
            capture.max_messages,
            max_bytes=capture.max_bytes,
            stream_bytes=capture.stream_buffer_bytes,
        )
        return shared, shared, inbox
    store = SqliteStore(config.store.path, max_limit_keys=config.limits.max_keys)
    return (
        store,
        store,
        MemoryInbox(
            capture.max_messages,
            max_bytes=capture.max_bytes,
            stream_bytes=capture.stream_buffer_bytes,
        ),
    )


def build_services(config: Config, library: TemplateLibrary | None = None) -> Services:
    store, counters, inbox = build_store(config)
    email = build_provider(config, config.email.provider, inbox)
    sms = {name: build_provider(config, name, inbox) for name in sorted(config.sms.provider_names)}
    library = library or build_library(config)
    composer = Composer(library, config.sms)
    # Provider rates hold across every process sharing the store (PostgreSQL); with SQLite there
    # is one process and they are paced in its memory.
    dispatcher = Dispatcher(
        email, sms, config.sms, dict(config.limits.provider_rate), config.delivery.timeout_seconds,
        shared=counters if config.store.url else None,
    )  # fmt: skip
    metrics = Metrics()
    # Both decided here: in capture mode for tests they are off unless the config says on.
    delivery = replace(config.delivery, dedupe=config.dedupe_on)
    receipts = ReceiptDesk(store, dispatcher, metrics, config.sms, config.capture)
    outbox = Outbox(store, dispatcher, delivery, config.store.retention_days, metrics, receipts)
    limiter = Limiter(counters, replace(config.limits, enabled=config.limits_on))
    # A send refused while shutting down comes back after the listener has closed.
    sender = SendPath(composer, limiter, outbox, delivery, metrics, config.server.drain_seconds + 1)
    logto = None
    if config.templates.logto is not None:
        logto = TemplateSync(config.templates.logto, library.use_logto)
        metrics.logto_templates(lambda: float(logto.up))
    intake = SmtpIntake(config.capture.smtp, inbox) if config.capture.smtp is not None else None
    readers = build_receipt_readers(config)
    return Services(
        config, inbox, composer, dispatcher, store, limiter, outbox, metrics, sender, logto, intake,
        readers,
    )  # fmt: skip
