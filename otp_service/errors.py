"""The project's exceptions.

Every error a caller can see carries a stable machine ``code``, an HTTP ``status`` and a short
``message`` that never holds a secret, a token or the one-time code. The HTTP layer turns each
into its answer in one table (:mod:`otp_service.http.answers`). Pure helpers (``text/``,
``message/recipients``) raise plain :class:`ValueError`; their callers translate it into a
:class:`RequestError` with a code::

    OtpServiceError
    ├── ConfigError                 the configuration is invalid (start-up, check-config)
    ├── LogtoApiError               Logto's Management API could not be read (templates.logto)
    ├── RequestError                the caller's request is refused (4xx; 503 while draining)
    │   ├── TemplateNotFoundError   no template for the type and no Generic (422)
    │   ├── TemplateRenderError     a template failed to render (422; the file for the log)
    │   ├── UnauthorizedError       missing or wrong Authorization (401)
    │   ├── ForbiddenError          the token lacks the scope the route needs (403)
    │   ├── HostNotAllowed          a Host the service is not reached by (421)
    │   ├── RateLimitedRequest      an abuse limit refused it (429 + Retry-After; ``rule``)
    │   ├── ReceiptRefused          a delivery receipt unsigned, forged or malformed (401/400)
    │   ├── IdempotencyKeyBusy      a request with the same key is still deciding (409)
    │   └── ShuttingDownError       the service is draining (503 + Retry-After)
    ├── MessageExpired              the message's lifetime ran out before delivery (502)
    ├── EarlierFailure              a repeat of a request that failed for good (502)
    ├── StoreError                  the message store (a caller gets 503: nothing was accepted)
    │   ├── StoreUnavailable        cannot take a durable write now (I/O, full disk, unreachable)
    │   ├── StoreRefused            PostgreSQL refused our credentials: a configuration problem
    │   ├── WriteRefused            refused one write for good (a value it cannot hold)
    │   └── SchemaTooNewError       the database was migrated by a newer otp-service
    └── ProviderError               a provider did not deliver
        ├── PermanentProviderError  refused for good, retrying cannot help (502)
        │   ├── OutcomeUnknownError  sent, no answer: answered as unknown, never retried (502)
        │   └── AccountRefusedError  refused by this provider's account: the next one is tried
        └── TransientProviderError  may work later (503); ``retry_after`` when known
            └── RateLimitedError    the provider's own rate limit (429)
"""

from __future__ import annotations

from dataclasses import dataclass


class OtpServiceError(Exception):
    """Root of every error raised by otp-service."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration: where it is, what is wrong and how to fix it."""

    path: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem} (fix: {self.fix})"


