"""The hooks of the configured identity systems, from their registry entries
(:data:`otp_service.config.registry.INTAKES`): this module names none of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config.intakes import IntakesConfig
from ..config.registry import INTAKE, load
from .hook import Hook


def configured(intakes: IntakesConfig) -> list[Hook]:
    """The hooks whose sections are configured, in registration order, each built with its
    settings (its module imported now)."""
    hooks = []
    for name, settings in intakes.sections:
        build: Callable[[Any], Hook] = load(INTAKE[name].hook)
        hooks.append(build(settings))
    return hooks
