"""What one agent may do with tools: which ones, how often, and how long they and the user get."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from voice_agent.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolPolicy:
    """The allowlist and limits a `ToolRuntime` enforces for one call."""

    allowed: frozenset[str]
    max_calls_per_turn: int = 4
    max_calls_per_call: int = 20
    default_timeout_s: float
    confirm_timeout_s: float

    def __post_init__(self) -> None:
        if self.max_calls_per_turn < 1 or self.max_calls_per_call < 1:
            raise ValueError("tool call limits must be at least 1")
        if self.default_timeout_s <= 0 or self.confirm_timeout_s <= 0:
            raise ValueError("tool and confirmation timeouts must be positive")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        allowed: Iterable[str],
        max_calls_per_turn: int = 4,
        max_calls_per_call: int = 20,
    ) -> ToolPolicy:
        """A policy with the timeouts from settings and the allowlist and limits of a profile."""
        return cls(
            allowed=frozenset(allowed),
            max_calls_per_turn=max_calls_per_turn,
            max_calls_per_call=max_calls_per_call,
            default_timeout_s=settings.tool_timeout_s,
            confirm_timeout_s=settings.confirm_timeout_s,
        )
