"""The service in-process over real HTTP (the ``service`` fixture), and files for its config."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

# The ``service`` fixture: start the service from a config mapping (and the folder its relative
# paths are read from); an HTTP client bound to it.
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Create ``files`` (relative path → text) under ``root``; returns ``root``."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
