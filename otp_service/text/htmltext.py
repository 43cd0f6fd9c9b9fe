"""A plain-text rendering of an HTML email body, for the text/plain alternative."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCKS = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr"}
_SKIP = {"style", "script", "head", "title"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr", "source"}
# Invisible characters email preheaders use as padding.
_INVISIBLE = re.compile("[\u034f\u200b-\u200f\u2007\ufeff]")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.hidden: list[str] = []  # open tags of an element hidden with display:none
        self.href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.hidden:
            if tag not in _VOID:
                self.hidden.append(tag)
            return
        style = (dict(attrs).get("style") or "").replace(" ", "").lower()
        if "display:none" in style and tag not in _VOID:
            self.hidden.append(tag)
        elif tag in _SKIP:
            self.skipping += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")
        elif tag == "a":
            self.href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if self.hidden:
            if tag in self.hidden:
                while self.hidden and self.hidden.pop() != tag:
                    pass
            return
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")
        elif tag == "a" and self.href:
            if not self.parts or self.href not in self.parts[-1]:
                self.parts.append(f" ({self.href})")
            self.href = None

    def handle_data(self, data: str) -> None:
        if not self.skipping and not self.hidden:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of ``markup``, one paragraph per block, links kept as ``text (url)``."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    text = _INVISIBLE.sub("", html.unescape("".join(parser.parts)))
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
