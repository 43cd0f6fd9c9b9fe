"""What the OpenAPI document says of a hook's routes (``POST /v1/hooks/<system>/<channel>``).

Each :class:`~.hook.Hook` carries its :class:`HookDoc` (``doc``): a summary, a JSON Schema
summarising the body the system sends (extra keys accepted, as the hooks accept them), the
security schemes it authenticates with — its own credentials (``intakes.<system>``), never
``auth.tokens`` — and, for a system that hears every refusal inside a 200, that answer.
:func:`otp_service.http.openapi.document` turns the configured hooks' docs into operations and
knows no system by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..message.compose import Channel

Schema = dict[str, Any]
Schemes = dict[str, Schema]  # security scheme name -> OpenAPI security scheme object

STR: Schema = {"type": "string"}
OBJ: Schema = {"type": "object"}


def obj(required: list[str], **properties: Schema) -> Schema:
    """An object schema with these properties (``required`` of them), extra keys accepted."""
    return {
        "type": "object",
        **({"required": required} if required else {}),
        "properties": properties,
        "additionalProperties": True,
    }


@dataclass(frozen=True)
class Answer:
    """The answer of a system that hears every outcome inside a 200 (its own body), but for
    ``errors``, answered with the house error body."""

    description: str
    schema: Schema
    errors: tuple[int, ...]


@dataclass(frozen=True)
class HookDoc:
    """One system's OpenAPI entry: a summary, the body per channel, its security schemes (a
    hook whose schemes depend on its settings says so in :meth:`~.hook.Hook.schemes`)."""

    summary: str
    bodies: Mapping[Channel, Schema]
    schemes: Schemes = field(default_factory=dict)
    answer: Answer | None = None  # None: the house answers (200, 202, 204 and the errors)
