"""The hooks of other identity systems, by name: one line each (see :mod:`.hook`)."""

from __future__ import annotations

from collections.abc import Callable

from ..config.intakes import IntakesConfig
from . import authentik, generic, kratos, supabase, zitadel
from .hook import Hook

# name -> build(config.intakes): the hook, or None when its section is not configured.
BUILDERS: dict[str, Callable[[IntakesConfig], Hook | None]] = {
    "supabase": supabase.build,
    "authentik": authentik.build,
    "generic": generic.build,
    "zitadel": zitadel.build,
    "kratos": kratos.build,
}


def configured(intakes: IntakesConfig) -> list[Hook]:
    """The hooks whose sections are configured, in registration order."""
    return [hook for build in BUILDERS.values() if (hook := build(intakes)) is not None]