class ConfigError(OtpServiceError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    code = "invalid_config"

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class LogtoApiError(OtpServiceError):
    """Reading templates from Logto failed; ``refused`` when Logto refused our credentials
    (as opposed to being unreachable or answering nonsense). Never reaches a caller of the API:
    sends fall back to other templates."""

    code = "logto_unavailable"
    status = 503

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class RequestError(OtpServiceError):
    """The caller sent something we refuse."""

    def __init__(
        self, code: str, message: str, status: int = 400, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retry_after = retry_after


class UnauthorizedError(RequestError):
    """Authorization header missing or not one of the configured tokens."""

    def __init__(self, message: str = "missing or invalid Authorization header") -> None:
        super().__init__("unauthorized", message, 401)


class ForbiddenError(RequestError):
    """The token is valid but lacks the scope the route needs (``auth.tokens[].scopes``)."""

    def __init__(self, scope: str) -> None:
        super().__init__(
            "insufficient_scope",
            f"this token lacks the {scope} scope (auth.tokens[].scopes)",
            403,
        )
        self.scope = scope


class HostNotAllowed(RequestError):
    """The request's Host is not a name the service is reached by (421; against DNS
    rebinding: ``server.allowed_hosts``)."""

    def __init__(self) -> None:
        super().__init__(
            "host_not_allowed",
            "this service does not answer to this Host name; if it is one it is reached by, "
            "add it to server.allowed_hosts",
            421,
        )


class RateLimitedRequest(RequestError):
    """A configured abuse limit refused the request; ``rule`` names the limit in the config
    (per_ip, per_recipient, per_sms_prefix)."""

    def __init__(self, what: str, retry_after: float, rule: str) -> None:
        super().__init__(
            "rate_limited", f"too many messages for this {what}; try again later", 429, retry_after
        )
        self.rule = rule


class ReceiptRefused(RequestError):
    """A delivery receipt refused before it could touch any message: unsigned, forged or
    malformed (``code``: receipt_unsigned, receipt_forged, receipt_invalid ...); counted per
    ``provider``."""

    def __init__(self, provider: str, code: str, message: str, status: int = 401) -> None:
        super().__init__(code, message, status)
        self.provider = provider


class IdempotencyKeyBusy(RequestError):
    """Another request with the same Idempotency-Key is still being decided (409 + Retry-After)."""

    def __init__(self) -> None:
        super().__init__(
            "idempotency_key_in_use",
            "another request with this Idempotency-Key is still being processed; retry shortly",
            409,
            1.0,
        )


class ShuttingDownError(RequestError):
    """The service stops taking sends: come back after ``retry_after`` seconds, when another
    instance has taken over the listener."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "shutting_down", "the service is shutting down; retry shortly", 503, retry_after
        )


class MessageExpired(OtpServiceError):
    """The message's lifetime ran out before a provider took it (no attempt could start in
    time, or every attempt failed transiently until then)."""

    code = "message_expired"
    status = 502

    def __init__(self, message: str = "this message expired before it was delivered") -> None:
        super().__init__(message)


class TemplateNotFoundError(RequestError):
    """No template for the requested type, and no Generic template either."""

    def __init__(self, channel: str, usage_type: str) -> None:
        super().__init__(
            "template_not_found",
            f"no {channel} template for type {usage_type!r} and no Generic template",
            422,
        )


class TemplateRenderError(RequestError):
    """A template compiled but failed to render this request: 422 ``template_error``.

    The answer says only that; ``template`` (the file, or where in the config), ``locale`` and
    ``detail`` (the Jinja error with its line, the payload's values masked) are for the log."""

    def __init__(self, message: str, *, template: str, locale: str, detail: str) -> None:
        super().__init__("template_error", message, 422)
        self.template = template
        self.locale = locale
        self.detail = detail


class StoreError(OtpServiceError):
    """The message store failed; nothing was accepted, so a caller may retry."""

    code = "store_unavailable"
    status = 503


class StoreUnavailable(StoreError):
    """The store cannot take a durable write right now (I/O error, full disk, file gone,
    database unreachable): a later write may succeed."""

    def __init__(self, message: str = "the message store is unavailable; retry shortly") -> None:
        super().__init__(message)


class StoreRefused(StoreError):
    """PostgreSQL answered, and refused us: a configuration problem, not an outage."""

    code = "store_refused"

    def __init__(self, exc: Exception) -> None:
        super().__init__(
            f"PostgreSQL refused the connection: {type(exc).__name__}: {exc} "
            "(fix: check the user, password and database name in store.url)"
        )


class WriteRefused(StoreError):
    """The store refused one write for good (a value it cannot hold, a constraint): retrying
    cannot help, so the message it belongs to fails with this reason instead of waiting."""

    code = "store_refused_write"


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer otp-service than this one."""

    code = "schema_too_new"


_REASON_CHARS = 100


def short_reason(text: str) -> str:
    """One plain line of at most 100 characters: what a caller (and an end user) may read."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 1].rstrip() + "…"


def _mask(text: str, secret: str) -> str:
    masked = text.replace(secret, "******")
    # A text cut to length may end with the first digits of the code.
    tail = masked.removesuffix("…")
    for size in range(len(secret) - 1, 2, -1):
        if tail.endswith(secret[:size]):
            return tail[:-size] + "******" + masked[len(tail) :]
    return masked


class ProviderError(OtpServiceError):
    """A provider did not deliver the message.

    ``detail`` is the provider's own explanation for the operator (already free of secrets;
    stored with the attempt and logged); ``reason`` is the short plain version a caller gets in
    the error body, which Logto shows on its sign-in page: no raw reply, host or address.
    ``transient`` says whether a later attempt could succeed; ``failover`` whether the route's
    next provider may still deliver it now (nothing went out).
    """

    transient = False
    failover = False

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail
        self.reason = short_reason(detail if reason is None else reason)
        self.retry_after = retry_after

    def redact(self, secret: str | None) -> None:
        """Mask ``secret`` (the one-time code) should a provider have echoed it back."""
        if not secret:
            return
        detail, self.reason = _mask(self.detail, secret), _mask(self.reason, secret)
        if detail != self.detail:
            self.detail = detail
            self.message = f"{self.provider}: {self.detail}"
            self.args = (self.message,)


class PermanentProviderError(ProviderError):
    """The provider refused the message; retrying will not help."""

    code = "provider_rejected"
    status = 502


class TransientProviderError(ProviderError):
    """The provider could not be reached or asked us to come back later."""

    code = "provider_unavailable"
    status = 503
    transient = True
    failover = True


class OutcomeUnknownError(PermanentProviderError):
    """The request reached the provider but no answer came back (connection dropped, read
    timeout): the message may have gone out, so it is neither retried nor failed over."""

    code = "provider_outcome_unknown"


class AccountRefusedError(PermanentProviderError):
    """This provider's account refuses the message for a reason of its own (a destination
    region not enabled, a trial account's unverified number, no credit left): retrying it will
    not help, but another provider's account may deliver it, so the route's next provider is
    tried. Only for refusals the provider documents as being about the account, never about
    the number or the text (those would fail everywhere)."""

    failover = True


class EarlierFailure(OtpServiceError):
    """A repeat of a request whose message failed for good: that failure is the answer (the
    provider's reason is not kept with the message)."""

    code = "provider_rejected"
    status = 502

    def __init__(self) -> None:
        super().__init__("an identical earlier request failed to deliver")


class RateLimitedError(TransientProviderError):
    """The provider throttled us (its rate limit or quota window)."""

    code = "provider_rate_limited"
    status = 429
