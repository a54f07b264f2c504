"""Asking the user before a destructive tool runs.

The runtime builds a `ConfirmationRequest` and awaits a `Confirmer` (the call session sends a
`request_confirm` client action and waits for `user_confirmed`). The runtime applies the
confirmation time limit itself, so a confirmer may simply wait for the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

ConfirmationAnswer = Literal["confirmed", "declined", "timeout"]
"""What asking the user came to (no answer in time, or a barge-in, counts as declined)."""

CONFIRMATION_ANSWERS: frozenset[str] = frozenset(get_args(ConfirmationAnswer))

ConfirmationState = Literal["not_needed", ConfirmationAnswer]
"""A tool request's confirmation, in its audit record: not needed, or the answer."""


@dataclass(frozen=True, slots=True)
class ConfirmationRequest:
    """What the user is asked to confirm; `arguments` have secrets redacted."""

    tool: str
    prompt: str
    arguments: dict[str, Any] = field(default_factory=dict)
    tool_call_id: str | None = None


class Confirmer(Protocol):
    """Asks the user and returns their answer."""

    async def __call__(self, request: ConfirmationRequest) -> ConfirmationAnswer:
        """ "confirmed" or "declined" (or "timeout" if it gives up itself)."""
        ...
