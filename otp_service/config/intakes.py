"""The ``intakes`` section: hooks other identity systems call to have a code delivered.

Each system is a section of its own under ``intakes`` (``intakes.<system>``), off unless
present: its routes (``POST /v1/hooks/<system>/<channel>``) answer 404 until then. Its secrets
come from the file, usually as ``${ENV}`` references, and are never shown (``secret=True``).
The systems are the entries of :data:`.registry.INTAKES`: each names its section's model (in its
own module, ``config/<system>.py``) and its hook (``intake/<system>.py``); this section reads
whichever are present and names none of them (:mod:`otp_service.intake.hook` says how to add one).
"""

from __future__ import annotations

import typing
from typing import Any

from .fields import section, setting
from .registry import intake_names, intakes_schema, read_intakes


# No docstring: the reference and the schema describe the section by its settings alone.
@section
class IntakesConfig:
    sections: tuple[tuple[str, Any], ...] = setting(
        "each identity system's hook settings, off unless present",
        default=(),
        read=lambda f, d: read_intakes(f),
        spread=intakes_schema(),
    )

    if not typing.TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            """``config.intakes.<system>``: that system's settings, or None when off (for tests
            and the REPL)."""
            if name in intake_names():
                return dict(self.sections).get(name)
            raise AttributeError(name)
