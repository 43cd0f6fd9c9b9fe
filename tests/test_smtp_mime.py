"""The header lines of a code mail, against what Python's ``email.header`` writes."""

from __future__ import annotations

import dataclasses
from email.header import Header

from hypothesis import example, given, settings
from hypothesis import strategies as st

from otp_service.config import parse_config
from otp_service.message.compose import parse_request
from otp_service.providers.mime import build_email
from otp_service.services import build_services

TEMPLATES = [
    {"usageType": usage, "contentType": "text/plain", "subject": "Code", "content": "{{code}}"}
    for usage in ("SignIn", "Register", "ForgotPassword", "Generic")
]
SMTP = {
    "host": "127.0.0.1", "port": 25, "fromEmail": "no-reply@acme.example", "templates": TEMPLATES,
    "customHeaders": {"X-Campaign-Reference-Identifier": "otp sign-in"},
}  # fmt: skip
CONFIG = parse_config(
    {"email": {"provider": "smtp", "smtp": SMTP}, "templates": {"bundled": False}}
)
SERVICES = build_services(CONFIG)
MESSAGE = SERVICES.composer.compose(
    "email", parse_request({"to": "ana@example.com", "type": "SignIn", "payload": {"code": "1"}})
)
ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(" \t"))
# Any text without control characters (the composer refuses them before a header is written).
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=90)
WORD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=14)
WORDS = st.lists(WORD, min_size=1, max_size=14).map(" ".join)  # around the 78-column fold
SUBJECTS = ASCII | WORDS | TEXT | st.builds(lambda a, b: a + "=?" + b, ASCII, ASCII)
FITS = "Your sign-in code for Acme Corporation customer portal valid ten mins"  # 78 columns


def header_line(data: bytes, name: str) -> str:
    """The header ``name`` as written, folded lines included."""
    text = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    start = text.index(f"\r\n{name}: ") + 2
    end = start
    while True:
        end = text.index("\r\n", end) + 2
        if end >= len(text) or text[end] not in " \t":
            return text[start:end]


def expected(name: str, value: str) -> str:
    plain = value.isascii() and "=?" not in value and all(len(w) <= 60 for w in value.split())
    encoded = Header(value, "us-ascii" if plain else "utf-8", header_name=name).encode(
        linesep="\r\n"
    )
    return f"{name}: {encoded}\r\n"


@settings(max_examples=400, deadline=None)
@given(subject=SUBJECTS)
@example(subject=FITS)
@example(subject=FITS + "s")  # one column more: folded
@example(subject="")
def test_subject_header_is_written_as_email_header_writes_it(subject: str) -> None:
    """Any subject (short or long, ASCII or not, '=?' in it) reads as email.header writes it:
    one line when it fits, else folded at 78 columns or RFC 2047 encoded words."""
    message = dataclasses.replace(MESSAGE, subject=subject)
    data = build_email(message, CONFIG.email.smtp).data  # type: ignore[arg-type]
    assert header_line(data, "Subject") == expected("Subject", subject)


def test_custom_header_is_written_as_email_header_writes_it() -> None:
    """A connector's customHeaders entry goes out as email.header writes it."""
    data = build_email(MESSAGE, CONFIG.email.smtp).data  # type: ignore[arg-type]
    name = "X-Campaign-Reference-Identifier"
    assert header_line(data, name) == expected(name, "otp sign-in") == f"{name}: otp sign-in\r\n"
