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
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from . import DROP, FakeServer, Recorded, Reply, started

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


class FakeAliyun(FakeServer):
    """Aliyun's ``SendSms`` on ``http://127.0.0.1:port/``, recording each request."""

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/", self.handle)]

    def default_reply(self, request: Recorded) -> Reply:
        """Accept the message: ``Code: OK`` with a ``BizId``."""
        return Reply(json=_ok())

    @property
    def sms(self) -> list[dict[str, str]]:
        """The query parameters of every ``SendSms`` received, oldest first."""
        return [r.query for r in self.requests if r.header("x-acs-action") == "SendSms"]

    def template_params(self) -> list[dict[str, Any]]:
        """``TemplateParam`` of every ``SendSms``, decoded from JSON."""
        return [json.loads(q.get("TemplateParam", "null")) for q in self.sms]

    def endpoint(self, timeout_seconds: float = 1) -> dict[str, Any]:
        """The ``sms.endpoints.aliyun`` config that points the service at this fake."""
        return {"host": self.host, "protocol": "http", "timeout_seconds": timeout_seconds}


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
