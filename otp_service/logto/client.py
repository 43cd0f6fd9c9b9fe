"""A small client of Logto's Management API: a client-credentials token, then the email templates.

Wire format (https://docs.logto.io/integrate-logto/interact-with-management-api):

- ``POST <endpoint>/oidc/token`` with HTTP Basic ``app_id:app_secret`` and the form
  ``grant_type=client_credentials``, ``resource``, ``scope=all``; the answer is
  ``{"access_token", "expires_in", "token_type": "Bearer", "scope"}``, an OAuth error
  ``{"error": "invalid_client", ...}`` (400/401) when the app or secret is wrong.
- ``GET <endpoint>/api/email-templates`` with ``Authorization: Bearer <token>``: a JSON array of
  ``{id, tenantId, languageTag, templateType, details: {subject, content, contentType?, replyTo?,
  sendFrom?}, createdAt}``. Logto does not paginate this route (its guard in
  ``packages/core/src/routes/email-template`` has no pagination): one request reads every row.

The token is renewed before it expires; a 401 on a token we thought valid (revoked, a clock
apart, Logto restarted with new keys) renews it once and retries. Nothing here logs or raises
the secret or a token.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from ..config.logto import LogtoConfig
from ..errors import LogtoApiError

_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")
_MAX_PAGES = 1000


@dataclass(frozen=True)
class LogtoTemplate:
    """One row of Logto's ``email_templates``: a template for one type in one language."""

    language_tag: str
    template_type: str
    subject: str
    content: str
    content_type: str = "text/html"  # Logto's SMTP connector sends HTML unless text/plain
    reply_to: str | None = None
    send_from: str | None = None


def _optional(details: dict[str, Any], key: str) -> str | None:
    value = details.get(key)
    return value if isinstance(value, str) and value.strip() else None


def parse_templates(data: Any) -> tuple[list[LogtoTemplate], list[str]]:
    """The rows of ``GET /api/email-templates``, and a problem for each row we cannot use."""
    if not isinstance(data, list):
        raise LogtoApiError("Logto's /api/email-templates did not answer a list")
    rows: list[LogtoTemplate] = []
    problems: list[str] = []
    for index, row in enumerate(data):
        tag = row.get("languageTag") if isinstance(row, dict) else None
        usage = row.get("templateType") if isinstance(row, dict) else None
        details = row.get("details") if isinstance(row, dict) else None
        where = f"{tag}/{usage}" if isinstance(tag, str) and isinstance(usage, str) else f"#{index}"
        if not (isinstance(tag, str) and isinstance(usage, str) and isinstance(details, dict)):
            problems.append(f"{where}: not a template row")
            continue
        subject, content = details.get("subject"), details.get("content")
        if not isinstance(subject, str) or not isinstance(content, str):
            problems.append(f"{where}: subject and content must be text")
            continue
        content_type = details.get("contentType")
        rows.append(
            LogtoTemplate(
                language_tag=tag,
                template_type=usage,
                subject=subject,
                content=content,
                content_type="text/plain" if content_type == "text/plain" else "text/html",
                reply_to=_optional(details, "replyTo"),
                send_from=_optional(details, "sendFrom"),
            )
        )
    return rows, problems


class LogtoClient:
    """Reads Logto's email templates with an M2M app's credentials; one HTTP session."""

    def __init__(self, config: LogtoConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._renew_at = 0.0
        self.tokens_fetched = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
                headers={"User-Agent": "otp-service"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _basic(self) -> dict[str, str]:
        # client_secret_basic: each part form-encoded, then base64 (RFC 6749 section 2.3.1).
        pair = f"{quote(self.config.app_id, safe='')}:{quote(self.config.app_secret, safe='')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    async def _fetch_token(self) -> str:
        url = f"{self.config.endpoint}/oidc/token"
        form = {
            "grant_type": "client_credentials",
            "resource": self.config.resource,
            "scope": "all",
        }
        try:
            async with self._http().post(url, data=form, headers=self._basic()) as response:
                status = response.status
                body = await response.json(content_type=None) if status < 500 else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise LogtoApiError(f"cannot reach {url}: {_reason(exc)}") from None
        if status >= 500:
            raise LogtoApiError(f"{url} answered HTTP {status}")
        if status != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            shown = error if isinstance(error, str) and _OAUTH_ERROR.match(error) else "refused"
            raise LogtoApiError(
                f"Logto refused the app's credentials (HTTP {status}, {shown}): check "
                "templates.logto.endpoint (Logto's core endpoint, not the admin console's), "
                "app_id, app_secret and resource",
                refused=True,
            )
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token:
            raise LogtoApiError(f"{url} answered without an access_token")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = 60.0
        # Renew ahead of expiry: a fifth of the lifetime, at most a minute early.
        self._renew_at = self._clock() + lifetime - min(60.0, lifetime / 5)
        self._token = token
        self.tokens_fetched += 1
        return token

    async def token(self) -> str:
        """A valid access token: the cached one until it nears expiry, else a new one."""
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        return await self._fetch_token()

    async def _get(self, url: str, params: dict[str, str]) -> tuple[Any, str | None]:
        """One authorised GET: (the JSON body, the Total-Number header when Logto pages)."""
        for attempt in range(2):
            token = await self.token() if attempt == 0 else await self._fetch_token()
            try:
                async with self._http().get(
                    url, params=params, headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    status, total = response.status, response.headers.get("Total-Number")
                    body = await response.json(content_type=None) if status == 200 else None
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                raise LogtoApiError(f"cannot read {url}: {_reason(exc)}") from None
            if status == 401 and attempt == 0:
                self._token = None  # stale or revoked: renew once
                continue
            if status in (401, 403):
                raise LogtoApiError(
                    f"Logto refused to list email templates (HTTP {status}): give the "
                    "machine-to-machine app a role with the Management API permission 'all'",
                    refused=True,
                )
            if status != 200:
                raise LogtoApiError(f"{url} answered HTTP {status}")
            return body, total
        raise AssertionError("unreachable")  # pragma: no cover

    async def email_templates(self) -> tuple[list[LogtoTemplate], list[str]]:
        """Every email template row (and the rows we cannot use); raises LogtoApiError."""
        url = f"{self.config.endpoint}/api/email-templates"
        body, total = await self._get(url, {})
        if not isinstance(body, list):
            raise LogtoApiError(f"{url} did not answer a list")
        rows = list(body)
        # Logto's paginated routes answer Total-Number (koa-pagination); this one does not
        # today, but should it start to, read the following pages at the size it chose.
        wanted = int(total) if total is not None and total.isdigit() else 0
        size, page = len(rows), 1
        while size and len(rows) < wanted and page < _MAX_PAGES:
            page += 1
            more, _ = await self._get(url, {"page": str(page), "page_size": str(size)})
            if not isinstance(more, list) or not more:
                break
            rows.extend(more)
        return parse_templates(rows)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, ValueError):
        return "the answer is not JSON"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connection failed ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return type(exc).__name__
