"""Aliyun's SMS delivery reports: what ``QuerySendDetails`` answers, and what its HTTP batch
push (``SmsReport``) posts.

``QuerySendDetails`` (https://help.aliyun.com/document_detail/419277.html) takes one
``PhoneNumber`` (mainland numbers without +86, others with their country code, no plus), the
``BizId`` SendSms returned, ``SendDate`` (``yyyyMMdd``, Beijing time), ``PageSize`` and
``CurrentPage``; it answers ``SmsSendDetailDTOs.SmsSendDetailDTO`` with ``SendStatus`` (1 waiting
for the carrier's receipt, 2 failed, 3 delivered), ``ErrCode`` (``DELIVERED`` or the carrier's
code) and ``ReceiveDate``.

The push (https://help.aliyun.com/document_detail/101867.html) posts a JSON array of
``{phone_number, send_time, report_time, success, err_code, err_msg, sms_size, biz_id,
out_id}`` and wants ``{"code": 0, "msg": ...}`` back with HTTP 200 (anything else is pushed
again 1, 5 and 10 minutes later). Times are Beijing time (UTC+8), ``yyyy-MM-dd HH:mm:ss``.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta, timezone
from typing import Any

from alibabacloud_dysmsapi20170525 import models as sms_models

from ..config import Config
from ..config.aliyun import AliyunConfig
from ..errors import ReceiptRefused
from ..store.receipts import DELIVERED, PENDING, UNDELIVERED, Receipt
from .base import Callback

NAME = "aliyun"
BEIJING = timezone(timedelta(hours=8))
SEND_STATUS = {1: PENDING, 2: UNDELIVERED, 3: DELIVERED}
# Common report codes, https://help.aliyun.com/document_detail/101347.html
MEANINGS = {
    "DELIVERED": "delivered",
    "MK:0000": "the carrier gave no reason",
    "MK:0001": "the number is out of service or does not exist",
    "MK:0004": "the phone was off or out of coverage",
    "MK:0005": "the phone's memory is full",
    "MK:0010": "the carrier refused it: blocklisted",
    "IC:0001": "the number is out of service",
    "IC:0015": "the number is out of service",
    "UNDELIV": "not delivered by the carrier",
    "EXPIRED": "expired at the carrier before the phone was reachable",
    "REJECTD": "rejected by the carrier",
    "isv.MOBILE_NUMBER_ILLEGAL": "not a valid phone number",
}


def query_number(to: str) -> str:
    """The ``PhoneNumber`` QuerySendDetails wants for E.164 ``to``."""
    if to.startswith("+86") and len(to) == 14:
        return to[3:]
    return to.lstrip("+")


def query_request(provider_id: str, to: str, sent_at: float) -> sms_models.QuerySendDetailsRequest:
    """The QuerySendDetails request about one message."""
    return sms_models.QuerySendDetailsRequest(
        phone_number=query_number(to),
        biz_id=provider_id,
        send_date=datetime.fromtimestamp(sent_at, BEIJING).strftime("%Y%m%d"),
        page_size=10,
        current_page=1,
    )


def _beijing(raw: Any) -> float | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING).timestamp()
    except ValueError:
        return None


def _error(code: str, text: str | None) -> str:
    return f"{code}: {text or MEANINGS.get(code, 'see Aliyun error codes')}"[:240]


def from_query(provider_id: str, to: str, body: Any) -> Receipt | None:
    """The receipt a QuerySendDetails answer holds about ``provider_id``; None when it holds
    none (no such record yet)."""
    dtos = getattr(getattr(body, "sms_send_detail_dtos", None), "sms_send_detail_dto", None)
    for dto in dtos or []:
        state = SEND_STATUS.get(int(dto.send_status or 0))
        if state is None:
            continue
        code = str(dto.err_code or "")
        error = _error(code, None) if state == UNDELIVERED else None
        at = _beijing(dto.receive_date) if state != PENDING else None
        return Receipt(NAME, provider_id, state, at=at, error=error, to=dto.phone_num or to)
    return None


def from_push(body: Any) -> list[Receipt]:
    """The receipts of one SmsReport push; raises :class:`ReceiptRefused` for a body that is
    not the documented array."""
    if not isinstance(body, list) or not body or len(body) > 1000:
        raise ReceiptRefused(NAME, "receipt_invalid", "send a JSON array of reports", status=400)
    receipts = []
    for item in body:
        biz_id = item.get("biz_id") if isinstance(item, dict) else None
        success = item.get("success") if isinstance(item, dict) else None
        if not isinstance(biz_id, str) or not biz_id or len(biz_id) > 64:
            raise ReceiptRefused(NAME, "receipt_invalid", "each report needs biz_id", status=400)
        if not isinstance(success, bool):
            raise ReceiptRefused(NAME, "receipt_invalid", "each report needs success", status=400)
        code = str(item.get("err_code") or "")
        text = item.get("err_msg") if isinstance(item.get("err_msg"), str) else None
        receipt = Receipt(
            NAME, biz_id, DELIVERED if success else UNDELIVERED,
            at=_beijing(item.get("report_time")),
            error=None if success else _error(code, text),
            to=str(item.get("phone_number") or "") or None,
        )  # fmt: skip
        receipts.append(receipt)
    return receipts


class AliyunReports:
    """Aliyun's SmsReport push: a JSON array of reports, to the URL with ``?token=`` (the
    connector's ``reportToken``: the push is not signed); answered ``{"code": 0}``, whatever
    each report matched, or Aliyun pushes the whole batch again."""

    batched = True

    def __init__(self, config: AliyunConfig) -> None:
        self.token = config.report_token
        self.answer = {"code": 0, "msg": "OK"}

    def read(self, callback: Callback) -> list[Receipt]:
        if self.token is None:
            raise ReceiptRefused(
                NAME, "receipt_not_configured", "set reportToken in sms.aliyun", status=404
            )
        given = callback.query.get("token", "")
        if not given:
            raise ReceiptRefused(NAME, "receipt_unsigned", "the URL carries no token")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise ReceiptRefused(NAME, "receipt_forged", "the URL's token does not match")
        if callback.method != "POST":
            raise ReceiptRefused(NAME, "receipt_invalid", "Aliyun posts JSON", status=400)
        return from_push(callback.json)


def build(config: Config) -> AliyunReports:
    """The receipt reader of its registry entry (imported when Aliyun is configured)."""
    aliyun = config.sms.section(AliyunConfig)
    assert aliyun is not None
    return AliyunReports(aliyun)
