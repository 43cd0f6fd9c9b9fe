"""Recipients: validate and normalise a phone number, and check it may be texted.

Pure helpers: they raise :class:`ValueError` saying what is wrong; the request's translator
(:mod:`.compose`) gives it its code."""

from __future__ import annotations

import re

import phonenumbers

from ..config.sms import SmsConfig
from ..text.sanitize import has_control


def e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_phone(value: str, default_region: str | None = None) -> phonenumbers.PhoneNumber:
    """The valid phone number ``value`` names; raises :class:`ValueError`.

    Logto stores numbers with their country code but usually without ``+``, so a number
    without ``+`` is first read as international, then (when configured) as a national number
    of ``default_region``.
    """
    if has_control(value):
        raise ValueError("'to' contains control characters")
    raw = value.strip()
    digits = re.sub(r"[\s().-]", "", raw)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not re.fullmatch(r"\+?[0-9]{4,17}", digits):
        raise ValueError("'to' is not a phone number")
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
    if digits.startswith("0"):  # 0612345678: dialled within its country (00 is handled above)
        example = "e.g. 33612345678 for 0612345678 in France"
        if default_region:
            raise ValueError(
                f"'to' looks like a local number (it starts with 0) but is not a valid "
                f"{default_region} number: add its country code ({example})"
            )
        raise ValueError(
            f"'to' looks like a local number (it starts with 0): add its country code "
            f"({example}), or set sms.default_region to the country of such numbers"
        )
    raise ValueError("'to' is not a valid phone number")


def check_destination(parsed: phonenumbers.PhoneNumber, sms: SmsConfig) -> None:
    """Refuse (:class:`ValueError`) a destination outside the allowed countries or a
    premium-rate number."""
    region = phonenumbers.region_code_for_number(parsed) or "ZZ"
    refused = (sms.allow_countries and region not in sms.allow_countries) or (
        region in sms.deny_countries
    )
    if phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.PREMIUM_RATE:
        raise ValueError("premium-rate numbers are refused")
    if refused:
        raise ValueError(f"SMS to {region} numbers is not allowed here")


def region_of(e164_number: str) -> str:
    """The ISO country of an E.164 number (``ZZ`` when none): a bounded label for metrics."""
    try:
        parsed = phonenumbers.parse(e164_number, None)
    except phonenumbers.NumberParseException:
        return "ZZ"
    return phonenumbers.region_code_for_number(parsed) or "ZZ"
