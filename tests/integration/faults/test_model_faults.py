"""Fault matrix, the model endpoint: it answers 500, times out, or hangs mid-stream. The caller
hears the fallback line, the call goes on, and its report is flagged for review."""

from __future__ import annotations

import pytest

from tests.integration.faults.fault_stack import FaultStack
from voice_agent.agent.options import SessionOptions
from voice_agent.testing.openai_script import ChatReply, ChatScript, ErrorReply, Hang, Timeline

pytestmark = pytest.mark.integration

FALLBACK_LINE = SessionOptions(instructions="", greeting="").fallback_line


def _stalling() -> ChatReply:
    return ChatReply(text="Let me see what we", timeline=Timeline(stall_after=2))


@pytest.mark.parametrize(
    ("fault", "replies"),
    [
        ("answers 500", (ErrorReply(500), ErrorReply(500))),
        ("times out", (Hang(), Hang())),
        ("hangs mid-stream", (_stalling(), _stalling())),
    ],
)
async def test_model_endpoint_fault(
    stack: FaultStack, fault: str, replies: tuple[ChatScript, ...]
) -> None:
    """The model fails the agent's request and its one retry: the caller hears the fallback
    line; the call is recorded once, complete, and flagged for the failed turn."""
    say = f"Why is the wifi slow when the model {fault}"
    stack.script(say, *replies)
    before = await stack.calls_listed()
    result = await stack.call(say)
    assert result["ok"], result
    assert result["turns"][0]["agent_text"] == FALLBACK_LINE
    stored = await stack.settle(result["call_id"], before)
    assert stored["status"] == "done"
    assert stored["record"]["complete"]
    failed = [e for e in stored["record"]["events"] if e["event"] == "stage_failed"]
    assert [e["data"]["stage"] for e in failed] == ["llm"]
    assert stored["report"]["review_reasons"] == ["agent_failures"]
