"""ZITADEL's HTTP SMS and HTTP email providers: the ``intakes.zitadel`` section (its hook is
:mod:`otp_service.intake.zitadel`).
"""

from __future__ import annotations

from .credentials import TOKENS_SCHEMA, secret_strings, token_problem
from .fields import section, setting

_ZITADEL_KEY_FIX = (
    "paste the signingKey ZITADEL returned when the HTTP provider was added (or its last "
    "rotation); the SMS and the email provider each have one: list both"
)


@section
class ZitadelIntakeConfig:
    """ZITADEL's HTTP SMS and HTTP email providers (ZITADEL-Signature)."""

    signing_keys: tuple[str, ...] = setting(
        "the signingKey of each ZITADEL HTTP provider (SMS, email); several: a rotation",
        secret=True, factory=tuple, read=secret_strings(token_problem, _ZITADEL_KEY_FIX),
        schema=TOKENS_SCHEMA, example=["${ZITADEL_SMS_SIGNING_KEY}"],
    )  # fmt: skip
    sms_text: str = setting(
        "zitadel: send the SMS text ZITADEL rendered, as is; templates: render ours",
        default="zitadel", choices=("zitadel", "templates"),
    )  # fmt: skip
