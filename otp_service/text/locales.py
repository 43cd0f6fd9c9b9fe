"""The language chain of a request: which template languages to try, best first."""

from __future__ import annotations

import re
from collections.abc import Iterable

_TAG = re.compile(r"^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*$")
TAG_PATTERN = _TAG.pattern  # a language tag: en, fr-CA, zh-Hans-CN (also en_US)
_TRADITIONAL = {"hant", "tw", "hk", "mo"}


def candidates(tag: str) -> list[str]:
    """``fr-CA`` → ``fr-ca, fr``; ``zh-Hans-CN`` → ``zh-hans-cn, zh-hans, zh, zh-cn``."""
    if not _TAG.match(tag):
        return []
    parts = tag.replace("_", "-").lower().split("-")
    result = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    # Simplified Chinese is published as zh-CN; a bare or Simplified zh tag means it.
    if parts[0] == "zh" and not _TRADITIONAL.intersection(parts[1:]):
        result.append("zh-cn")
    return result


def chain(locale: object, ui_locales: object, default: str) -> list[str]:
    """Lower-cased tags to try: ``payload.locale``, each ``uiLocales`` tag, then the default."""
    tags: list[str] = []
    if isinstance(locale, str):
        tags.append(locale)
    if isinstance(ui_locales, str):
        tags.extend(ui_locales.split())
    tags.append(default)
    seen: dict[str, None] = {}
    for tag in tags:
        for candidate in candidates(tag.strip()):
            seen.setdefault(candidate, None)
    return list(seen)


def pick(wanted: Iterable[str], available: dict[str, str]) -> list[str]:
    """Available locale names in ``wanted`` order (``available``: lower-case → real name)."""
    return [available[tag] for tag in wanted if tag in available]
