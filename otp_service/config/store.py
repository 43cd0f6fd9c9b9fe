"""The ``store`` section: SQLite (``store.path``, the embedded default) or PostgreSQL
(``store.url``, shared by replicas and workers)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .fields import Declared, Fields, section, setting

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def default_store_path() -> str:
    """``$XDG_STATE_HOME/otp-service/outbox.sqlite3`` (``~/.local/state`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "otp-service" / "outbox.sqlite3")


def redact_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hostport}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _path(f: Fields, d: Declared) -> str:
    raw = f.string(d.key)
    if raw is None:
        return default_store_path()
    return raw if raw == ":memory:" else str((f.base / raw).resolve())


def _url(f: Fields, d: Declared) -> str | None:
    url = f.string("url", fix="set store.url to postgresql://user:password@host:5432/database")
    if url is None or not url.strip():
        return None  # "${DATABASE_URL:-}" left empty: SQLite
    fix = "use postgresql://user:password@host:5432/database (e.g. store.url: ${DATABASE_URL})"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        f.problem("url", f"is not a valid URL ({redact_url(url)})", fix)
        return None
    if parts.scheme not in ("postgresql", "postgres"):
        shown = parts.scheme or "none"
        f.problem("url", f"has scheme {shown!r}; only PostgreSQL is supported", fix)
        return None
    if not parts.hostname and "host=" not in parts.query:
        f.problem("url", f"names no host ({redact_url(url)})", fix)
        return None
    if port is not None and not 0 < port < 65536:
        f.problem("url", f"has port {port}, outside 1-65535", fix)
        return None
    return url


def _schema(f: Fields, d: Declared) -> str:
    schema: str = f.string(d.key, default=d.default) or d.default
    if not _SCHEMA_NAME.match(schema):
        f.problem(
            d.key,
            f"{schema!r} is not a plain schema name",
            "use lower-case letters, digits and _ (e.g. otp_service)",
        )
    return schema


@section
class StoreConfig:
    path: str = setting(
        "the SQLite outbox file (relative to the config file; :memory: keeps nothing)",
        factory=default_store_path,
        read=_path,
        schema={"type": "string"},
        shown="$XDG_STATE_HOME/otp-service/outbox.sqlite3",
    )
    retention_days: float = setting(
        "finished messages are kept this long", default=7.0, minimum=0.01
    )
    url: str | None = setting(
        "postgresql://user:password@host:5432/db: PostgreSQL instead of the SQLite file",
        default=None,
        secret=True,  # holds a password
        read=_url,
        schema={"type": ["string", "null"], "pattern": r"^(postgres(ql)?://|\$\{|$)"},
    )
    pool_size: int = setting(
        "PostgreSQL connections per process", default=10, minimum=1, maximum=200
    )
    schema: str = setting(
        "the PostgreSQL schema holding our tables",
        default="otp_service",
        read=_schema,
        schema={"type": "string", "pattern": _SCHEMA_NAME.pattern},
    )

    @property
    def backend(self) -> str:
        return "postgresql" if self.url else "sqlite"

    @property
    def shown(self) -> str:
        """Where the store is, safe to print (a URL's password is masked)."""
        return redact_url(self.url) if self.url else self.path
