"""What every handler shares: the application keys, token check and the JSON error shape."""

from __future__ import annotations

import hmac

from aiohttp import web

from ..config import Config
from ..errors import UnauthorizedError
from ..services import Services

SERVICES = web.AppKey("services", Services)
CONFIG = web.AppKey("config", Config)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def authorize(request: web.Request) -> None:
    """Raise 401 unless the request carries ``Authorization: Bearer <one of auth.tokens>``
    (nothing to check when no tokens are configured)."""
    tokens = request.app[CONFIG].auth.tokens
    if not tokens:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise UnauthorizedError()
    given = presented.strip().encode("utf-8", "surrogateescape")  # headers may not be UTF-8
    # Compare with every token, always, so timing tells nothing about which one came close.
    matches = [hmac.compare_digest(given, token.encode()) for token in tokens]
    if not any(matches):
        raise UnauthorizedError()
