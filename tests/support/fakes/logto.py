"""A fake of Logto's token endpoint and Management API email templates, over real HTTP.

Wire format, as Logto serves it (https://docs.logto.io/integrate-logto/interact-with-management-api,
``packages/core/src/routes/email-template``):

- ``POST /oidc/token``, HTTP Basic ``app_id:app_secret``, form ``grant_type=client_credentials``,
  ``resource``, ``scope``: ``{"access_token", "expires_in", "token_type": "Bearer", "scope"}``;
  ``401 {"error": "invalid_client"}`` for a wrong app or secret, ``400 {"error":
  "invalid_target"}`` for an unknown resource.
- ``GET /api/email-templates[?languageTag=&templateType=]`` with ``Authorization: Bearer``: the
  JSON array of rows ``{tenantId, id, languageTag, templateType, details: {subject, content,
  contentType?, replyTo?, sendFrom?}, createdAt}``, not paginated (unless
  :attr:`FakeLogto.page_size` is set: then ``page``/``page_size`` and a ``Total-Number`` header,
  as Logto's other list routes); ``401`` for a missing, unknown, expired or revoked token.

Tokens expire after :attr:`FakeLogto.token_lifetime` seconds; :meth:`revoke_tokens` makes every
token issued so far stale at once (what a Logto restart with new signing keys does).
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web

from . import FakeServer, Recorded, Reply, started

__all__ = ["APP_ID", "APP_SECRET", "FakeLogto", "fake_logto", "logto_row"]

APP_ID = "m2m-otp-service"
APP_SECRET = "LogtoM2MS3cretValue"
RESOURCE = "https://default.logto.app/api"


def logto_row(
    language: str, usage: str, subject: str, content: str, **details: str
) -> dict[str, Any]:
    """One row of ``GET /api/email-templates`` (``details`` adds contentType, replyTo, ...)."""
    return {
        "tenantId": "default",
        "id": uuid.uuid4().hex[:21],
        "languageTag": language,
        "templateType": usage,
        "details": {"subject": subject, "content": content, **details},
        "createdAt": int(time.time() * 1000),
    }


class FakeLogto(FakeServer):
    """Logto's ``/oidc/token`` and ``/api/email-templates`` on ``http://127.0.0.1:port``."""

    def __init__(self, *, port: int = 0, token_lifetime: float = 3600) -> None:
        super().__init__(port=port)
        self.token_lifetime = token_lifetime
        self.templates: list[dict[str, Any]] = []
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.refused = 0  # list requests answered 401 (a stale or unknown token)
        self.page_size: int | None = None  # answer pages, as Logto's koa-pagination does

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/oidc/token", self.handle),
            web.get("/api/email-templates", self.handle),
        ]

    # what a test does

    def set_templates(self, *rows: dict[str, Any]) -> None:
        with self.lock:
            self.templates = list(rows)

    def revoke_tokens(self) -> None:
        with self.lock:
            self._tokens.clear()

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The ``templates.logto`` config that points otp-service at this fake."""
        return {
            "endpoint": self.url,
            "app_id": APP_ID,
            "app_secret": APP_SECRET,
            "refresh_seconds": 300,
            "timeout_seconds": 2,
        } | overrides

    @property
    def token_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/oidc/token"]

    @property
    def list_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/email-templates"]

    # the server side

    def default_reply(self, request: Recorded) -> Reply:
        if request.path == "/oidc/token":
            return self._token(request)
        return self._list(request)

    def _token(self, request: Recorded) -> Reply:
        scheme, _, encoded = (request.header("Authorization") or "").partition(" ")
        app_id, _, secret = (
            base64.b64decode(encoded).decode().partition(":") if scheme == "Basic" else ("", "", "")
        )
        if (unquote(app_id), unquote(secret)) != (APP_ID, APP_SECRET):
            return Reply(
                status=401,
                json={
                    "error": "invalid_client",
                    "error_description": "client authentication failed",
                },
            )
        form = request.form
        if form.get("grant_type") != "client_credentials":
            return Reply(status=400, json={"error": "unsupported_grant_type"})
        if form.get("resource") != RESOURCE:
            return Reply(
                status=400,
                json={
                    "error": "invalid_target",
                    "error_description": "resource indicator is missing, or unknown",
                },
            )
        token = secrets.token_urlsafe(24)
        with self.lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        return Reply(
            json={
                "access_token": token,
                "expires_in": self.token_lifetime,
                "token_type": "Bearer",
                "scope": form.get("scope", ""),
            }
        )

    def _list(self, request: Recorded) -> Reply:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        with self.lock:
            expiry = self._tokens.get(token) if scheme == "Bearer" else None
            rows = list(self.templates)
        if expiry is None or expiry <= time.monotonic():
            return Reply(status=401, json={"code": "auth.unauthorized", "message": "Unauthorized."})
        wanted = {k: v for k, v in request.query.items() if k in ("languageTag", "templateType")}
        found = [r for r in rows if all(r[k] == v for k, v in wanted.items())]
        if self.page_size is None:
            return Reply(json=found)
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("page_size", str(self.page_size)))
        chunk = found[(page - 1) * size : page * size]
        return Reply(json=chunk, headers={"Total-Number": str(len(found))})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response = await super().handle(request)
        if request.path == "/api/email-templates" and response.status == 401:
            with self.lock:
                self.refused += 1
        return response


@pytest.fixture
def fake_logto() -> Iterator[FakeLogto]:
    """A started :class:`FakeLogto`, stopped after the test."""
    with started(FakeLogto) as server:
        yield server
