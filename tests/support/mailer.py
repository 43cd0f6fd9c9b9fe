"""The service's composer and SMTP provider, built from a Logto SMTP connector JSON, for tests
that drive the SMTP pool directly against aiosmtpd servers."""

from __future__ import annotations

from typing import Any

from otp_service.config import parse_config
from otp_service.message.compose import parse_request
from otp_service.providers.smtp import SmtpProvider
from otp_service.services import build_services

TEMPLATES = [
    {"usageType": usage, "contentType": "text/plain", "subject": "Code", "content": "{{code}}"}
    for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
]


class Mailer:
    """The composer and SMTP provider for the connector JSON ``smtp`` and ``pool`` settings."""

    def __init__(self, smtp: dict[str, Any], pool: dict[str, Any] | None = None) -> None:
        email = {"provider": "smtp", "smtp": smtp, "pool": {"size": 4} if pool is None else pool}
        services = build_services(parse_config({"email": email, "templates": {"bundled": False}}))
        provider = services.dispatcher.email
        assert isinstance(provider, SmtpProvider)
        self.provider, self.composer, self.pool = provider, services.composer, provider.pool

    async def send(self, to: str) -> None:
        request = parse_request({"to": to, "type": "SignIn", "payload": {"code": "482913"}})
        await self.provider.send(self.composer.compose("email", request))
