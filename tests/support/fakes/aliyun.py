"""A fake of Aliyun's SMS API (Dysmsapi 2017-05-25, ``SendSms``) over plain HTTP.

Wire format, as the ``alibabacloud-dysmsapi20170525`` SDK sends it (signature V3): ``POST /``
with ``PhoneNumbers``, ``SignName``, ``TemplateCode`` and ``TemplateParam`` in the query string,
an empty body, and headers ``x-acs-action: SendSms``, ``x-acs-version: 2017-05-25``,
``Authorization: ACS3-HMAC-SHA256 Credential=<AccessKeyId>,...``.
API: https://help.aliyun.com/zh/sms/developer-reference/api-dysmsapi-2017-05-25-sendsms

Answers: HTTP 200 ``{"Code": "OK", "Message": "OK", "RequestId", "BizId"}``; business errors
are HTTP 200 too, with another ``Code`` (:func:`aliyun_business`, e.g.
``isv.BUSINESS_LIMIT_CONTROL``); gateway errors are 4xx/5xx with an error JSON
(:func:`aliyun_error`), which the SDK raises as ``ClientException``/``ServerException``, or as
``ThrottlingException`` when the answer carries ``x-acs-retry-after`` (:func:`aliyun_throttled`).

Delivery reports, as Aliyun keeps them: every accepted SMS gets a record (``SendStatus`` 1,
waiting for the carrier) that a test moves on with :meth:`FakeAliyun.report` (3 delivered with
``ErrCode`` ``DELIVERED``, 2 failed with the carrier's code). ``QuerySendDetails``
(https://help.aliyun.com/document_detail/419277.html: ``x-acs-action: QuerySendDetails``,
``PhoneNumber``, ``BizId``, ``SendDate`` yyyyMMdd, ``PageSize``, ``CurrentPage`` in the query)
answers the records of that number and date (of that BizId when given), in
``SmsSendDetailDTOs.SmsSendDetailDTO``. :meth:`FakeAliyun.push_reports` posts them as the
SmsReport HTTP batch push does (https://help.aliyun.com/document_detail/101867.html).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from . import DROP, FakeServer, Recorded, Reply, started
from .vonage import _ca_file, _server_context

__all__ = [
    "DROP",
    "FakeAliyun",
    "aliyun_business",
    "aliyun_error",
    "aliyun_slow",
    "aliyun_throttled",
    "fake_aliyun",
    "logto_aliyun_json",
]


def _request_id() -> str:
    return str(uuid.uuid4()).upper()


def aliyun_business(code: str, message: str = "") -> Reply:
    """HTTP 200 with a business error ``Code`` (``isv.BUSINESS_LIMIT_CONTROL`` = rate limit)."""
    texts = {
        "isv.BUSINESS_LIMIT_CONTROL": "触发小时级流控Permits:5",
        "isv.MOBILE_NUMBER_ILLEGAL": "非法手机号",
        "isv.SMS_TEMPLATE_ILLEGAL": "该账号下找不到对应模板",
    }
    return Reply(
        json={"Code": code, "Message": message or texts.get(code, code), "RequestId": _request_id()}
    )


def aliyun_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Reply:
    """A gateway error: ``status`` with Aliyun's error JSON (the SDK raises on 4xx/5xx)."""
    body = {
        "RequestId": _request_id(),
        "HostId": "dysmsapi.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}",
    }
    return Reply(status=status, json=body, headers=headers or {})


def aliyun_throttled(retry_after_ms: int) -> Reply:
    """HTTP 400 ``Throttling.User`` with ``x-acs-retry-after`` (the SDK's ThrottlingException)."""
    return aliyun_error(
        400, "Throttling.User", "Request was denied due to user flow control.",
        {"x-acs-retry-after": str(retry_after_ms)},
    )  # fmt: skip


def aliyun_slow(seconds: float) -> Reply:
    """The success answer, ``seconds`` late."""
    return Reply(json=_ok(), delay=seconds)


def _ok() -> dict[str, str]:
    return {
        "Code": "OK",
        "Message": "OK",
        "RequestId": _request_id(),
        "BizId": f"{uuid.uuid4().int % 10**15:015d}^0",
    }


BEIJING = timezone(timedelta(hours=8))


def _beijing(moment: datetime | None = None) -> str:
    return (moment or datetime.now(BEIJING)).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


