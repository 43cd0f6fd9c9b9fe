"""Ory Kratos's courier (HTTP email delivery and the sms channel): the ``intakes.kratos`` section
(its hook is :mod:`otp_service.intake.kratos`).
"""

from __future__ import annotations

from .credentials import GENERATE, token_problem
from .fields import Fields, section, setting


def _long_secret(f: Fields, key: str) -> None:
    value = f.data.get(key)
    if isinstance(value, str) and token_problem(value) is not None:
        f.problem(key, "must be at least 16 characters without surrounding spaces", GENERATE)


@section
class KratosBasicAuthConfig:
    """Kratos's ``auth: {type: basic_auth, config: {user, password}}``."""

    user: str = setting("the user Kratos sends", example="kratos")
    password: str = setting(
        "the password Kratos sends", secret=True, example="${KRATOS_HOOK_PASSWORD}"
    )

    def checked(self, f: Fields) -> KratosBasicAuthConfig:
        _long_secret(f, "password")
        return self


@section
class KratosApiKeyConfig:
    """Kratos's ``auth: {type: api_key, config: {name, value, in}}``."""

    name: str = setting("the header (or cookie) name Kratos sends the key in", example="X-Api-Key")
    value: str = setting(
        "the key Kratos sends, verbatim", secret=True, example="${KRATOS_HOOK_KEY}"
    )
    where: str = setting(
        "header or cookie, as in Kratos's config", default="header", key="in",
        choices=("header", "cookie"),
    )  # fmt: skip

    def checked(self, f: Fields) -> KratosApiKeyConfig:
        _long_secret(f, "value")
        return self


@section
class KratosIntakeConfig:
    """Ory Kratos's courier: HTTP email delivery and the sms channel (basic auth or an API key)."""

    basic_auth: KratosBasicAuthConfig | None = setting(
        "the user and password of Kratos's basic_auth", default=None
    )
    api_key: KratosApiKeyConfig | None = setting(
        "the name, value and place (in) of Kratos's api_key", default=None
    )

    def checked(self, f: Fields) -> KratosIntakeConfig:
        given = [k for k in ("basic_auth", "api_key") if f.data.get(k) is not None]
        if len(given) != 1:
            problem = "sets both basic_auth and api_key" if given else "sets no credentials"
            f.problem(
                None, problem,
                "set exactly one: basic_auth: {user, password} or api_key: {name, value, in}, "
                "as in Kratos's request_config.auth",
            )  # fmt: skip
        return self
