"""What every identity system's hook is: a pure translator between its wire contract and the send
path. (Logto's own contract is the house one, in :mod:`otp_service.http.app`.)

Adding a system (say ``acme``) is its two modules and one registry entry:

1. its settings: a ``@section`` class in ``config/acme.py`` (the ``intakes.acme`` section, off
   unless present: its routes answer 404);
2. ``intake/acme.py``: a subclass of :class:`Hook` (``name = "acme"``) whose ``__init__`` takes
   those settings, with its OpenAPI entry as the class's ``doc`` (:class:`~.doc.HookDoc`:
   summary, bodies, security schemes; ``tests/test_openapi.py`` requires it);
3. one ``Intake`` entry in :data:`otp_service.config.registry.INTAKES` naming both (the hook by
   its dotted path, imported when the section is present).

No other file names a system (``tests/test_registry.py`` fails otherwise): the routes, the
OpenAPI document, the banner and the config reference all come from the registry and the hook.

A :class:`Hook` never touches the HTTP layer, the store or the providers. The route
(:mod:`otp_service.http.hooks`: ``POST /v1/hooks/<name>/<channel>`` for each of its
``channels``) reads the body with the server's bounds and then calls, in this order:

- :meth:`Hook.verify` (headers, raw body bytes, now) -> raises a :class:`RequestError`, status
  401, with a stable code when the request is not from the system; nothing is stored;
- :meth:`Hook.parse` (channel, decoded JSON, the :class:`Inbound`) -> the :class:`Delivery`
  list (usually one; Supabase's secure email change makes two; none: accepted with nothing to
  send, answered ``204``), or raises a :class:`RequestError` (400/422) naming what is wrong;
- the send path (:meth:`otp_service.delivery.send.SendPath.send`) for each delivery, which
  returns an :class:`~otp_service.delivery.outcome.Outcome`;
- :meth:`Hook.reply` (the :class:`Verdict` of each outcome, as the house table
  :mod:`otp_service.http.answers` would answer it) -> the :class:`Reply` the system expects, or
  None for the house answer (``{"id", "status"}`` / ``{"error": {"code", "message"}}``).

A refusal before the send path (verify or parse) also goes through :meth:`Hook.reply`, as one
refused verdict. Replays: a delivery's ``replay_key`` (the system's request id, or the raw body
when it sends none) is turned into the send path's idempotency key (an HMAC under the store's
secret, prefixed with the hook's name and the channel): a repeat is answered as the first and
never sent twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..delivery.outcome import Outcome
from ..errors import RequestError, UnauthorizedError
from ..message.compose import Channel, SendRequest
from .doc import HookDoc, Schemes


@dataclass(frozen=True)
class Inbound:
    """The parts of an HTTP request a hook may read: headers (case-insensitive), raw body."""

    headers: Mapping[str, str]
    body: bytes
    content_type: str = "application/json"


@dataclass(frozen=True)
class Delivery:
    """One message a hook request asks for, in the send path's terms."""

    channel: Channel
    request: SendRequest
    replay_key: str | bytes | None = None  # raw material; never stored as is


@dataclass(frozen=True)
class Translated:
    """A system's request as the send path takes it, for a system whose requests carry no id:
    ``kind`` is the system's own name for the message (Kratos's ``template_type``, ZITADEL's
    event type), which with the recipient and the code makes a re-sent request the same one."""

    channel: Channel
    to: str
    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    ttl: float | None = None  # the code's lifetime (seconds), when the system says it
    kind: str = ""

    def replay_key(self, body: bytes) -> str | bytes:
        """What makes a re-sent request the same one: the same code for the same recipient and
        kind, whatever the system re-rendered around it; for a message without a code, the same
        body."""
        code = self.payload.get("code")
        if code is None:
            return body_key(body)
        return "\0".join((self.channel, self.to, self.kind, str(code)))

    def delivery(self, source: str, body: bytes) -> Delivery:
        """The one delivery this request asks for, sent in the name of hook ``source``."""
        request = SendRequest(self.to, self.type, self.payload, ttl=self.ttl, source=source)
        return Delivery(self.channel, request, self.replay_key(body))


@dataclass(frozen=True)
class Verdict:
    """How the house table (:mod:`otp_service.http.answers`) answers one outcome: its status,
    and for a refusal or failure the error code, message and ``Retry-After`` seconds."""

    outcome: Outcome
    status: int
    code: str | None = None
    message: str | None = None
    retry_after: int | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400


@dataclass(frozen=True)
class Reply:
    """The answer a hook gives its caller."""

    status: int
    body: Any = None  # JSON; None: an empty body
    headers: Mapping[str, str] = field(default_factory=dict)


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """The verdict a single answer must carry: the first refused or failed one, else the first."""
    return next((v for v in verdicts if not v.ok), verdicts[0])


class Hook:
    """One identity system's hook contract (see the module docstring)."""

    name: ClassVar[str]  # the route and config name: /v1/hooks/<name>/<channel>
    channels: ClassVar[tuple[Channel, ...]] = ("email", "sms")
    # The longest the caller waits for an answer (None: no limit known); the send path waits
    # at most ``delivery.wait_seconds`` and at most this for a first attempt, then answers with
    # the message accepted (queued).
    wait_seconds: ClassVar[float | None] = None
    form_encoded: ClassVar[bool] = False  # also accept application/x-www-form-urlencoded
    doc: ClassVar[HookDoc]  # what the OpenAPI document says of its routes (:mod:`.doc`)

    def schemes(self) -> Schemes:
        """The OpenAPI security schemes it authenticates with: any one of them will do."""
        return dict(self.doc.schemes)

    def verify(self, inbound: Inbound, now: float) -> None:
        """Raise a 401 :class:`RequestError` unless the request is from the system."""
        raise NotImplementedError

    def parse(self, channel: Channel, data: Any, inbound: Inbound) -> list[Delivery]:
        """The deliveries the request asks for; raise :class:`RequestError` when it is wrong."""
        raise NotImplementedError

    def reply(self, verdicts: Sequence[Verdict]) -> Reply | None:
        """The caller's answer, or None for the house answer to :func:`worst` of them."""
        return None


# -- shared checks


def check_tokens(presented: str | None, tokens: Sequence[str]) -> None:
    """Raise 401 unless ``presented`` is one of ``tokens``, compared in constant time with
    every one of them (timing says nothing about which came close)."""
    if not presented:
        raise UnauthorizedError()
    given = presented.encode("utf-8", "surrogateescape")  # headers may not be UTF-8
    matches = [hmac.compare_digest(given, token.encode()) for token in tokens]
    if not any(matches):
        raise UnauthorizedError()


def bearer_or_basic(headers: Mapping[str, str], *, basic: bool) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or with ``basic`` also the password of
    ``Authorization: Basic base64(user:<token>)`` (any user); None when neither is there."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and value:
        return value
    if basic and scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(":")[2] or None
    return None


def body_key(body: bytes) -> bytes:
    """A replay key for a system that sends no request id: the body itself (the same bytes are
    the same request; hashed again under the store's secret before it is stored)."""
    return hashlib.sha256(body).digest()


def text_field(data: Mapping[str, Any], key: str, where: str = "") -> str | None:
    """``data[key]`` when it is a non-empty string, None when absent or empty; 400 otherwise."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError("invalid_request", f"'{where}{key}' must be a string")
    return value


def obj_field(data: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    """``data[key]`` when it is an object, {} when absent or null; 400 otherwise."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError("invalid_request", f"'{where}{key}' must be an object")
    return value
