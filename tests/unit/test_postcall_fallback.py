"""The deterministic fallback report: built from the record alone, always valid."""

from __future__ import annotations

from tests.report_samples import sample_record
from voice_agent.call_record import CallRecord
from voice_agent.postcall.fallback import fallback_report
from voice_agent.postcall.models import PostCallReport
from voice_agent.tooling.audit import ToolAuditEntry


def _with_tools(*entries: ToolAuditEntry) -> CallRecord:
    record = sample_record("f1")
    record.tool_audit = list(entries)
    return record


def test_same_record_gives_the_same_report() -> None:
    """Deterministic: two runs on one record are equal, and confidence is 0."""
    record = sample_record("f1")
    first, second = fallback_report(record), fallback_report(record)
    assert first == second
    assert first.confidence == 0.0
    assert PostCallReport.model_validate_json(first.model_dump_json()) == first


def test_summary_quotes_the_caller() -> None:
    """The summary names the call and quotes what the caller said first."""
    report = fallback_report(sample_record("f1"))
    assert "f1" in report.summary
    assert "charged me twice" in report.summary
    assert report.action_items[0].owner == "support"


def test_escalation_in_the_tool_audit_marks_it_escalated() -> None:
    """A successful escalation tool: resolution escalated, high priority, a follow-up item."""
    record = _with_tools(ToolAuditEntry(at=1, tool="escalate_to_human", outcome="ok"))
    report = fallback_report(record)
    assert report.resolution_status == "escalated"
    assert report.ticket.priority == "high"
    assert any("escalation" in item.text for item in report.action_items)


def test_failing_tools_become_engineering_items() -> None:
    """A tool that errored or timed out is an action item for engineering."""
    record = _with_tools(
        ToolAuditEntry(at=1, tool="lookup_invoice", outcome="timeout"),
        ToolAuditEntry(at=2, tool="create_ticket", outcome="ok", result="TCK-7"),
    )
    items = fallback_report(record).action_items
    assert any(i.owner == "engineering" and "lookup_invoice" in i.text for i in items)
    assert any("TCK-7" in i.text for i in items)


def test_huge_call_still_fits_the_report_limits() -> None:
    """A very long transcript and many tools still give a valid report."""
    lines = tuple(("user", "word " * 2000) for _ in range(50))
    record = sample_record("f2", lines=lines)
    record.tool_audit = [ToolAuditEntry(at=i, tool=f"t{i}", outcome="error") for i in range(60)]
    report = fallback_report(record)
    assert len(report.summary) <= 2000
    assert len(report.ticket.description) <= 5000
    assert len(report.action_items) <= 20


def test_silent_partial_call_says_so() -> None:
    """No caller speech and a partial record: the summary says both."""
    record = sample_record("f3", lines=(("agent", "Hello!"),), complete=False)
    summary = fallback_report(record).summary
    assert "partial" in summary
    assert "said nothing" in summary
