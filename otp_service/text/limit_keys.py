"""Canonical keys for the abuse limits: one person, one address, one number range, one key.

Pure functions (no I/O), shared by every store backend. An attacker must not get a fresh
counter by writing the same thing differently:

- IP addresses: ``::ffff:203.0.113.7`` and ``::ffff:cb00:7107`` are ``203.0.113.7``; leading
  zeros (``203.000.113.007``), stray spaces and a zone (``%eth0``) are dropped; IPv6 is
  compared as a number (expanded, upper-case and compressed forms are one address) and grouped
  by its /64 (one customer's prefix: a host picks any of its 2^64 addresses for free).
- Email addresses: case-folded (NFKC), and ``victim+tag@example.com`` is
  ``victim@example.com`` (sub-addressing delivers both to the same mailbox).
- Phone numbers are already E.164 (parsed once when the request was composed).

A value that is no address at all (``0203.0.113.7``, ``999.1.1.1``, ``::ffff:zz``, a host name,
an empty or blank string) is counted under ONE shared key, :data:`UNPARSED_IP`, rather than
refused or keyed by its text. Logto passes on whatever its proxy headers say, so the client may
choose the text: keyed by text, every new piece of junk would be a fresh counter (the per-IP
limit would never bite); refused with a 400, a misconfigured proxy would stop every sign-in.
One shared bucket keeps sign-ins working and caps what all junk-IP clients together can send at
one client's allowance.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

_SPACES = re.compile(r"\s+")
UNPARSED_IP = "unparsed"  # the one key of every ``ip`` that is no address (see above)
_IPV4_LENIENT = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


def _ipv4(text: str) -> ipaddress.IPv4Address | None:
    """Dotted quad, tolerating leading zeros (read as decimal, as browsers and Logto log it)."""
    match = _IPV4_LENIENT.match(text)
    if match is None:
        return None
    parts = [int(p) for p in match.groups()]
    if any(p > 255 for p in parts):
        return None
    return ipaddress.IPv4Address(".".join(map(str, parts)))


def canonical_ip(value: str) -> str:
    """``ip4:203.0.113.7``, ``ip6:2001:db8:1:2::/64``, or :data:`UNPARSED_IP` for anything
    else (whatever its text: see the module's docstring)."""
    text = _SPACES.sub("", value).strip("[]").lower()
    text = text.split("%", 1)[0]  # a zone id names the sender's interface, not the sender
    if (v4 := _ipv4(text)) is not None:
        return f"ip4:{v4}"
    if ":" in text:
        head, _, tail = text.rpartition(":")
        if (v4 := _ipv4(tail)) is not None:  # ::ffff:203.000.113.007 and the like
            text = f"{head}:{v4}"
        try:
            v6 = ipaddress.IPv6Address(text)
        except ValueError:
            return UNPARSED_IP
        if (mapped := v6.ipv4_mapped) is not None:
            return f"ip4:{mapped}"
        network = ipaddress.IPv6Network((int(v6) >> 64 << 64, 64))
        return f"ip6:{network}"
    return UNPARSED_IP


def canonical_email(address: str) -> str:
    """The mailbox an address reaches: case-folded, without a ``+tag``."""
    text = unicodedata.normalize("NFKC", address.strip()).casefold()
    local, at, domain = text.rpartition("@")
    if not at:
        return text
    local = local.split("+", 1)[0] or local
    return f"{local}@{domain.rstrip('.')}"


def recipient_key(channel: str, to: str) -> str:
    """The per-recipient limit's key (``to`` already normalised by the request layer)."""
    return f"to:{channel}:{canonical_email(to) if channel == 'email' else to}"


def ip_key(ip: str) -> str:
    """The per-IP limit's key."""
    return f"ip:{canonical_ip(ip)}"


def prefix_key(e164: str, digits: int) -> str:
    """The per-number-range limit's key: ``+`` and the first ``digits`` digits."""
    return f"prefix:{e164[: 1 + digits]}"
