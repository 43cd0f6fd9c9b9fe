"""Finding the one-time code in a message someone else wrote (mail caught by the SMTP intake)."""

from __future__ import annotations

import re

# No digit, separator or letter may touch a code ("555-1234", "v2.10", "1234abc" are not codes);
# a full stop may follow it at the end of a sentence.
_BEFORE = r"(?<![\w.,:/-])"
_AFTER = r"(?![\w,:/-]|\.\w)"
# A code after a word that announces one ("code: 123456", "PIN 1234", 验证码 123456).
_NEAR_WORD = re.compile(
    r"(?:code|passcode|password|otp|pin|token|验证码|驗證碼|認証コード|コード|인증번호)"
    rf"[^\d\n]{{0,40}}?{_BEFORE}(\d{{4,8}}){_AFTER}",
    re.IGNORECASE,
)
_ALONE = re.compile(rf"{_BEFORE}(\d{{4,8}}){_AFTER}")
_YEAR = re.compile(r"(19|20)\d\d")


def find_code(*texts: str | None) -> str | None:
    """The likeliest one-time code in ``texts`` (subject, body, ...): one announced by a word
    like "code", else a six-digit number standing alone, else one of four to eight digits that
    is not a year; None when there is none."""
    parts = [text for text in texts if text]
    for text in parts:
        if match := _NEAR_WORD.search(text):
            return match.group(1)
    alone = [m.group(1) for text in parts for m in _ALONE.finditer(text)]
    for number in alone:
        if len(number) == 6:
            return number
    for number in alone:
        if not _YEAR.fullmatch(number):
            return number
    return None
