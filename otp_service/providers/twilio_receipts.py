"""Twilio's status callbacks: check ``X-Twilio-Signature``, read the message's status.

Each SMS names ``StatusCallback`` = ``{server.public_url}/v1/receipts/twilio``; Twilio POSTs a
form there on every status change (``MessageSid``, ``MessageStatus``, ``To``, ``AccountSid``,
``ErrorCode`` when failed or undelivered ...), signed with the account's auth token: base64 of
HMAC-SHA1 over the full URL it called followed by each parameter's name and value, sorted
(https://www.twilio.com/docs/usage/security#validating-requests), checked here with the SDK's
``RequestValidator``. Statuses:
https://www.twilio.com/docs/messaging/guides/track-outbound-message-status
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from ..config import Config
from ..config.twilio import TwilioConfig
from ..errors import ReceiptRefused
from ..store.receipts import DELIVERED, PENDING, UNDELIVERED, Receipt
from .base import Callback

NAME = "twilio"
STATES = {
    "accepted": PENDING,
    "scheduled": PENDING,
    "queued": PENDING,
    "sending": PENDING,
    "sent": PENDING,  # handed to the carrier, not yet to the handset
    "delivered": DELIVERED,
    "read": DELIVERED,
    "undelivered": UNDELIVERED,
    "failed": UNDELIVERED,
    "canceled": UNDELIVERED,
}
# https://www.twilio.com/docs/api/errors (the 30xxx delivery errors)
ERRORS = {
    "30001": "queue overflow: sent faster than the sender's throughput",
    "30002": "the account is suspended",
    "30003": "unreachable destination handset (off, out of coverage)",
    "30004": "message blocked (the recipient blocked it, or the carrier did)",
    "30005": "unknown destination handset: the number does not exist",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier as spam",
    "30008": "unknown error from the carrier",
    "30009": "missing segment of a multi-part message",
    "30010": "the message price exceeds the max price",
    "30032": "toll-free number not verified",
    "30034": "US A2P 10DLC: the sender is not registered",
    "21610": "the recipient unsubscribed (replied STOP)",
}


def read_receipt(
    url: str, params: Mapping[str, str], signature: str | None, config: TwilioConfig
) -> Receipt:
    """The status ``params`` hold, posted to ``url`` (the full URL Twilio called), its
    signature checked; raises :class:`ReceiptRefused`."""
    if not signature:
        raise ReceiptRefused(NAME, "receipt_unsigned", "X-Twilio-Signature is missing")
    if not RequestValidator(config.auth_token).validate(url, dict(params), signature):
        raise ReceiptRefused(NAME, "receipt_forged", "X-Twilio-Signature does not match")
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if not sid or len(sid) > 64 or status not in STATES:
        raise ReceiptRefused(
            NAME, "receipt_invalid", "a status needs MessageSid and a known MessageStatus",
            status=400,
        )  # fmt: skip
    if params.get("AccountSid", config.account_sid) != config.account_sid:
        raise ReceiptRefused(NAME, "receipt_forged", "this status is another account's")
    state = STATES[status]
    error = None
    if state == UNDELIVERED:
        code = params.get("ErrorCode") or "?"
        error = f"{status}, error {code}: {ERRORS.get(code, 'see Twilio error codes')}"
    return Receipt(NAME, sid, state, error=error, to=params.get("To") or None)


class TwilioReceipts:
    """Twilio's status callbacks: signed form POSTs; answered 204."""

    batched = False
    answer = None

    def __init__(self, config: TwilioConfig) -> None:
        self.config = config

    def read(self, callback: Callback) -> list[Receipt]:
        if callback.method != "POST" or callback.json is not None:
            raise ReceiptRefused(NAME, "receipt_invalid", "Twilio posts a form", status=400)
        signature = next(
            (v for k, v in callback.headers.items() if k.lower() == "x-twilio-signature"), None
        )
        return [read_receipt(callback.url, callback.form, signature, self.config)]


def build(config: Config) -> TwilioReceipts:
    """The receipt reader of its registry entry (imported when Twilio is configured)."""
    twilio = config.sms.section(TwilioConfig)
    assert twilio is not None
    return TwilioReceipts(twilio)
