"""Supabase Auth's Send Email / Send SMS hook requests, built as Auth builds them.

Field for field from supabase/auth: ``v0hooks.SendEmailInput`` / ``SendSMSInput`` (with the
``metadata`` of v2.187.0), ``mailer.EmailData``, ``models.User``'s JSON tags, marshalled the way
Go's ``encoding/json`` does (no spaces, ``<>&`` escaped), and signed per secret with the
``standardwebhooks`` reference library, signatures joined with ``", "`` as
``hookshttp.generateSignatures`` + ``strings.Join`` do. A fresh ``webhook-id`` per attempt,
the same ``metadata.uuid`` for every retry of one invocation.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook

# The official Standard Webhooks test vector (standard-webhooks/standard-webhooks, every
# library's test_sign / TestWebhookSign).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "v1,whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # Supabase shows secrets in this form
OLD_SECRET = "v1,whsec_c2VjcmV0LW9mLWxhc3QtbW9udGgtMTIzNDU2Nzg="
SITE_URL = "https://abcdefghijklmnop.supabase.co/auth/v1"


def go_json(value: Any) -> bytes:
    """``value`` as Go's json.Marshal writes it: compact, HTML characters escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.encode()


def user(
    email: str = "ada@example.com",
    phone: str = "",
    *,
    new_email: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``models.User`` as Auth marshals it (``omitempty`` fields left out when empty)."""
    now = "2026-12-07T04:00:00.000000Z"
    data: dict[str, Any] = {
        "id": "8484b834-f29e-4af2-bf42-80644d154f76",
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "phone": phone,
        "confirmation_sent_at": now,
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": metadata or {"email": email, "email_verified": False, "sub": "8484b834"},
        "identities": [],
        "created_at": now,
        "updated_at": now,
        "is_anonymous": False,
    }
    if new_email is not None:
        data["new_email"] = new_email
        data["email_change_sent_at"] = now
    return data


def invocation(name: str) -> dict[str, Any]:
    """``metadata``: one uuid for every attempt of this invocation."""
    return {
        "uuid": str(uuid.uuid4()),
        "time": datetime.now(UTC).isoformat(),
        "name": name,
        "ip_address": "203.0.113.7",
    }


def email_body(
    action: str,
    *,
    account: dict[str, Any] | None = None,
    token: str = "305805",  # noqa: S107 (a one-time code, not a password)
    token_hash: str = "pkce_8f1c0f6a2e",  # noqa: S107
    token_new: str = "",
    token_hash_new: str = "",
    redirect_to: str = "http://localhost:3000/welcome?a=1&b=2",
    metadata: dict[str, Any] | None = None,
    **extra: str,
) -> dict[str, Any]:
    """A ``SendEmailInput``: ``metadata``, ``user`` and every ``EmailData`` field."""
    email_data = {
        "token": token,
        "token_hash": token_hash,
        "redirect_to": redirect_to,
        "email_action_type": action,
        "site_url": SITE_URL,
        "token_new": token_new,
        "token_hash_new": token_hash_new,
        "old_email": "",
        "old_phone": "",
        "provider": "",
        "factor_type": "",
    } | extra
    return {
        "metadata": metadata or invocation("send-email"),
        "user": account or user(),
        "email_data": email_data,
    }


def sms_body(
    otp: str = "561166",
    phone: str = "14155552671",
    *,
    sms_type: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``SendSMSInput``: the number without ``+``, as Auth stores it."""
    sms: dict[str, Any] = {"otp": otp, "phone": phone}
    if sms_type is not None:
        sms["sms_type"] = sms_type
    return {
        "metadata": metadata or invocation("send-sms"),
        "user": user(email="", phone=phone),
        "sms": sms,
    }


def sign(
    body: bytes,
    secrets: list[str] | None = None,
    *,
    timestamp: float | None = None,
    webhook_id: str | None = None,
) -> dict[str, str]:
    """The headers Auth sends with ``body``: one signature per secret, joined with ``", "``."""
    msg_id = webhook_id or str(uuid.uuid4())
    when = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
    signatures = [
        Webhook(secret.removeprefix("v1,")).sign(msg_id, when, body)
        for secret in (secrets or [SECRET])
    ]
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": ", ".join(signatures),
        "Accept-Encoding": "identity",
    }
