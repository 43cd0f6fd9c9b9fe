"""The RFC 5322 bytes of an email :class:`Message`.

Written directly rather than through ``email.message.EmailMessage``: the modern email policy
costs about a millisecond of CPU per message (its header registry), more than the SMTP exchange
itself. The output is deliberately plain: every header is ASCII (RFC 2047 for non-ASCII
subjects and display names, folded at 78 columns), addresses may be UTF-8 (SMTPUTF8), bodies
are 7bit, quoted-printable or base64 as fits, and an HTML body goes as multipart/alternative
after its plain-text part. Every value was already checked for control characters.

Besides From, To, Subject, Date, a Message-ID on the sender's domain and MIME-Version, a code
mail says what it is to the machines that read it: ``Auto-Submitted: auto-generated`` (RFC 3834:
vacation replies and autoresponders stay quiet), ``X-Auto-Response-Suppress: OOF, AutoReply``
(Exchange's own switch for the same; non-delivery reports still come back) and
``Content-Language`` with the template's language when it has one. No ``Precedence: bulk``: it
is not a standard (RFC 3834 advises against it) and mail providers file it as bulk mail. A
``customHeaders`` entry of the same name replaces any of these three.
"""

from __future__ import annotations

import base64
import quopri
import re
import uuid
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime, quote

from ..config.smtp import SmtpConfig
from ..message.compose import Message
from ..text.addresses import Mailbox, parse_mailbox

_SPECIALS = set('()<>@,;:\\".[]')
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")


@dataclass(frozen=True)
class Email:
    """A message ready for the SMTP envelope."""

    sender: str  # envelope MAIL FROM
    recipient: str  # envelope RCPT TO
    message_id: str
    data: bytes
    smtputf8: bool  # an address needs SMTPUTF8 (RFC 6531)


def _plain(value: str) -> bool:
    """Whether ``value`` can go into a header as it is: ASCII, no text a mail client would
    decode as an encoded word (``=?UTF-8?B?...?=`` sent by a caller is shown literally), and
    no word too long to fold at 78 columns (RFC 5322 allows 998 per line)."""
    return value.isascii() and "=?" not in value and all(len(w) <= 60 for w in value.split())


def _header(name: str, value: str) -> str:
    if len(name) + 2 + len(value) <= 78 and value.isprintable() and _plain(value):
        return f"{name}: {value}\r\n"  # one short ASCII line, as Header writes it (10 µs less)
    charset = "us-ascii" if _plain(value) else "utf-8"  # utf-8: encoded words, folded
    encoded = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}\r\n"


def _mailbox(mailbox: Mailbox) -> str:
    if not mailbox.name:
        return mailbox.address
    if not _plain(mailbox.name):
        name = Header(mailbox.name, "utf-8").encode(linesep="\r\n")
    elif _SPECIALS.intersection(mailbox.name):
        name = f'"{quote(mailbox.name)}"'
    else:
        name = mailbox.name
    return f"{name} <{mailbox.address}>"


def _part(subtype: str, text: str) -> bytes:
    raw = text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    if text.isascii() and all(len(line) <= 998 for line in raw.split(b"\r\n")):
        return f"{head}Content-Transfer-Encoding: 7bit\r\n\r\n".encode() + raw
    if sum(not ch.isascii() for ch in text) * 3 > len(text):  # mostly non-Latin: base64
        body = base64.encodebytes(raw).replace(b"\n", b"\r\n")
        return f"{head}Content-Transfer-Encoding: base64\r\n\r\n".encode() + body.rstrip(b"\r\n")
    body = quopri.encodestring(raw).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return f"{head}Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode() + body


def sender(message: Message, config: SmtpConfig) -> Mailbox:
    """The From mailbox: the template's ``sendFrom`` when it has one, else ``fromEmail``."""
    return parse_mailbox(message.send_from) if message.send_from else config.from_mailbox


def _automatic(message: Message, config: SmtpConfig) -> list[str]:
    """The headers that mark a code mail as machine-sent, and its language; a custom header
    of the same name replaces one."""
    headers = [
        ("Auto-Submitted", "auto-generated"),
        ("X-Auto-Response-Suppress", "OOF, AutoReply"),
    ]
    language = message.locale.replace("_", "-")  # a directory may be named pt_BR
    if _LANGUAGE_TAG.fullmatch(language):  # a connector template has no language
        headers.append(("Content-Language", language))
    custom = {name.lower() for name, _ in config.custom_headers}
    return [f"{name}: {value}\r\n" for name, value in headers if name.lower() not in custom]


def build_email(message: Message, config: SmtpConfig) -> Email:
    """Headers and body; the Message-ID derives from the message id, stable across retries."""
    from_box = sender(message, config)
    reply_to = parse_mailbox(message.reply_to) if message.reply_to else config.reply_to
    domain = from_box.address.rpartition("@")[2]
    message_id = f"<{message.id}@{domain}>"
    head = [
        f"From: {_mailbox(from_box)}\r\n",
        f"To: {message.to}\r\n",
        f"Reply-To: {_mailbox(reply_to)}\r\n" if reply_to is not None else "",
        _header("Subject", message.subject or ""),
        f"Date: {format_datetime(message.created_at)}\r\n",
        f"Message-ID: {message_id}\r\n",
        "MIME-Version: 1.0\r\n",
        *_automatic(message, config),
        *(_header(name, value) for name, value in config.custom_headers),
    ]
    if message.html is None:
        body = _part("plain", message.text)
    else:
        boundary = f"=_{uuid.uuid4().hex}"
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n')
        body = b"".join(
            (
                f"--{boundary}\r\n".encode(),
                _part("plain", message.text),
                f"\r\n--{boundary}\r\n".encode(),
                _part("html", message.html),
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
    # A single part brings its own Content-Type lines and blank line; multipart needs the blank.
    data = "".join(head).encode("utf-8") + (b"" if message.html is None else b"\r\n") + body
    addresses = (from_box.address, message.to, reply_to.address if reply_to else "")
    return Email(
        sender=from_box.address,
        recipient=message.to,
        message_id=message_id,
        data=data if data.endswith(b"\r\n") else data + b"\r\n",
        smtputf8=not all(a.isascii() for a in addresses),
    )
