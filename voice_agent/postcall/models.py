"""The post-call report and the stored view of a call: the shapes the worker, store and API share.

`PostCallReport` is what the model must produce (validated by pydantic; the JSON schema is given to
the model as its structured-output format). `CallStatus` is where a call is in the pipeline.
`CallSummary`, `CallDetail` and `CallPage` are what the store returns and the staff API sends.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voice_agent.call_record import CallRecord


class CallStatus(StrEnum):
    """Where a call is in the post-call pipeline."""

    QUEUED = "queued"  # handed over, waiting for a worker
    PROCESSING = "processing"  # a worker is on it
    DONE = "done"  # report stored, integrations done
    DEAD = "dead"  # retries exhausted; staff can retry it


class ActionItem(BaseModel):
    """Something someone must do after the call."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=500)
    owner: Literal["agent", "support", "customer", "engineering", "unknown"]


class EmailDraft(BaseModel):
    """A follow-up email for a person to review and send; never sent by the system."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=5000)


class TicketFields(BaseModel):
    """What a support ticket for this call should say."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    priority: Literal["low", "normal", "high", "urgent"]
    category: str = Field(min_length=1, max_length=80)
    description: str = Field(min_length=1, max_length=5000)


class PostCallReport(BaseModel):
    """The structured report the model writes about one call."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(min_length=1, max_length=2000)
    action_items: list[ActionItem] = Field(default_factory=list, max_length=20)
    email_draft: EmailDraft
    resolution_status: Literal["resolved", "unresolved", "escalated", "follow_up_needed"]
    sentiment: Literal["positive", "neutral", "negative"]
    ticket: TicketFields
    confidence: float = Field(ge=0.0, le=1.0)


class StoredReport(BaseModel):
    """A report as kept in the store, with how it came about."""

    report: PostCallReport
    needs_review: bool
    review_reasons: list[str] = Field(default_factory=list)  # e.g. "fallback", "low_confidence"
    model: str | None = None  # the model that wrote it; None for the deterministic fallback
    attempts: int = 1  # model calls it took


class JobEvent(BaseModel):
    """One step in a call's post-call history (queued, started, retried, failed, done...)."""

    at: float
    event: str
    detail: dict[str, Any] = Field(default_factory=dict)


class IntegrationResult(BaseModel):
    """The outcome of one side effect (ticket, webhook, email draft), keyed for idempotency."""

    name: str  # "ticket", "webhook", "email_draft"
    idempotency_key: str
    ok: bool
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    at: float


class CallSummary(BaseModel):
    """One line of the staff list: enough to pick a call without loading its record."""

    call_id: str
    status: CallStatus
    needs_review: bool
    started_at: datetime  # UTC
    ended_at: datetime | None  # UTC; None when the call never ended cleanly
    duration_s: float | None
    user_id: str | None
    summary: str | None  # None until a report exists
    resolution_status: str | None
    sentiment: str | None
    turns: int  # transcript turns, both speakers
    attempts: int  # post-call claims so far
    updated_at: datetime  # UTC


class CallDetail(CallSummary):
    """Everything kept about one call: the record, the report, side effects and job history."""

    room: str
    source: str  # who handed the record over first: "agent", "webhook", "spool"...
    created_at: datetime  # UTC
    last_error: str | None
    record: CallRecord
    report: StoredReport | None
    integrations: list[IntegrationResult] = Field(default_factory=list)
    job_history: list[JobEvent] = Field(default_factory=list)


class CallPage(BaseModel):
    """One page of calls, newest first; `next_cursor` fetches the next, None at the end."""

    items: list[CallSummary]
    next_cursor: str | None = None
