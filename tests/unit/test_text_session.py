"""A text session keeps a call's rules: the call's time limit, the fallback line when the model
fails, confirmations through the session's `Confirmations`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.test_background_tools import kit_for, profile_for
from voice_agent.agent.options import SessionOptions
from voice_agent.agent.text_session import TextOutput, TextSession
from voice_agent.call_record import FileRecordSink
from voice_agent.chat import ToolCall
from voice_agent.exceptions import ProviderError
from voice_agent.providers.base import LLM
from voice_agent.providers.fake import FakeCompletion, FakeLLM, FakeTimeline
from voice_agent.tooling import ConfirmationAnswer, ToolContext, tool


class No:
    """Every confirmation is answered no."""

    hint = "Please answer y or n."
    available = True

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def ask(self, *, prompt: str, tool: str, timeout_s: float) -> ConfirmationAnswer:
        self.asked.append(prompt)
        return "declined"


ran: list[str] = []


@tool(destructive=True, confirm="Wipe the logs of {host}?")
async def wipe_logs(ctx: ToolContext, *, host: str) -> dict[str, Any]:
    """Delete a host's logs."""
    ran.append(host)
    return {"wiped": host}


def session(
    tmp_path: Path, llm: LLM, confirmations: No | None = None, **options: Any
) -> TextSession:
    return TextSession(
        options=SessionOptions(instructions="Help.", greeting="Hi.", **options),
        profile=profile_for([wipe_logs]),
        llm=llm,
        kit=kit_for(tmp_path, [wipe_logs]),
        sink=FileRecordSink(tmp_path / "records"),
        journal_dir=tmp_path / "calls",
        confirmations=confirmations or No(),
    )


async def test_a_declined_confirmation_runs_nothing_and_the_agent_says_so(tmp_path: Path) -> None:
    """The question goes to the session's confirmations; "no" leaves the tool unrun."""
    call = ToolCall(id="c1", name="wipe_logs", arguments=json.dumps({"host": "db1"}))
    llm = FakeLLM([FakeCompletion(tool_calls=[call]), FakeCompletion(text="Okay, I left them.")])
    no = No()
    text = session(tmp_path, llm, no)
    reply = await text.send("Wipe the logs on db1.")
    assert no.asked == ["Wipe the logs of db1?"]
    assert ran == []
    assert reply.text == "Wipe the logs of db1? Please answer y or n. Okay, I left them."
    assert [(a.outcome, a.confirmation) for a in reply.tool_audit] == [("declined", "declined")]
    await text.close()


async def test_a_failed_model_gets_the_fallback_line_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    """The model failing (after its retry) is answered with the fallback line; the next
    message is answered normally."""
    error = ProviderError("down", provider="fake.llm", retryable=False)
    llm = FakeLLM(
        [FakeCompletion(text="x", timeline=FakeTimeline(error=error)), FakeCompletion("Back.")]
    )
    text = session(tmp_path, llm)
    failed = await text.send("Hello?")
    assert failed.failed
    assert failed.text == SessionOptions(instructions="-", greeting="-").fallback_line
    assert (await text.send("Hello again?")).text == "Back."
    record = await text.close()
    assert [e.event for e in record.events].count("stage_failed") == 1


async def test_past_the_call_time_limit_the_agent_says_goodbye_and_the_session_ends(
    tmp_path: Path,
) -> None:
    """Over `max_call_s`, a message gets the goodbye line, and the record says why it ended."""
    llm = FakeLLM([])
    text = session(tmp_path, llm, max_call_s=0.0)
    reply = await text.send("Still there?")
    assert reply.text == SessionOptions(instructions="-", greeting="-").goodbye_line
    assert text.ended == "max_duration"
    assert llm.calls == []
    assert (await text.close()).end_reason == "max_duration"


async def test_text_output_reports_each_delivered_chunk_as_heard() -> None:
    """Delivered chunks count as heard whole; the first one marks the first output."""
    output = TextOutput()
    first: list[float] = []
    output.begin(first.append)
    assert output.heard(0) == 0.0
    await output.say("Hello.", 0)
    await output.say("Bye.", 1)
    assert (output.heard(0), output.heard(1), len(first)) == (1.0, 1.0, 1)
