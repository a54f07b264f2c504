"""The audit record of one tool request: what was asked, what became of it.

Every request the tool runtime sees ends in exactly one `ToolAuditEntry`; the call record keeps
them in order (`CallRecord.tool_audit`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from voice_agent.tooling.confirm import ConfirmationState

ToolOutcome = Literal[
    "ok",  # ran and returned a result
    "refused",  # unknown or not allowed for this agent
    "invalid",  # arguments failed validation; nothing ran
    "timeout",  # ran past its time limit and was cancelled
    "error",  # ran and raised
    "breaker_open",  # its circuit breaker is open; nothing ran
    "declined",  # a destructive tool the user declined (or did not confirm in time)
    "limit",  # over the per-turn or per-call tool call limit
    "duplicate",  # same idempotency key as an earlier run; the earlier result was reused
    "cancelled",  # cancelled by a barge-in per the tool's policy
    "skipped",  # from a generation interrupted before it was committed; never ran
    "started",  # a background tool passed its guards and runs; its outcome follows, same key
]


class ToolAuditEntry(BaseModel):
    """One tool request and what became of it."""

    at: float
    tool: str
    tool_call_id: str | None = None
    turn: int | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)  # secrets redacted
    outcome: ToolOutcome
    confirmation: ConfirmationState = "not_needed"
    result: Any = None
    error: str | None = None
    duration_ms: float | None = None
    idempotency_key: str | None = None
