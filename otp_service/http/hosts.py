"""No DNS rebinding: a request whose ``Host`` is not a name the service is reached by is refused.

A web page a developer visits can point its own DNS name at 127.0.0.1 (or at a service inside
the network) and then read, with the browser's own request, whatever answers there: the capture
inbox, with every code in it. Such a request still carries the page's name in ``Host``
(``evil.example:8787``), so answering only to known names defeats it. What is always accepted:

- loopback: ``localhost`` and its subdomains, 127.0.0.0/8, ::1;
- the address (or name) ``server.host`` binds, when it is not a wildcard;
- when the service listens beyond loopback: any IP address (no DNS name, nothing to rebind; a
  probe asks by the pod's IP), a single-label name (``otp-service``: a Docker Compose service,
  a Kubernetes service in its namespace, a container's host name) and names under ``.internal``
  (``host.docker.internal``), ``.svc`` and ``.svc.cluster.local`` (Kubernetes): no web page can
  own such a name in the public DNS;
- the host of ``server.public_url`` (where providers call back with receipts);
- ``server.allowed_hosts``: other names (``otp.example.com``, ``otp.example.com:8443``,
  ``*.example.com`` for subdomains), or ``*`` for any.

The port is not compared unless an ``allowed_hosts`` entry names one (a published port often
differs from the one the service binds). A request without ``Host`` (HTTP/1.0) is answered:
a browser always sends one.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..config import ServerConfig, is_loopback
from ..errors import HostNotAllowed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 (names, not a bind)
# Names no one can register in the public DNS, accepted when listening beyond loopback.
PRIVATE_SUFFIXES = (".internal", ".svc", ".svc.cluster.local")
_CACHED_HOSTS = 64  # Host values whose verdict is kept
_CACHED_HOST_CHARS = 260


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` as (lower-case name or address without brackets, port or None); None when it
    is not a host."""
    value = value.strip().lower()
    port = ""
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[1:end], value[end + 1 :]
        if end < 0 or not _address(host) or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        host, colon, port = value.partition(":")
        if colon and not port:
            return None
    if port and not (port.isascii() and port.isdigit() and int(port) < 65536):
        return None
    host = host.rstrip(".")
    if not host or not all(c.isalnum() or c in "-._:" for c in host) or not host.isascii():
        return None
    return host, int(port) if port else None


def _address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = _address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


class HostPolicy:
    """Which ``Host`` values the service answers to (see the module)."""

    def __init__(self, server: ServerConfig) -> None:
        self.any = "*" in server.allowed_hosts
        bound = server.host.strip("[]").lower()
        self.bound = None if bound in WILDCARDS else bound
        self.beyond_loopback = not is_loopback(server.host)
        names = {socket.gethostname().lower()} if self.beyond_loopback else set()
        self.exact: set[tuple[str, int | None]] = {(name, None) for name in names if name}
        if server.public_url is not None and (public := urlsplit(server.public_url).hostname):
            self.exact.add((public.lower().strip("[]"), None))
        self.suffixes: list[str] = []
        for entry in server.allowed_hosts:
            if entry.startswith("*."):
                self.suffixes.append(entry[1:])
            elif entry != "*" and (parsed := split_host(entry)) is not None:
                self.exact.add(parsed)
        # The verdict per Host value: clients send the same few, and parsing one as an address
        # costs more than the rest of the check. Bounded (the values are the caller's).
        self._verdicts: dict[str, bool] = {}

    def allows(self, value: str) -> bool:
        """Whether a request with ``Host: value`` is answered."""
        if self.any:
            return True
        verdict = self._verdicts.get(value)
        if verdict is None:
            verdict = self._allows(value)
            if len(value) <= _CACHED_HOST_CHARS:
                if len(self._verdicts) >= _CACHED_HOSTS:
                    self._verdicts.clear()
                self._verdicts[value] = verdict
        return verdict

    def _allows(self, value: str) -> bool:
        parsed = split_host(value)
        if parsed is None:
            return False
        host, port = parsed
        if _loopback(host) or (host, None) in self.exact or (host, port) in self.exact:
            return True
        if self.bound is not None and _same(host, self.bound):
            return True
        if any(host.endswith(suffix) for suffix in self.suffixes):
            return True
        if self.beyond_loopback:
            private = "." not in host or host.endswith(PRIVATE_SUFFIXES)
            return private or _address(host) is not None
        return False


def _same(host: str, bound: str) -> bool:
    a, b = _address(host), _address(bound)
    return a == b if a is not None and b is not None else host == bound


def host_middleware(policy: HostPolicy) -> Middleware:
    """A middleware refusing, with 421 ``host_not_allowed``, a request whose Host ``policy``
    does not allow."""

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        hosts = request.headers.getall("Host", [])
        if len(hosts) > 1 or (hosts and not policy.allows(hosts[0])):
            raise HostNotAllowed()
        return await handler(request)

    return check_host
