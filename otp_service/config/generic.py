"""The generic hook, for any caller: the ``intakes.generic`` section (its hook is
:mod:`otp_service.intake.generic`).
"""

from __future__ import annotations

from .credentials import tokens
from .fields import section


@section
class GenericIntakeConfig:
    """Any caller: JSON {to, code or message, type, locale} with a bearer token."""

    tokens: tuple[str, ...] = tokens("bearer tokens the caller sends; several: a rotation")
