"""Logto's Aliyun SMS connector JSON (``sms.aliyun``, Dysmsapi 2017-05-25 ``SendSms``)."""

from __future__ import annotations

from dataclasses import dataclass

from .fields import Declared, Fields, section, setting

_CODE = {"type": "string", "minLength": 1}


@dataclass(frozen=True)
class AliyunTemplate:
    usage_type: str
    china: str  # the template code for mainland China numbers
    overseas: str  # ... and for the others (the same code when one string was given)


def _code(f: Fields, key: str) -> tuple[str, str] | None:
    code = f.data.get(key)
    if isinstance(code, str) and code:
        return code, code
    if isinstance(code, dict) and all(
        isinstance(code.get(k), str) and code.get(k) for k in ("china", "overseas")
    ):
        return code["china"], code["overseas"]
    f.problem(key, "must be a template code or {china, overseas}", "e.g. SMS_123456789")
    return None


def _templates(f: Fields, d: Declared) -> tuple[AliyunTemplate, ...]:
    entries = f.items(d.key)
    if entries is None:
        f.problem(d.key, "is required", "paste the templates array of the connector")
        return ()
    templates: list[AliyunTemplate] = []
    for path, item in entries:
        entry = Fields(item if isinstance(item, dict) else {}, path, f.problems)
        if not isinstance(item, dict):
            entry.problem(None, "must be an object", "use {usageType, templateCode}")
            continue
        entry.reject_unknown(("usageType", "templateCode", "type"))
        usage = entry.string("usageType", required=True)
        code = _code(entry, "templateCode")
        if usage and code is not None:
            templates.append(AliyunTemplate(usage, *code))
    f.require_usage_types(d.key, (t.usage_type for t in templates))
    return tuple(templates)


def _token(f: Fields, d: Declared) -> str | None:
    token = f.string(d.key)
    if token is not None and (len(token) < 16 or not token.isascii() or not token.isprintable()):
        f.problem(
            d.key,
            "must be at least 16 printable ASCII characters",
            "generate one: python -c 'import secrets; print(secrets.token_urlsafe(24))'",
        )
        return None
    return token


@section
class AliyunConfig:
    """Logto's Aliyun SMS connector (Dysmsapi 2017-05-25, ``SendSms``)."""

    access_key_id: str = setting(
        "the AccessKey ID", key="accessKeyId", fix="copy the AccessKey ID from Aliyun RAM"
    )
    access_key_secret: str = setting(
        "the AccessKey secret", key="accessKeySecret", secret=True,
        fix="e.g. ${ALIYUN_ACCESS_KEY_SECRET}",
    )  # fmt: skip
    sign_name: str = setting(
        "the approved SMS signature", key="signName",
        fix="set signName, the approved SMS signature",
    )  # fmt: skip
    templates: tuple[AliyunTemplate, ...] = setting(
        "the template code per usage type: one code, or {china, overseas}",
        read=_templates,
        schema={
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["usageType", "templateCode"],
                "properties": {
                    "usageType": {"type": "string"},
                    "templateCode": {
                        "anyOf": [
                            _CODE,
                            {
                                "type": "object",
                                "required": ["china", "overseas"],
                                "properties": {"china": _CODE, "overseas": _CODE},
                            },
                        ]
                    },
                    "type": {"description": "accepted, no effect"},
                },
            },
        },
    )
    strict_phone_region_number_check: bool = setting(
        "send mainland numbers without +86 (Logto's strict region check)",
        default=False,
        key="strictPhoneRegionNumberCheck",
    )

    report_token: str | None = setting(
        "take Aliyun's pushed SMS reports at /v1/receipts/aliyun?token=<this> (>= 16 "
        "characters; not in Logto's connector: add it); unset: QuerySendDetails only",
        default=None, key="reportToken", secret=True, read=_token,
        schema={"type": ["string", "null"], "minLength": 16},
    )  # fmt: skip

    def template(self, usage: str) -> AliyunTemplate | None:
        """The template for ``usage``, else the Generic one (Logto's fallback)."""
        by_type = {t.usage_type: t for t in self.templates}
        return by_type.get(usage) or by_type.get("Generic")
