"""needs_review's deterministic triggers: each a review reason, whatever the model's confidence."""

from __future__ import annotations

import pytest

from tests.report_samples import sample_record, sample_report
from voice_agent.call_record import CallEvent, CallRecord
from voice_agent.postcall import review
from voice_agent.postcall.reporter import fallback_outcome
from voice_agent.tooling.audit import ToolAuditEntry


def _reasons(record: CallRecord | None = None, **report_fields: str) -> list[str]:
    report = sample_report().report
    if report_fields:
        report = report.model_copy(update=report_fields)
    return review.review_reasons(report, record or sample_record("v1"), review_confidence=0.6)


def test_a_clean_confident_report_of_a_complete_call_needs_no_review() -> None:
    """The sample call and report trip no trigger."""
    assert _reasons() == []


@pytest.mark.parametrize(
    "summary",
    [
        "The caller asked for <b>help</b> with a refund.",
        "See [the refund policy](https://example.com/refunds) for details.",
        "The refund is **approved** already.",
        "Run `reset-vpn` on the laptop.",
        "# Summary\nThe caller asked for a refund.",
    ],
)
def test_markup_in_a_report_field_is_a_review_reason(summary: str) -> None:
    """HTML tags, markdown links, bold, code or headings in the text flag the report."""
    assert review.MARKUP in _reasons(summary=summary)


@pytest.mark.parametrize(
    "summary",
    [
        "The caller was sent to https://evil.example/reset to reset the password.",
        "Point the caller at www.example.org/help for the form.",
        "Ask them to write to mailto:billing@example.com.",
    ],
)
def test_a_link_in_a_report_field_is_a_review_reason(summary: str) -> None:
    """A URL in staff-facing text (a customer would get it) flags the report."""
    assert review.URL in _reasons(summary=summary)


def test_a_tool_error_in_the_audit_is_a_review_reason() -> None:
    """A tool that errored, timed out or had its breaker open during the call flags it."""
    record = sample_record("v1")
    record.tool_audit.append(
        ToolAuditEntry(at=1.0, tool="get_incident_status", outcome="timeout", error="5 s")
    )
    assert _reasons(record) == [review.TOOL_ERRORS]


def test_a_partial_recovered_record_gives_both_reasons() -> None:
    """A record rebuilt from an orphaned journal is flagged partial and recovered."""
    record = sample_record("v1", complete=False)
    record.events.append(CallEvent(at=1.0, event=review.RECOVERED))
    assert _reasons(record) == [review.PARTIAL, review.RECOVERED]


def test_turns_the_agent_could_not_answer_are_a_review_reason() -> None:
    """A call where a stage failed (the caller heard the fallback line) is flagged."""
    record = sample_record("v1")
    record.events.append(CallEvent(at=1.0, event="stage_failed", data={"stage": "llm"}))
    assert _reasons(record) == [review.AGENT_FAILURES]


def test_low_confidence_comes_with_the_other_reasons() -> None:
    """Confidence under the threshold is one reason among the deterministic ones."""
    report = sample_report(confidence=0.2).report.model_copy(update={"summary": "See www.x.io"})
    reasons = review.review_reasons(report, sample_record("v1"), review_confidence=0.6)
    assert reasons == [review.LOW_CONFIDENCE, review.URL]


def test_the_fallback_report_carries_the_record_reasons_too() -> None:
    """The deterministic report is flagged as the fallback and with what the record says."""
    record = sample_record("v1", complete=False)
    record.tool_audit.append(ToolAuditEntry(at=1.0, tool="t", outcome="error", error="boom"))
    outcome = fallback_outcome(record, "fallback")
    assert outcome.stored.needs_review
    assert outcome.stored.review_reasons == ["fallback", review.PARTIAL, review.TOOL_ERRORS]
