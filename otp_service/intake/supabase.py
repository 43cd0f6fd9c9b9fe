"""Supabase Auth's Send Email and Send SMS hooks (HTTP), signed with Standard Webhooks.

Wire contract, as read from supabase/auth (``internal/hooks/hookshttp/hookshttp.go``,
``internal/hooks/hookserrors/hookserrors.go``, ``internal/api/mail.go`` ``sendEmail``,
``internal/mailer/templatemailer/templatemailer.go``, ``internal/models/user.go``):

- Headers ``webhook-id`` (a new UUID per attempt), ``webhook-timestamp`` (unix seconds) and
  ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` per configured secret, joined with ``", "``
  (the spec says spaces: both are read; other versions are skipped). Signed content:
  ``{id}.{timestamp}.{raw body}``; the key is the base64 after ``v1,whsec_``. A timestamp more
  than 5 minutes away is refused, every comparison is constant-time.
- Email body ``{metadata?, user, email_data: {token, token_hash, redirect_to,
  email_action_type, site_url, token_new, token_hash_new, old_email, old_phone, provider,
  factor_type}}``; SMS body ``{metadata?, user, sms: {otp, phone?, sms_type?}}``, phone numbers
  without ``+``. ``metadata`` (``{uuid, time, name, ip_address}``, since v2.187.0) is built
  once per invocation, so ``uuid`` is the same for every retry: it names the request for
  replays (the raw body does when it is absent); ``ip_address`` is the end user's address,
  counted by ``limits.per_ip``.
- Secure email change sends one hook call for two messages: to the current ``user.email`` the
  code ``token`` (link hash ``token_hash_new``), to ``user.new_email`` the code ``token_new``
  (hash ``token_hash``) — Supabase's historical naming, kept. Without secure change: one
  message to ``user.new_email`` with ``token``.
- Answers: ``200`` + ``application/json`` ``{}`` is success; ``200`` with
  ``{"error": {"http_code", "message"}}`` makes Auth answer its client that status and message
  (we add our stable ``code``); ``429``/``503`` only with ``Retry-After`` (Auth retries at once,
  3 attempts in all); anything else becomes a 500 at Auth. The whole call, retries included,
  has 5 seconds: we wait at most :attr:`SupabaseHook.wait_seconds` for a first attempt, then
  answer with the message accepted.

Every ``email_action_type`` is mapped (:data:`EMAIL_TYPES`); an unknown one is refused with
``unknown_email_action_type`` naming it (Supabase does not document that new types may appear;
it added the notification types in v2.181.0 with a release, and so would we).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlencode

from ..config.supabase import SupabaseIntakeConfig, whsec_key
from ..errors import RequestError
from ..message.compose import Channel, SendRequest
from .doc import OBJ, STR, Answer, HookDoc, Schema, obj
from .hook import Delivery, Hook, Inbound, Reply, Verdict, body_key, obj_field, text_field, worst

TOLERANCE_SECONDS = 5 * 60  # the Standard Webhooks libraries' window, both ways

# email_action_type -> (usage type, whether it carries a code, Supabase's link type or None)
EMAIL_TYPES: Mapping[str, tuple[str, bool, str | None]] = {
    "signup": ("Register", True, "signup"),
    "magiclink": ("SignIn", True, "magiclink"),
    "email": ("SignIn", True, None),  # an email OTP: a code, no link
    "recovery": ("ForgotPassword", True, "recovery"),
    "invite": ("Invite", True, "invite"),
    "email_change": ("EmailChangeNew", True, "email_change"),  # + EmailChangeCurrent
    "reauthentication": ("UserPermissionValidation", True, None),
    "password_changed_notification": ("PasswordChanged", False, None),
    "email_changed_notification": ("EmailChanged", False, None),
    "phone_changed_notification": ("PhoneChanged", False, None),
    "identity_linked_notification": ("IdentityLinked", False, None),
    "identity_unlinked_notification": ("IdentityUnlinked", False, None),
    "mfa_factor_enrolled_notification": ("MfaFactorEnrolled", False, None),
    "mfa_factor_unenrolled_notification": ("MfaFactorUnenrolled", False, None),
}
EMAIL_CHANGE_CURRENT = "EmailChangeCurrent"
# What the end user sees (through Auth) when we fail for a reason that is not theirs.
_FAILED = "the message could not be delivered; try again later"


def unauthorized(code: str, message: str) -> RequestError:
    return RequestError(code, message, 401)


def signature(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks v1 signature of a message (``v1,<base64>``)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def presented(header: str) -> list[bytes]:
    """The v1 signatures of a ``webhook-signature`` header, as base64 bytes: tokens separated
    by spaces (the spec) or ``", "`` (Supabase); other versions skipped."""
    found = []
    for token in header.replace(", ", " ").split():
        version, _, value = token.rstrip(",").partition(",")
        if version == "v1" and value:
            found.append(value.encode("ascii", "replace"))
    return found


def verify(keys: Sequence[bytes], headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Raise a 401 :class:`RequestError` unless one signature of the request is one of ours and
    its timestamp is within 5 minutes of ``now``."""
    webhook_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    header = headers.get("webhook-signature")
    if not webhook_id or not timestamp or not header:
        raise unauthorized(
            "missing_signature",
            "webhook-id, webhook-timestamp and webhook-signature headers are required",
        )
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise unauthorized("invalid_signature", "webhook-timestamp must be unix seconds")
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        raise unauthorized(
            "stale_signature", "webhook-timestamp is more than 5 minutes from now: check clocks"
        )
    given = presented(header)
    expected = [
        signature(key, webhook_id, timestamp, body).partition(",")[2].encode() for key in keys
    ]
    # Every pair compared, always: timing tells nothing about which came close.
    matches = [hmac.compare_digest(g, e) for g in given for e in expected]
    if not any(matches):
        raise unauthorized("invalid_signature", "no webhook-signature matches a configured secret")


