"""Why staff should look at a report: `needs_review` and its reasons.

The model's own confidence is one reason; the others are deterministic, so a confident model
cannot talk a report past them: markup or links in what staff would copy to a customer (the
transcript is untrusted input, and a model can be led into echoing it), tool errors during the
call, a record that is partial or was recovered from a journal, turns the agent could not answer,
and the deterministic fallback report itself.
"""

from __future__ import annotations

import re

from voice_agent.call_record import CallRecord
from voice_agent.postcall.models import PostCallReport

LOW_CONFIDENCE = "low_confidence"
MARKUP = "markup_in_report"
URL = "url_in_report"
TOOL_ERRORS = "tool_errors"
PARTIAL = "partial_record"
RECOVERED = "recovered_from_journal"
AGENT_FAILURES = "agent_failures"

# Tool outcomes that mean the tool or its system failed (not the model's arguments or a refusal).
_TOOL_FAILURES = frozenset({"error", "timeout", "breaker_open"})

_MARKUP_RE = re.compile(
    r"<\s*/?\s*[A-Za-z][^>]*>"  # HTML or XML tags
    r"|!?\[[^\]\n]*\]\([^)\n]*\)"  # markdown links and images
    r"|\*\*[^*\n]+\*\*|__[^_\n]+__"  # markdown bold
    r"|`"  # code spans and fences
    r"|(?m:^\s{0,3}#{1,6}\s)"  # markdown headings
)
_URL_RE = re.compile(r"\b(?:[a-z][a-z0-9+.-]*://|www\.)\S+|\bmailto:\S+", re.IGNORECASE)


def report_texts(report: PostCallReport) -> list[str]:
    """Every free-text field of a report."""
    texts = [report.summary, report.email_draft.subject, report.email_draft.body]
    texts += [item.text for item in report.action_items]
    texts += [report.ticket.title, report.ticket.category, report.ticket.description]
    return texts


def record_reasons(record: CallRecord) -> list[str]:
    """Reasons the call record alone gives."""
    reasons = []
    if not record.complete:
        reasons.append(PARTIAL)
    if any(e.event == RECOVERED for e in record.events):
        reasons.append(RECOVERED)
    if any(entry.outcome in _TOOL_FAILURES for entry in record.tool_audit):
        reasons.append(TOOL_ERRORS)
    if any(e.event == "stage_failed" for e in record.events):
        reasons.append(AGENT_FAILURES)
    return reasons


def content_reasons(report: PostCallReport) -> list[str]:
    """Reasons the report's text gives: markup or links where plain prose belongs."""
    texts = report_texts(report)
    reasons = []
    if any(_MARKUP_RE.search(text) for text in texts):
        reasons.append(MARKUP)
    if any(_URL_RE.search(text) for text in texts):
        reasons.append(URL)
    return reasons


def review_reasons(
    report: PostCallReport, record: CallRecord, *, review_confidence: float
) -> list[str]:
    """Why staff should look at a model-written report (empty: no need)."""
    reasons = [LOW_CONFIDENCE] if report.confidence < review_confidence else []
    return reasons + content_reasons(report) + record_reasons(record)
