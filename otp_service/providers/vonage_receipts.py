"""Vonage's SMS delivery receipts (DLR): check the signature, read the documented fields.

Vonage calls the account's delivery receipt URL (or the message's ``callback``, which the
provider sets to ``{server.public_url}/v1/receipts/vonage``) with GET query parameters, a form
POST or a JSON POST, whichever the account's dashboard says: ``messageId``, ``msisdn`` (the
recipient), ``to`` (the sender id), ``network-code``, ``price``, ``status``, ``scts``,
``err-code``, ``api-key``, ``client-ref``, ``message-timestamp`` and, when the account signs its
webhooks, ``timestamp``, ``nonce`` and ``sig``.
https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts

Signed webhooks (https://developer.vonage.com/en/getting-started/concepts/signing-messages):
every parameter but ``sig``, sorted by name, as ``&name=value`` (``&`` and ``=`` in a value
replaced by ``_``); ``md5hash`` is the MD5 of that string followed by the signature secret, the
others an HMAC of it keyed with the secret (the SDK's ``Auth.check_signature``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from vonage import Auth

from ..config import Config
from ..config.vonage import VonageConfig
from ..errors import ReceiptRefused
from ..store.receipts import DELIVERED, PENDING, UNDELIVERED, UNKNOWN, Receipt
from .base import Callback
from .vonage import NAME

# https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts#dlr-status-messages
STATES = {
    "delivered": DELIVERED,
    "accepted": PENDING,
    "buffered": PENDING,
    "expired": UNDELIVERED,
    "failed": UNDELIVERED,
    "rejected": UNDELIVERED,
    "unknown": UNKNOWN,
}
# https://developer.vonage.com/en/messaging/sms/guides/delivery-receipts#dlr-error-codes
ERRORS = {
    "0": "delivered",
    "1": "unknown: the carrier gave no reason",
    "2": "absent subscriber, temporary: the phone was off or out of coverage",
    "3": "absent subscriber, permanent: the number is not in use",
    "4": "call barred by the user",
    "5": "portability error: the number moved to another carrier",
    "6": "anti-spam rejection by the carrier",
    "7": "handset busy",
    "8": "network error",
    "9": "illegal number: not a valid or reachable number",
    "10": "illegal message: the carrier refused the content",
    "11": "unroutable: no route to this number",
    "12": "destination unreachable",
    "13": "subscriber age restriction",
    "14": "number blocked by the carrier",
    "15": "prepaid subscriber with insufficient funds",
    "16": "gateway quota exceeded",
    "50": "entity filter: the sender is not registered for this country",
    "51": "header filter: the sender id is not allowed",
    "52": "content filter",
    "53": "consent filter: the recipient has not opted in",
    "54": "regulation error",
    "99": "general error",
}


def _signature_base(params: Mapping[str, str]) -> str:
    return "".join(
        f"&{key}={str(params[key]).replace('&', '_').replace('=', '_')}"
        for key in sorted(params)
        if key != "sig"
    )


def signature(params: Mapping[str, str], secret: str, method: str, api_key: str) -> str:
    """The ``sig`` Vonage computes for ``params`` (lower-case hex)."""
    if method == "md5hash":
        return hashlib.md5((_signature_base(params) + secret).encode()).hexdigest()  # noqa: S324
    auth = Auth(api_key=api_key, signature_secret=secret, signature_method=method)
    signed: str = auth.sign_params({k: v for k, v in params.items() if k != "sig"})
    return signed.lower()


def check_signature(params: Mapping[str, str], config: VonageConfig) -> None:
    """Refuse (:class:`ReceiptRefused`) an unsigned or wrongly signed receipt when the
    account signs its webhooks (``signatureSecret`` configured)."""
    secret = config.signature_secret
    if secret is None:
        return
    given = params.get("sig", "")
    if not given or not params.get("timestamp"):
        raise ReceiptRefused(NAME, "receipt_unsigned", "this receipt carries no signature")
    expected = signature(params, secret, config.signature_method, config.api_key)
    if not hmac.compare_digest(given.lower().encode(), expected.encode()):
        raise ReceiptRefused(NAME, "receipt_forged", "this receipt's signature does not match")


def _time(params: Mapping[str, str]) -> float | None:
    """When Vonage reported it: ``message-timestamp`` (UTC, to the second); ``scts`` holds
    only minutes, so it is the fallback."""
    for key, layout in (("message-timestamp", "%Y-%m-%d %H:%M:%S"), ("scts", "%y%m%d%H%M")):
        raw = params.get(key)
        if raw:
            try:
                return datetime.strptime(raw, layout).replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue
    return None


def read_receipt(params: Mapping[str, str], config: VonageConfig) -> Receipt:
    """The receipt ``params`` hold, signature checked; raises :class:`ReceiptRefused`."""
    check_signature(params, config)
    message_id = params.get("messageId") or params.get("message-id") or ""
    status = (params.get("status") or "").lower()
    if not message_id or len(message_id) > 64 or status not in STATES:
        raise ReceiptRefused(
            NAME, "receipt_invalid", "a receipt needs messageId and a known status", status=400
        )
    state = STATES[status]
    error = None
    if state in (UNDELIVERED, UNKNOWN):
        code = params.get("err-code") or "?"
        error = f"{status}, err-code {code}: {ERRORS.get(code, 'not documented')}"
    when = _time(params)
    return Receipt(
        NAME, message_id, state, at=min(when, time.time()) if when else None, error=error,
        to=params.get("msisdn"),
    )  # fmt: skip


class VonageReceipts:
    """Vonage's DLRs: GET query parameters, a form POST or a JSON POST (as the dashboard
    says); answered 204."""

    batched = False
    answer = None

    def __init__(self, config: VonageConfig) -> None:
        self.config = config

    def read(self, callback: Callback) -> list[Receipt]:
        if callback.method == "GET":
            params = dict(callback.query)
        elif isinstance(callback.json, dict):
            params = {
                str(k): str(v) for k, v in callback.json.items() if isinstance(v, str | int | float)
            }
        elif callback.json is not None:
            raise ReceiptRefused(NAME, "receipt_invalid", "send a JSON object", status=400)
        else:
            params = dict(callback.form)
        return [read_receipt(params, self.config)]


def build(config: Config) -> VonageReceipts:
    """The receipt reader of its registry entry (imported when Vonage is configured)."""
    vonage = config.sms.section(VonageConfig)
    assert vonage is not None
    return VonageReceipts(vonage)
