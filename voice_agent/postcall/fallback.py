"""The deterministic report: what the record alone says, when the model could not say it.

Built only from the call record (turns, tool audit, end reason), so it is the same every time
for the same record. It is always flagged for review (`confidence` 0): it tells staff what
happened, not what it meant.
"""

from __future__ import annotations

from voice_agent.call_record import CallRecord
from voice_agent.postcall.models import (
    ActionItem,
    EmailDraft,
    PostCallReport,
    TicketFields,
)
from voice_agent.tooling.audit import ToolAuditEntry

_SUMMARY_MAX = 2000
_DESCRIPTION_MAX = 5000
_QUOTE_MAX = 240
_FAILED = {"error", "timeout", "breaker_open"}


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _is_escalation(entry: ToolAuditEntry) -> bool:
    return entry.outcome == "ok" and any(
        word in entry.tool.lower() for word in ("escalat", "handoff", "transfer", "human")
    )


def _is_ticket(entry: ToolAuditEntry) -> bool:
    return entry.outcome == "ok" and "ticket" in entry.tool.lower()


def _summary(record: CallRecord) -> str:
    said = [t for t in record.transcript if t.speaker == "user" and t.text.strip()]
    agent_turns = sum(1 for t in record.transcript if t.speaker == "agent")
    parts = [
        f"Call {record.call_id}: {len(said)} caller turn(s), {agent_turns} agent turn(s)"
        + (f", ended ({record.end_reason})." if record.end_reason else ".")
    ]
    if not record.complete:
        parts.append("The record is partial: the agent did not finish the call cleanly.")
    if said:
        parts.append(f'The caller first said: "{_clip(said[0].text, _QUOTE_MAX)}".')
        if len(said) > 1:
            parts.append(f'Last: "{_clip(said[-1].text, _QUOTE_MAX)}".')
    else:
        parts.append("The caller said nothing the agent understood.")
    used = sorted({e.tool for e in record.tool_audit if e.outcome == "ok"})
    if used:
        parts.append(f"Tools used: {', '.join(used)}.")
    parts.append("Automatic summary unavailable; this report was built from the record alone.")
    return _clip(" ".join(parts), _SUMMARY_MAX)


def _action_items(record: CallRecord) -> list[ActionItem]:
    items = [
        ActionItem(
            text="Review this call: the automatic report could not be produced.", owner="support"
        )
    ]
    for entry in record.tool_audit:
        if len(items) >= 20:
            break
        if _is_escalation(entry):
            items.append(
                ActionItem(text=f"Follow up on the escalation ({entry.tool}).", owner="support")
            )
        elif _is_ticket(entry):
            ref = entry.result if isinstance(entry.result, str | int) else None
            text = f"Follow up on the ticket the agent created ({entry.tool}"
            items.append(
                ActionItem(text=_clip(f"{text}{f' {ref}' if ref else ''}).", 500), owner="support")
            )
        elif entry.outcome in _FAILED:
            items.append(
                ActionItem(
                    text=f"Check the failing tool {entry.tool} ({entry.outcome}).",
                    owner="engineering",
                )
            )
    return items


def fallback_report(record: CallRecord) -> PostCallReport:
    """A report built deterministically from `record`, with confidence 0."""
    summary = _summary(record)
    escalated = any(_is_escalation(e) for e in record.tool_audit)
    transcript = "\n".join(
        f"{t.speaker}: {' '.join(t.text.split())}" for t in record.transcript if t.text.strip()
    )
    description = _clip(summary, _SUMMARY_MAX) + (
        f"\n\nTranscript:\n{transcript}" if transcript else ""
    )
    if len(description) > _DESCRIPTION_MAX:
        description = description[: _DESCRIPTION_MAX - 1] + "…"
    return PostCallReport(
        summary=summary,
        action_items=_action_items(record),
        email_draft=EmailDraft(
            subject="Following up on your call with us",
            body=(
                "Hello,\n\nThank you for calling us today. We are reviewing your call and a member "
                "of our support team will get back to you shortly with the next steps.\n\n"
                "Kind regards,\nCustomer Support"
            ),
        ),
        resolution_status="escalated" if escalated else "follow_up_needed",
        sentiment="neutral",
        ticket=TicketFields(
            title=_clip(f"Call {record.call_id}: review needed", 200),
            priority="high" if escalated else "normal",
            category="call-review",
            description=description,
        ),
        confidence=0.0,
    )
