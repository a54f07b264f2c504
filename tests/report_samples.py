"""Realistic calls and reports for the store, API and reports page tests."""

from __future__ import annotations

from voice_agent.call_record import (
    CallEvent,
    CallRecord,
    CallUsage,
    ClientActionAuditEntry,
    TranscriptTurn,
    TurnMetricsRecord,
)
from voice_agent.postcall.models import (
    ActionItem,
    EmailDraft,
    IntegrationResult,
    PostCallReport,
    StoredReport,
    TicketFields,
)
from voice_agent.tooling.audit import ToolAuditEntry

# 2025-03-14 09:30:00 UTC; samples are laid out from here.
BASE_T = 1_741_944_600.0


def sample_record(
    call_id: str,
    *,
    started_at: float = BASE_T,
    lines: tuple[tuple[str, str], ...] | None = None,
    complete: bool = True,
    user_id: str | None = "customer-42",
) -> CallRecord:
    """A finished call with a transcript, per-turn latency, a tool call and a client action."""
    lines = lines or (
        ("agent", "Hello! How can I help you today?"),
        ("user", "My last invoice charged me twice for the March subscription."),
        ("agent", "I am sorry about that. Let me look up your invoices."),
        ("user", "Thanks. The invoice number is 4471."),
        ("agent", "I can see two charges of 29 euros on invoice 4471; I will open a refund."),
    )
    transcript: list[TranscriptTurn] = []
    t = started_at + 0.5
    for i, (speaker, text) in enumerate(lines):
        kind = "user" if speaker == "user" else ("greeting" if i == 0 else "reply")
        transcript.append(
            TranscriptTurn(
                speaker=speaker,
                text=text,
                started_at=t,
                ended_at=t + 2.5,
                interrupted=(i == 2),
                kind=kind,
            )
        )
        t += 3.2
    metrics = [
        TurnMetricsRecord(
            turn=n,
            eou_delay_ms=480.0 + 20 * n,
            stt_ms=150.0 + 10 * n,
            llm_ttft_ms=320.0 + 40 * n,
            tts_ttfb_ms=140.0 + 5 * n,
            voice_to_voice_ms=1210.0 + 90 * n,
            interrupted=(n == 1),
        )
        for n in range(1, 3)
    ]
    return CallRecord(
        call_id=call_id,
        room=f"call-{call_id}",
        user_id=user_id,
        started_at=started_at,
        ended_at=t if complete else None,
        end_reason="user_hangup" if complete else None,
        transcript=transcript,
        metrics=metrics,
        events=[CallEvent(at=started_at, event="call.started")],
        tool_audit=[
            ToolAuditEntry(
                at=started_at + 8,
                tool="lookup_invoice",
                tool_call_id="tc_1",
                turn=2,
                arguments={"invoice_id": "4471"},
                outcome="ok",
                result={"charges": 2, "amount_eur": 29},
                duration_ms=84.2,
                idempotency_key=f"{call_id}:tc_1",
            ),
            ToolAuditEntry(
                at=started_at + 12,
                tool="issue_refund",
                tool_call_id="tc_2",
                turn=2,
                arguments={"invoice_id": "4471", "amount_eur": 29},
                outcome="declined",
                confirmation="declined",
                duration_ms=15000.0,
            ),
        ],
        client_action_audit=[
            ClientActionAuditEntry(
                at=started_at + 11,
                direction="to_app",
                type="client_action",
                id="ca_1",
                action="request_confirm",
                outcome="sent",
            ),
            ClientActionAuditEntry(
                at=started_at + 14,
                direction="from_app",
                type="user_confirmed",
                id="ca_1",
                outcome="accepted",
                detail="ok=false",
            ),
        ],
        usage=CallUsage(
            stt_audio_s=21.4,
            tts_audio_s=17.9,
            llm_requests=3,
            llm_prompt_tokens=1840,
            llm_completion_tokens=212,
        ),
        complete=complete,
    )


def sample_report(
    summary: str = "Customer was charged twice on invoice 4471; a refund was offered.",
    *,
    needs_review: bool = False,
    resolution: str = "follow_up_needed",
    sentiment: str = "neutral",
    confidence: float = 0.86,
) -> StoredReport:
    """A stored report as the post-call worker would write it."""
    report = PostCallReport(
        summary=summary,
        action_items=[
            ActionItem(text="Refund the duplicate charge on invoice 4471", owner="support"),
            ActionItem(text="Confirm the refund reached the card", owner="customer"),
        ],
        email_draft=EmailDraft(
            subject="Your duplicate charge on invoice 4471",
            body="Hello,\n\nWe are sorry you were charged twice. We have started a refund of "
            "29 euros; it should reach your card within five working days.\n\nBest regards",
        ),
        resolution_status=resolution,
        sentiment=sentiment,
        ticket=TicketFields(
            title="Duplicate charge on invoice 4471",
            priority="high",
            category="billing",
            description="Two charges of 29 EUR for the March subscription.",
        ),
        confidence=confidence,
    )
    reasons = ["low_confidence"] if needs_review else []
    return StoredReport(
        report=report, needs_review=needs_review, review_reasons=reasons, model="gpt-4o-mini"
    )


def sample_ticket(call_id: str, *, ok: bool = True, at: float = BASE_T + 120) -> IntegrationResult:
    """The ticket integration's outcome."""
    return IntegrationResult(
        name="ticket",
        idempotency_key=f"{call_id}:ticket",
        ok=ok,
        result={"ticket_id": "T-1042"} if ok else {},
        error=None if ok else "ticket service answered 503",
        at=at,
    )
