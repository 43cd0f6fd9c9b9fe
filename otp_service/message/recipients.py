"""Recipients: validate and normalise the ``to`` of a request, once, before anything else."""

from __future__ import annotations

import re

import phonenumbers

from ..config.sms import SmsConfig
from ..errors import RequestError
from ..text.sanitize import has_control


def normalize_phone(value: str, default_region: str | None = None) -> str:
    """The number in E.164 (``+8613800138000``), or a 400 ``invalid_phone``."""
    return e164(parse_phone(value, default_region))


def e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_phone(value: str, default_region: str | None = None) -> phonenumbers.PhoneNumber:
    """The valid phone number ``value`` names, or a 400 ``invalid_phone``.

    Logto stores numbers with their country code but usually without ``+``, so a number
    without ``+`` is first read as international, then (when configured) as a national number
    of ``default_region``.
    """
    if has_control(value):
        raise RequestError("invalid_header_value", "'to' contains control characters")
    raw = value.strip()
    digits = re.sub(r"[\s().-]", "", raw)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not re.fullmatch(r"\+?[0-9]{4,17}", digits):
        raise RequestError("invalid_phone", "'to' is not a phone number")
    candidates: list[tuple[str, str | None]] = []
    if digits.startswith("+"):
        candidates.append((digits, None))
    else:
        candidates.append(("+" + digits, None))
        if default_region:
            candidates.append((digits, default_region))
    for text, region in candidates:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return number
    raise RequestError("invalid_phone", "'to' is not a valid phone number")


def check_destination(parsed: phonenumbers.PhoneNumber, sms: SmsConfig) -> None:
    """Refuse (403) a destination outside the allowed countries or a premium-rate number."""
    region = phonenumbers.region_code_for_number(parsed) or "ZZ"
    refused = (sms.allow_countries and region not in sms.allow_countries) or (
        region in sms.deny_countries
    )
    if phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.PREMIUM_RATE:
        raise RequestError("destination_not_allowed", "premium-rate numbers are refused", 403)
    if refused:
        raise RequestError(
            "destination_not_allowed", f"SMS to {region} numbers is not allowed here", 403
        )
