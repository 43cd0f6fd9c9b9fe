"""What every handler shares: the application keys, token check and the JSON error shape.

The handlers see the wired services through :class:`AppServices`, the part of the wiring they
use: only the app factory knows the wiring module (:mod:`otp_service.services`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol

from aiohttp import web

from ..config import SCOPES, Config
from ..delivery.limits import Limiter
from ..delivery.outbox import Outbox
from ..delivery.send import SendPath
from ..errors import ForbiddenError, UnauthorizedError
from ..intake.smtp import SmtpIntake
from ..logto.sync import TemplateSync
from ..metrics import Metrics
from ..providers.base import ReceiptReader
from ..store import Inbox, OutboxStore


class AppServices(Protocol):
    """What the HTTP handlers use of the services the app factory wires."""

    @property
    def sender(self) -> SendPath: ...
    @property
    def inbox(self) -> Inbox: ...
    @property
    def store(self) -> OutboxStore: ...
    @property
    def limiter(self) -> Limiter: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def logto(self) -> TemplateSync | None: ...
    @property
    def intake(self) -> SmtpIntake | None: ...
    @property
    def receipt_readers(self) -> Mapping[str, ReceiptReader]: ...

    def provider_names(self) -> list[str]: ...


SERVICES: web.AppKey[AppServices] = web.AppKey("services")
CONFIG = web.AppKey("config", Config)


def authorize(request: web.Request, scope: str) -> None:
    """Raise 401 unless the request carries ``Authorization: Bearer <one of auth.tokens>``, and
    403 when that token lacks ``scope`` (send, read, admin). Nothing to check when no tokens
    are configured (loopback only, unless the operator said otherwise)."""
    assert scope in SCOPES, scope
    tokens = request.app[CONFIG].auth.tokens
    if not tokens:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise UnauthorizedError()
    given = presented.strip().encode("utf-8", "surrogateescape")  # headers may not be UTF-8
    # Digests of equal length, compared with every token, always: timing tells nothing about
    # which token came close, nor how long one is.
    digest = hashlib.sha256(given).digest()
    found = None
    for token in tokens:
        if hmac.compare_digest(digest, hashlib.sha256(token.value.encode()).digest()):
            found = token
    if found is None:
        raise UnauthorizedError()
    if scope not in found.scopes:
        raise ForbiddenError(scope)
