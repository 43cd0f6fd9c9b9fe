"""Logto's Vonage SMS connector JSON (``sms.vonage``), modelled field for field."""

from __future__ import annotations

from .fields import Declared, Fields, read_entries, section, setting


@section
class VonageTemplate:
    """One entry of the connector's ``templates``: the SMS text of a usage type."""

    usage_type: str = setting("the usage type (SignIn, Register, ...)", key="usageType")
    content: str = setting("the text, with {{code}} and Logto's other placeholders")


def _templates(f: Fields, d: Declared) -> tuple[tuple[str, str], ...]:
    entries = read_entries(VonageTemplate, f, d.key, required=True)
    if entries is None:
        return ()
    f.require_usage_types(d.key, (t.usage_type for t in entries))
    return tuple((t.usage_type, t.content) for t in entries)


@section
class VonageConfig:
    """Logto's Vonage SMS connector: ``apiKey``, ``apiSecret``, ``brandName``, ``templates``."""

    api_key: str = setting(
        "the API key", key="apiKey", fix="copy the API key from the Vonage dashboard"
    )
    api_secret: str = setting(
        "the API secret", key="apiSecret", secret=True,
        fix="set apiSecret, e.g. ${VONAGE_API_SECRET}",
    )  # fmt: skip
    brand_name: str = setting(
        "the sender id shown", key="brandName", fix="set brandName, the sender id shown"
    )
    templates: tuple[tuple[str, str], ...] = setting(
        "the SMS text per usage type (Register, SignIn, ForgotPassword and Generic required)",
        read=_templates,
        schema={"type": "array", "items": VonageTemplate},
    )  # (usageType, content)

    signature_secret: str | None = setting(
        "the signature secret of the account's API settings: delivery receipts must then be "
        "signed with it (not in Logto's connector; add it)",
        default=None, key="signatureSecret", secret=True,
    )  # fmt: skip
    signature_method: str = setting(
        "the account's signature method (md5hash, or an HMAC: md5, sha1, sha256, sha512)",
        default="md5hash", key="signatureMethod",
        choices=("md5hash", "md5", "sha1", "sha256", "sha512"),
    )  # fmt: skip

    def receipts_unsigned(self) -> bool:
        """Whether delivery receipts are taken without a signature (no signatureSecret)."""
        return self.signature_secret is None

    def text_templates(self) -> tuple[tuple[str, str], ...]:
        """The SMS texts this connector carries, (usage type, template)."""
        return self.templates
