"""The RFC 5322 message for an email :class:`Message`."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime

from .compose import Message
from .smtp_config import Mailbox, SmtpConfig, parse_mailbox


def _address(mailbox: Mailbox) -> Address:
    local, _, domain = mailbox.address.rpartition("@")
    return Address(display_name=mailbox.name, username=local, domain=domain)


def sender(message: Message, config: SmtpConfig) -> Mailbox:
    """The From mailbox: the template's ``sendFrom`` when it has one, else ``fromEmail``."""
    return parse_mailbox(message.send_from) if message.send_from else config.from_mailbox


def build_email(message: Message, config: SmtpConfig) -> EmailMessage:
    """Headers and a text (plus HTML alternative) body; the Message-ID is stable per message."""
    from_box = sender(message, config)
    reply_to = parse_mailbox(message.reply_to) if message.reply_to else config.reply_to
    mail = EmailMessage(policy=default_policy)
    mail["From"] = _address(from_box)
    mail["To"] = _address(Mailbox(message.to))
    if reply_to is not None:
        mail["Reply-To"] = _address(reply_to)
    mail["Subject"] = message.subject or ""
    mail["Date"] = format_datetime(message.created_at)
    domain = from_box.address.rpartition("@")[2]
    # Derived from our id, so a retried message keeps its Message-ID and receivers can dedupe.
    mail["Message-ID"] = f"<{message.id}@{domain}>"
    for name, value in config.custom_headers:
        mail[name] = value
    mail.set_content(message.text)
    if message.html is not None:
        mail.add_alternative(message.html, subtype="html")
    return mail
