"""Authentik's generic SMS provider: the ``intakes.authentik`` section (its hook is
:mod:`otp_service.intake.authentik`).
"""

from __future__ import annotations

from .credentials import tokens
from .fields import section


@section
class AuthentikIntakeConfig:
    """Authentik's generic SMS provider (its SMS authenticator setup stage)."""

    tokens: tuple[str, ...] = tokens(
        "what Authentik sends: its Auth field as a bearer token, or as the password of basic "
        "auth (any user); several: a rotation"
    )
