"""The one table from a send's outcome, or any error, to the HTTP answer.

A delivered or accepted message answers with its id and status (200 ``sent``/``captured``,
202 ``queued``); everything else answers ``{"error": {"code", "message"}}`` with the error's
status, and ``Retry-After`` (whole seconds, never less than asked) when a later try can work.
aiohttp's own refusals (404, 405, 413 ...) and unexpected errors (500) get the same shape.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from ..delivery.outcome import Outcome
from ..errors import OtpServiceError, OutcomeUnknownError, ProviderError, RequestError
from ..store import StoreUnavailable

ACCEPTED = {"sent": 200, "captured": 200, "queued": 202}
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def problem(error: OtpServiceError) -> tuple[int, str, str, float | None]:
    """The status, code, message and Retry-After seconds an error answers with."""
    match error:
        case OutcomeUnknownError():
            message = (
                f"the {error.provider} provider's answer was lost, so the message may have "
                f"arrived; it was not resent: {error.reason}"
            )
            return error.status, error.code, message, None
        case ProviderError():
            verb = "refused" if error.status == 502 else "could not be reached for"
            message = f"the {error.provider} provider {verb} the message: {error.reason}"
            return error.status, error.code, message, error.retry_after
        case StoreUnavailable():  # nothing was stored, so nothing was accepted: safe to retry
            return error.status, error.code, error.message, 1.0
        case RequestError():
            return error.status, error.code, error.message, error.retry_after
    return error.status, error.code, error.message, None


def error_answer(error: OtpServiceError) -> web.Response:
    status, code, message, retry_after = problem(error)
    headers = None
    if retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return error_response(status, code, message, headers)


def answer(outcome: Outcome) -> web.Response:
    """The answer to a send request."""
    status = ACCEPTED.get(outcome.status)
    if status is None:
        assert outcome.error is not None, outcome  # refused, failed, unknown, expired
        return error_answer(outcome.error)
    body: dict[str, Any] = {"id": outcome.id, "status": outcome.status}
    if outcome.provider:
        body["provider"] = outcome.provider
    if outcome.duplicate:
        body["duplicate"] = True
    return web.json_response(body, status=status)


def http_status(outcome: Outcome) -> int:
    """The status :func:`answer` gives ``outcome``."""
    status = ACCEPTED.get(outcome.status)
    if status is None:
        assert outcome.error is not None
        return outcome.error.status
    return status


def http_error_answer(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusal of a request (no route, wrong method, body too large ...)."""
    code = _HTTP_CODES.get(exc.status, "http_error")
    allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(exc.status, code, exc.reason, allow)


def internal_error_answer() -> web.Response:
    return error_response(500, "internal_error", "unexpected error; see the service log")