class FakeAliyun(FakeServer):
    """Aliyun's ``SendSms`` and ``QuerySendDetails`` on ``http://127.0.0.1:port/``, recording
    each request; ``tls``: on ``https://``, with the certificate of the Vonage fake's test CA
    (:attr:`ca_file`), as the real API is reached."""

    def __init__(self, *, port: int = 0, tls: bool = False) -> None:
        super().__init__(port=port, ssl_context=_server_context() if tls else None)
        self.scheme = "https" if tls else "http"
        self.ca_file = _ca_file() if tls else None
        self.records: dict[str, dict[str, Any]] = {}  # BizId -> its SmsSendDetailDTO

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/", self.handle)]

    def default_reply(self, request: Recorded) -> Reply:
        """``SendSms``: accept the message (``Code: OK`` with a ``BizId``) and keep its record;
        ``QuerySendDetails``: the records asked for."""
        if request.header("x-acs-action") == "QuerySendDetails":
            return self._details(request.query)
        answer = _ok()
        now = datetime.now(BEIJING)
        with self.lock:
            self.records[answer["BizId"]] = {
                "PhoneNum": request.query.get("PhoneNumbers", ""),
                "SendStatus": 1,
                "ErrCode": "",
                "TemplateCode": request.query.get("TemplateCode", ""),
                "Content": "",
                "SendDate": _beijing(now),
                "ReceiveDate": "",
                "OutId": "",
                "_day": now.strftime("%Y%m%d"),
            }
        return Reply(json=answer)

    def _details(self, query: dict[str, str]) -> Reply:
        phone, biz_id, day = query.get("PhoneNumber"), query.get("BizId"), query.get("SendDate")
        if not phone or not day or not query.get("PageSize") or not query.get("CurrentPage"):
            return aliyun_error(400, "MissingParameter", "PhoneNumber, SendDate, PageSize ...")
        with self.lock:
            found = [
                {k: v for k, v in record.items() if not k.startswith("_")}
                for key, record in self.records.items()
                if record["PhoneNum"] == phone and record["_day"] == day
                and (not biz_id or key == biz_id)
            ]  # fmt: skip
        return Reply(
            json={
                "Code": "OK",
                "Message": "OK",
                "RequestId": _request_id(),
                "TotalCount": len(found),
                "SmsSendDetailDTOs": {"SmsSendDetailDTO": found},
            }
        )

    def report(self, biz_id: str, send_status: int, err_code: str = "DELIVERED") -> None:
        """Move a record on: 3 delivered, 2 failed (``err_code``: the carrier's), 1 waiting."""
        with self.lock:
            record = self.records[biz_id]
            record["SendStatus"] = send_status
            record["ErrCode"] = err_code if send_status != 1 else ""
            record["ReceiveDate"] = _beijing() if send_status != 1 else ""

    @property
    def biz_ids(self) -> list[str]:
        """The BizId of every accepted SMS, oldest first."""
        with self.lock:
            return list(self.records)

    @property
    def queries(self) -> list[dict[str, str]]:
        """The query parameters of every ``QuerySendDetails`` received, oldest first."""
        return [r.query for r in self.requests if r.header("x-acs-action") == "QuerySendDetails"]

    @property
    def query_times(self) -> list[float]:
        """When each ``QuerySendDetails`` arrived (unix time), oldest first."""
        return [r.at for r in self.requests if r.header("x-acs-action") == "QuerySendDetails"]

    def push_report(self, biz_id: str, success: bool, err_code: str = "DELIVERED",
                    err_msg: str = "用户接收成功") -> dict[str, Any]:  # fmt: skip
        """One SmsReport entry about ``biz_id``, as the push sends it."""
        with self.lock:
            record = self.records[biz_id]
        return {
            "phone_number": record["PhoneNum"],
            "send_time": record["SendDate"],
            "report_time": _beijing(),
            "success": success,
            "err_code": err_code,
            "err_msg": err_msg,
            "sms_size": "1",
            "biz_id": biz_id,
            "out_id": "",
        }

    def push_reports(self, url: str, body: Any) -> concurrent.futures.Future[tuple[int, str]]:
        """POST ``body`` (the JSON array of reports) to ``url`` from the fake's own loop, as
        the SmsReport push does; ``await asyncio.wrap_future(...)`` gives (status, body)."""
        assert self._loop is not None, "start the fake first"

        async def call() -> tuple[int, str]:
            async with aiohttp.ClientSession() as session, session.post(url, json=body) as answer:
                return answer.status, await answer.text()

        return asyncio.run_coroutine_threadsafe(call(), self._loop)

    @property
    def sms(self) -> list[dict[str, str]]:
        """The query parameters of every ``SendSms`` received, oldest first."""
        return [r.query for r in self.requests if r.header("x-acs-action") == "SendSms"]

    def template_params(self) -> list[dict[str, Any]]:
        """``TemplateParam`` of every ``SendSms``, decoded from JSON."""
        return [json.loads(q.get("TemplateParam", "null")) for q in self.sms]

    def endpoint(self, timeout_seconds: float = 1) -> dict[str, Any]:
        """The ``sms.endpoints.aliyun`` config that points the service at this fake."""
        endpoint = {"host": self.host, "protocol": self.scheme, "timeout_seconds": timeout_seconds}
        return endpoint | ({"ca_file": self.ca_file} if self.ca_file else {})


def logto_aliyun_json(**overrides: Any) -> dict[str, Any]:
    """Logto's Aliyun SMS connector JSON, as an admin pastes it, with test credentials.

    SignIn and Generic have a code per region (``SMS_1...`` in China, ``SMS_9...`` overseas);
    Register and ForgotPassword one code for both.
    """
    data: dict[str, Any] = {
        "accessKeyId": "LTAI5tTestKeyId",
        "accessKeySecret": "AliyunS3cretValue",
        "signName": "阿克米",
        "templates": [
            {"type": 2, "usageType": "SignIn",
             "templateCode": {"china": "SMS_100001", "overseas": "SMS_900001"}},
            {"type": 2, "usageType": "Register", "templateCode": "SMS_100002"},
            {"type": 2, "usageType": "ForgotPassword", "templateCode": "SMS_100003"},
            {"type": 2, "usageType": "Generic",
             "templateCode": {"china": "SMS_100000", "overseas": "SMS_900000"}},
        ],
    }  # fmt: skip
    return data | overrides


@pytest.fixture
def fake_aliyun() -> Iterator[FakeAliyun]:
    """A started :class:`FakeAliyun`, stopped after the test."""
    with started(FakeAliyun) as server:
        yield server