_USER = obj([], email=STR, new_email=STR, phone=STR, user_metadata=OBJ)
# Supabase Auth hears every refusal inside a 200 (its error object), but 401 and a 503 with
# Retry-After (docs/intakes.md).
_ANSWER: Schema = {
    "type": "object",
    "description": "{} when taken; else Auth's error object (http_code: the status its client "
    "hears) with our stable code",
    "properties": {
        "error": {
            "type": "object",
            "required": ["http_code", "message"],
            "properties": {"http_code": {"type": "integer"}, "code": STR, "message": STR},
        }
    },
}


class SupabaseHook(Hook):
    name = "supabase"
    wait_seconds = 3.0  # Auth gives the whole call 5 s
    doc = HookDoc(
        "Supabase Auth's Send Email / Send SMS hook (docs/intakes.md)",
        {
            "email": obj(
                ["user", "email_data"],
                metadata=OBJ,
                user=_USER,
                email_data=obj(
                    ["email_action_type"],
                    email_action_type=STR,
                    token=STR,
                    token_hash=STR,
                    token_new=STR,
                    token_hash_new=STR,
                    redirect_to=STR,
                    site_url=STR,
                ),
            ),
            "sms": obj(["sms"], metadata=OBJ, user=_USER, sms=obj(["otp"], otp=STR, phone=STR)),
        },
        {
            "supabase_signature": {
                "type": "apiKey",
                "in": "header",
                "name": "webhook-signature",
                "description": "Standard Webhooks: v1,<base64 HMAC-SHA256> over webhook-id, "
                "webhook-timestamp and the body, with a secret of intakes.supabase.secrets",
            }
        },
        Answer("taken, or refused (the error object)", _ANSWER, (401, 503)),
    )

    def __init__(self, config: SupabaseIntakeConfig) -> None:
        self.keys = [whsec_key(secret) for secret in config.secrets]
        self.verify_url = config.verify_url

    def verify(self, inbound: Inbound, now: float) -> None:
        verify(self.keys, inbound.headers, inbound.body, now)

    def parse(self, channel: Channel, data: Any, inbound: Inbound) -> list[Delivery]:
        if not isinstance(data, dict):
            raise RequestError("invalid_request", "the body must be a JSON object")
        user = obj_field(data, "user")
        metadata = obj_field(data, "metadata")
        uuid = text_field(metadata, "uuid", "metadata.")
        replay: str | bytes = f"uuid:{uuid}" if uuid else body_key(inbound.body)
        base = _payload(user)
        if channel == "sms":
            deliveries = [self._sms(obj_field(data, "sms"), user, base, replay)]
        else:
            deliveries = self._email(obj_field(data, "email_data"), user, base, replay)
        # The end user's address, as Auth saw it: counted by limits.per_ip.
        if (ip := text_field(metadata, "ip_address", "metadata.")) is not None:
            deliveries = [replace(d, request=replace(d.request, ip=ip)) for d in deliveries]
        return deliveries

    def _sms(
        self, sms: Mapping[str, Any], user: Mapping[str, Any], base: dict[str, Any], replay: Any
    ) -> Delivery:
        code = text_field(sms, "otp", "sms.")
        if code is None:
            raise RequestError("missing_field", "'sms.otp' is required")
        # sms.phone (since v2.180.0) is the destination, e.g. the new number of a phone change.
        to = text_field(sms, "phone", "sms.") or text_field(user, "phone", "user.")
        if to is None:
            raise RequestError("missing_field", "'sms.phone' or 'user.phone' is required")
        usage = "MfaVerification" if sms.get("sms_type") == "mfa" else "Generic"
        # Only what an SMS template uses: Aliyun sends every payload key as a TemplateParam.
        payload = {"code": code, **{k: v for k, v in base.items() if k == "locale"}}
        request = SendRequest(to, usage, payload, source=self.name)
        return Delivery("sms", request, replay)

    def _email(
        self,
        email: Mapping[str, Any],
        user: Mapping[str, Any],
        base: dict[str, Any],
        replay: str | bytes,
    ) -> list[Delivery]:
        action = text_field(email, "email_action_type", "email_data.")
        if action is None:
            raise RequestError("missing_field", "'email_data.email_action_type' is required")
        if action not in EMAIL_TYPES:
            shown = action if len(action) <= 64 and action.isprintable() else action[:64] + "…"
            raise RequestError(
                "unknown_email_action_type",
                f"email_action_type {shown!r} is not one otp-service knows "
                f"(known: {', '.join(EMAIL_TYPES)})",
                422,
            )
        usage, has_code, link_type = EMAIL_TYPES[action]
        fields = {
            key: text_field(email, key, "email_data.")
            for key in ("token", "token_hash", "token_new", "token_hash_new", "redirect_to",
                        "site_url", "old_email", "old_phone", "provider", "factor_type")
        }  # fmt: skip
        email_to = text_field(user, "email", "user.")
        new_email = text_field(user, "new_email", "user.")
        payload = {
            **base,
            "action": action,
            "email": email_to,
            "new_email": new_email,
            **{k: fields[k] for k in ("old_email", "old_phone", "provider", "factor_type")},
            "phone": text_field(user, "phone", "user."),
            "site_url": fields["site_url"],
            "redirect_to": fields["redirect_to"],
        }
        if action == "email_change":
            return self._email_change(payload, fields, email_to, new_email, replay)
        code = fields["token"]
        if has_code and code is None:
            raise RequestError("missing_field", "'email_data.token' is required")
        to = email_to
        if action == "email_changed_notification" and fields["old_email"]:
            to = fields["old_email"]  # Supabase's own mailer tells the old address
        if to is None:
            raise RequestError("missing_field", "'user.email' is required")
        if has_code:
            payload["code"] = code
        link = self._link(fields["site_url"], fields["token_hash"], link_type, fields)
        if link is not None:
            payload["link"] = link
        return [Delivery("email", SendRequest(to, usage, payload, source=self.name), replay)]

    def _email_change(
        self,
        payload: dict[str, Any],
        fields: Mapping[str, str | None],
        current: str | None,
        new: str | None,
        replay: str | bytes,
    ) -> list[Delivery]:
        if new is None:
            raise RequestError("missing_field", "'user.new_email' is required for email_change")
        if fields["token_new"] is not None:  # secure email change: both addresses confirm
            if current is None or fields["token"] is None:
                raise RequestError(
                    "missing_field", "'user.email' and 'email_data.token' are required"
                )
            pairs = [
                ("EmailChangeNew", new, fields["token_new"], fields["token_hash"]),
                (EMAIL_CHANGE_CURRENT, current, fields["token"], fields["token_hash_new"]),
            ]
        else:
            if fields["token"] is None:
                raise RequestError("missing_field", "'email_data.token' is required")
            pairs = [("EmailChangeNew", new, fields["token"], fields["token_hash"])]
        deliveries = []
        for usage, to, code, token_hash in pairs:
            each = {**payload, "code": code}
            link = self._link(fields["site_url"], token_hash, "email_change", fields)
            if link is not None:
                each["link"] = link
            key = replay + usage.encode() if isinstance(replay, bytes) else f"{replay}:{usage}"
            deliveries.append(
                Delivery("email", SendRequest(to, usage, each, source=self.name), key)
            )
        return deliveries

    def _link(
        self,
        site_url: str | None,
        token_hash: str | None,
        link_type: str | None,
        fields: Mapping[str, str | None],
    ) -> str | None:
        """The link Supabase's own mailer would put in the message (``ConfirmationURL``):
        ``{site_url}/verify?token={token_hash}&type={type}&redirect_to={redirect_to}``."""
        if link_type is None or not token_hash:
            return None
        base = self.verify_url or (f"{site_url.rstrip('/')}/verify" if site_url else None)
        if base is None:
            return None
        query = {"token": token_hash, "type": link_type, "redirect_to": fields["redirect_to"] or ""}
        return f"{base}?{urlencode(query, quote_via=quote)}"

    def reply(self, verdicts: Sequence[Verdict]) -> Reply:
        """``200 {}``; a refusal or failure as Auth's error object (``200``), except what a
        retry at once may fix: ``503`` with ``Retry-After``."""
        first = worst(verdicts)
        if first.ok:
            return Reply(200, {})
        if first.status == 503 and first.retry_after is not None:
            body = {"error": {"http_code": 503, "code": first.code, "message": first.message}}
            return Reply(503, body, {"Retry-After": str(first.retry_after)})
        if first.status == 401:  # not Supabase (or not our secret): no error object for it
            return Reply(401, {"error": {"code": first.code, "message": first.message}})
        message = first.message if first.status < 500 else _FAILED
        error = {"http_code": first.status, "code": first.code, "message": message}
        return Reply(200, {"error": error})


def _payload(user: Mapping[str, Any]) -> dict[str, Any]:
    """What every message's templates get from ``user``: a name and the language hint
    (``user_metadata.locale`` or ``.language``, e.g. set at sign-up with ``options.data``)."""
    meta = obj_field(user, "user_metadata", "user.")
    payload: dict[str, Any] = {}
    for key in ("locale", "language"):
        if isinstance(meta.get(key), str) and meta[key]:
            payload["locale"] = meta[key]
            break
    name = next((meta[k] for k in ("full_name", "name") if isinstance(meta.get(k), str)), None)
    payload["user"] = {
        "id": user.get("id"),
        "name": name,
        "primaryEmail": user.get("email"),
        "primaryPhone": user.get("phone"),
    }
    return payload
