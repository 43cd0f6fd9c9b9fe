"""Logto's Twilio SMS connector JSON (``sms.twilio``), modelled field for field.

Logto's connector (packages/connectors/connector-twilio-sms) holds ``accountSID``,
``authToken``, ``fromMessagingServiceSID``, ``templates`` (``{usageType, content}``), and in
recent versions ``host`` (a regional API host such as ``api.dublin.ie1.twilio.com``) and
``disableRiskCheck``. ``sms.endpoints.twilio.host`` still wins over ``host`` (a local fake).
"""

from __future__ import annotations

import re

from .fields import Declared, Fields, read_entries, section, setting

# Logto's own check of ``host``: a Twilio API host name, nothing else (no scheme, port, path).
_HOST = re.compile(r"^api(?:\.[\da-z](?:[\da-z-]{0,61}[\da-z])?)*\.twilio\.com$")
DEFAULT_HOST = "api.twilio.com"


@section
class TwilioTemplate:
    """One entry of the connector's ``templates``: the SMS text of a usage type."""

    usage_type: str = setting("the usage type (SignIn, Register, ...)", key="usageType")
    content: str = setting("the text, with {{code}} and Logto's other placeholders")


def _templates(f: Fields, d: Declared) -> tuple[tuple[str, str], ...]:
    entries = read_entries(TwilioTemplate, f, d.key, required=True)
    if entries is None:
        return ()
    f.require_usage_types(d.key, (t.usage_type for t in entries))
    return tuple((t.usage_type, t.content) for t in entries)


def _host(f: Fields, d: Declared) -> str | None:
    host = f.string(d.key)
    if host is not None and (len(host) > 253 or not _HOST.match(host.lower())):
        f.problem(
            d.key, "must be a Twilio API host name",
            "e.g. api.twilio.com or api.dublin.ie1.twilio.com (no https://, port or path)",
        )  # fmt: skip
        return None
    return host.lower() if host else None


@section
class TwilioConfig:
    """Logto's Twilio SMS connector: ``accountSID``, ``authToken``,
    ``fromMessagingServiceSID``, ``templates`` (and ``host``, ``disableRiskCheck``)."""

    account_sid: str = setting(
        "the Account SID (AC...)", key="accountSID",
        fix="copy the Account SID from the Twilio console (Account > API keys & tokens)",
    )  # fmt: skip
    auth_token: str = setting(
        "the Auth Token", key="authToken", secret=True,
        fix="set authToken, e.g. ${TWILIO_AUTH_TOKEN}",
    )  # fmt: skip
    messaging_service_sid: str = setting(
        "the Messaging Service SID (MG...) whose senders send the SMS",
        key="fromMessagingServiceSID",
        fix="copy the Sid of the Messaging Service (Messaging > Services)",
    )
    templates: tuple[tuple[str, str], ...] = setting(
        "the SMS text per usage type (Register, SignIn, ForgotPassword and Generic required)",
        read=_templates,
        schema={"type": "array", "items": TwilioTemplate},
    )  # (usageType, content)
    host: str | None = setting(
        "the regional API host (Logto's field); sms.endpoints.twilio.host wins over it",
        default=None,
        read=_host,
        schema={
            "type": ["string", "null"],
            "maxLength": 253,
            "pattern": _HOST.pattern.replace("a-z", "A-Za-z"),
        },
    )
    disable_risk_check: bool = setting(
        "send RiskCheck=disable (Twilio's SMS pumping protection off), as Logto's switch does",
        default=False,
        key="disableRiskCheck",
    )

    def text_templates(self) -> tuple[tuple[str, str], ...]:
        """The SMS texts this connector carries, (usage type, template)."""
        return self.templates
