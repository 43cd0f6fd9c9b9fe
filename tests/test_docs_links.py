"""The README, CONTRIBUTING.md and CHANGELOG.md link only to files and headings that exist.

Pages inside docs/ are checked by ``mkdocs build --strict`` (scripts/test.sh); these files live
outside the site, so their links to docs/ pages and their anchors are checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """The heading anchors a Markdown page has, as MkDocs and GitHub spell them."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)
    return {slugify(heading.replace("`", ""), "-") for heading in headings}


def local_links(page: Path) -> list[str]:
    """Relative link targets outside code blocks and code spans (which show links as text)."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"])
def test_links_reach_files_and_headings(name: str) -> None:
    page = ROOT / name
    links = local_links(page)
    assert links, f"{name} links to nothing in the repository"
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{name} links to {path}, which does not exist"
        if anchor:
            assert anchor in anchors(target), f"{name} links to {link}: no such heading"


def test_anchor_check_sees_a_heading_and_misses_a_wrong_one() -> None:
    """The heading slugs are the ones the links use (so the check above can fail)."""
    found = anchors(ROOT / "docs" / "templates.md")
    assert "using-logtos-email-templates" in found
    assert "what-each-logto-version-sends" in found
    assert "using-logto-s-email-templates" not in found
