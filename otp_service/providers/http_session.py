"""The ``aiohttp`` session an SMS provider's API calls share: keep-alive connections to one
:class:`~otp_service.config.sms.Endpoint`, bounded, with its timeouts and CA.

Opened on first use (a session belongs to the running loop), closed with the provider.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp

from ..config.sms import Endpoint

KEEPALIVE_SECONDS = 10.0


class EndpointSession:
    """At most ``concurrency`` connections to ``endpoint``; ``timeout_seconds`` to connect and
    between reads (no total: a slow answer is the read timeout's). TLS trusts the endpoint's
    ``ca_file`` alone when it names one, else the system's CAs and ``cafile`` (an SDK's own
    bundle) if given."""

    def __init__(self, endpoint: Endpoint, concurrency: int, cafile: str | None = None) -> None:
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.cafile = cafile
        self.session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        """The open session (opened now if need be)."""
        if self.session is not None and not self.session.closed:
            return self.session
        context: ssl.SSLContext | bool = self.endpoint.protocol == "https"
        if context and self.endpoint.ca_file:  # that CA alone, as requests trusted it
            context = ssl.create_default_context(cafile=self.endpoint.ca_file)
        elif context and self.cafile:
            context = ssl.create_default_context()
            context.load_verify_locations(self.cafile)
        timeout = self.endpoint.timeout_seconds
        self.session = aiohttp.ClientSession(
            # An idle connection is closed by us after 10 s, before the 15 s idle timeout of many
            # load balancers could close it just as a request goes out (outcome unknown).
            connector=aiohttp.TCPConnector(
                limit=self.concurrency, ssl=context, keepalive_timeout=KEEPALIVE_SECONDS
            ),
            timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout),
            trust_env=False,
        )
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
            # A connection closed earlier (a read timeout) may still be in its TLS shutdown:
            # give it a moment, so its socket is closed before the loop ends (aiohttp's advice).
            await asyncio.sleep(0.1)
