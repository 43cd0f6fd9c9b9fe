"""Email addresses and mailboxes: validated, normalised and cleaned for a header."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .sanitize import clean_display_name, has_control

# dot-atom local part (RFC 5322) widened to any non-ASCII character for SMTPUTF8 (RFC 6531).
_LOCAL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
    r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+)*$"
)
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_NAME_ADDR = re.compile(r"^(.*?)<([^<>]+)>$")


@dataclass(frozen=True)
class Mailbox:
    """An address with an optional display name, already cleaned for a header."""

    address: str
    name: str = ""


def normalize_email(value: str, what: str = "'to'") -> str:
    """The address with its domain in lower-case ASCII (IDNA); raises :class:`ValueError`
    saying what is wrong (control characters included)."""

    def _invalid_email(reason: str) -> ValueError:
        return ValueError(f"{what} is not a valid email address: {reason}")

    if has_control(value):
        raise ValueError(f"{what} contains control characters")
    address = value.strip()
    if len(address) > 254:
        raise _invalid_email("longer than 254 characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise _invalid_email("expected local@domain")
    if len(local.encode()) > 64 or not _LOCAL.match(local):
        raise _invalid_email("the part before @ has characters an address cannot hold")
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _invalid_email("the domain is not a valid host name") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise _invalid_email("the domain is not a valid host name")
    return f"{local}@{ascii_domain}"


def parse_mailbox(value: str) -> Mailbox:
    """``"Name <a@b>"`` or ``a@b`` into a cleaned :class:`Mailbox`; raises ``ValueError``."""
    if has_control(value):
        raise ValueError("an address contains control characters")
    match = _NAME_ADDR.match(value.strip())
    if match:  # lenient like nodemailer: "Acme, Inc. <a@b>" needs no quotes
        name, address = match.group(1).strip().strip('"'), match.group(2)
    else:
        name, address = "", value.strip()
    return Mailbox(normalize_email(address, "the address"), clean_display_name(name))
