"""Background tools: the conversation goes on while they run, their outcome follows.

A text session and a spoken reply, each with a scripted fake model and the real guarded tool
runtime (ledger on disk, breakers, audit into the call's journal).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_settings
from tests.mcp_servers import Journal, orders_stdio
from voice_agent.agent.call_tools import CallTools, ToolKit
from voice_agent.agent.client_channel import ClientChannel
from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.options import SessionOptions
from voice_agent.agent.reply import AgentReply
from voice_agent.agent.speaker import AgentSpeaker
from voice_agent.agent.spoken import SpokenOutput
from voice_agent.agent.text_session import TextReply, TextSession
from voice_agent.call_record import CallJournal, CallRecord, FileRecordSink
from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.exceptions import ToolLoadError
from voice_agent.logging import get_logger
from voice_agent.profile import AgentProfile, ToolAllowance
from voice_agent.providers.fake import FakeCompletion, FakeLLM, FakeTTS
from voice_agent.tooling import (
    BreakerBoard,
    ConfirmationAnswer,
    IdempotencyLedger,
    ToolContext,
    ToolRegistry,
    ToolSpec,
    tool,
)
from voice_agent.tooling.sources import ToolSources


@dataclass
class Export:
    """A long export the test lets finish."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    def spec(self) -> ToolSpec:
        @tool(background=True, on_interrupt="finish", timeout=30)
        async def export_history(ctx: ToolContext, *, account: str) -> dict[str, Any]:
            """Export an account's history (takes a while)."""
            self.started.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.append(account)
                raise
            self.finished.append(account)
            return {"file": f"{account}.csv"}

        return export_history


class Answers:
    """Confirmations answered yes."""

    hint = "Please answer y or n."
    available = True

    async def ask(self, *, prompt: str, tool: str, timeout_s: float) -> ConfirmationAnswer:
        return "confirmed"


def export_call(call_id: str = "call_1") -> ToolCall:
    return ToolCall(id=call_id, name="export_history", arguments=json.dumps({"account": "ada"}))


def kit_for(tmp_path: Path, specs: Sequence[ToolSpec]) -> ToolKit:
    settings = make_settings(data_dir=tmp_path)
    return ToolKit(
        registry=ToolRegistry.from_specs(list(specs)),
        breakers=BreakerBoard.from_settings(settings),
        ledger=IdempotencyLedger.in_data_dir(tmp_path),
        settings=settings,
    )


def profile_for(specs: Sequence[ToolSpec]) -> AgentProfile:
    return AgentProfile(
        instructions="Help.",
        greeting="Hi.",
        tools=ToolAllowance(allowed=tuple(s.name for s in specs)),
    )


@dataclass
class Chat:
    session: TextSession
    llm: FakeLLM
    told: list[TextReply]
    records: Path


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[tuple[Chat, Export]]:
    export = Export()
    specs = [export.spec()]
    llm = FakeLLM(
        [
            FakeCompletion(text="Starting the export.", tool_calls=[export_call()]),
            FakeCompletion(text="It has started; I'll tell you when it is ready."),
            FakeCompletion(text="Your export ada.csv is ready."),
        ]
    )
    told: list[TextReply] = []
    session = TextSession(
        options=SessionOptions(instructions="Help.", greeting="Hi."),
        profile=profile_for(specs),
        llm=llm,
        kit=kit_for(tmp_path, specs),
        sink=FileRecordSink(tmp_path / "records"),
        journal_dir=tmp_path / "calls",
        confirmations=Answers(),
        on_reply=told.append,
    )
    yield Chat(session=session, llm=llm, told=told, records=tmp_path / "records"), export
    if session.journal.record.ended_at is None:
        await session.close()


def audit(record: CallRecord) -> list[tuple[str, str, str | None]]:
    return [(a.tool, a.outcome, a.idempotency_key) for a in record.tool_audit]


async def test_reply_answers_while_a_background_tool_still_runs(
    chat: tuple[Chat, Export],
) -> None:
    """The model hears the tool started and answers; the run is still going."""
    rig, export = chat
    reply = await rig.session.send("Export my history please.")
    assert reply.text.endswith("It has started; I'll tell you when it is ready.")
    assert export.started.is_set()
    assert export.finished == []
    told = json.loads(rig.llm.calls[1].messages[-1].content or "")
    assert told["started"] is True
    assert [a.outcome for a in reply.tool_audit] == ["started"]


async def test_background_outcome_is_audited_and_told_when_it_completes(
    chat: tuple[Chat, Export],
) -> None:
    """Completion: audited ok under the started record's key, and the agent tells it."""
    rig, export = chat
    await rig.session.send("Export my history please.")
    export.release.set()
    await asyncio.wait_for(rig.session.wait_background(), 5)
    [told] = rig.told
    assert told.background
    assert told.text == "Your export ada.csv is ready."
    outcome = json.loads(rig.llm.calls[2].messages[-1].content or "")
    assert outcome["background_result"] is True
    assert outcome["outcome"]["result"] == {"file": "ada.csv"}
    record = await rig.session.close()
    [(_, started, key), (_, ended, same_key)] = audit(record)
    assert (started, ended) == ("started", "ok")
    assert key is not None
    assert same_key == key


async def test_ending_the_call_records_a_running_background_tool_as_cancelled(
    chat: tuple[Chat, Export],
) -> None:
    """The call ends mid-run: the run is cancelled and the record says so, same key."""
    rig, export = chat
    await rig.session.send("Export my history please.")
    record = await rig.session.close()
    assert export.cancelled == ["ada"]
    assert [(o, k) for _, o, k in audit(record)] == [
        ("started", record.tool_audit[0].idempotency_key),
        ("cancelled", record.tool_audit[0].idempotency_key),
    ]
    assert rig.told == []
    stored = CallRecord.model_validate_json((rig.records / f"{record.call_id}.json").read_text())
    assert [a.outcome for a in stored.tool_audit] == ["started", "cancelled"]


async def test_background_finish_tool_does_not_hold_a_spoken_reply(tmp_path: Path) -> None:
    """Unlike a foreground `on_interrupt="finish"` tool, a background one lets the spoken
    reply end (and the next one start) while it still runs."""
    export = Export()
    specs = [export.spec()]
    journal = CallJournal(directory=tmp_path / "calls", call_id="c1", room="r", user_id="u")
    profile = profile_for(specs)
    channel = ClientChannel(
        policy=profile.client_actions, journal=journal, log=get_logger("t"), publish=_nowhere
    )
    tools = CallTools(
        kit=kit_for(tmp_path, specs),
        profile=profile,
        channel=channel,
        journal=journal,
        call_id="c1",
        user_id="u",
        log=get_logger("t"),
    )
    speaker, _track = AgentSpeaker.create()
    speaker.start()
    try:
        llm = FakeLLM(
            [
                FakeCompletion(tool_calls=[export_call()]),
                FakeCompletion(text="It has started."),
            ]
        )
        timer = TurnTimer(turn=1)
        tools.begin_turn(1)
        reply = AgentReply(
            output=SpokenOutput(speaker=speaker, tts=FakeTTS(), timer=timer),
            llm=llm,
            timer=timer,
            messages=[ChatMessage.user("Export my history.")],
            tools=tools,
            max_tool_rounds=tools.max_rounds,
        )
        outcome = await asyncio.wait_for(reply.run(), 10)
        assert outcome.text == "It has started."
        assert export.finished == []
        assert tools.background_running == 1
    finally:
        await tools.aclose()
        await speaker.aclose()
    assert [a.outcome for a in journal.record.tool_audit] == ["started", "cancelled"]


async def _nowhere(message: str) -> None:
    raise AssertionError(f"no client action expected, got {message}")


async def test_an_mcp_servers_background_list_marks_its_tools(tmp_path: Path) -> None:
    """The profile's `background` makes those MCP tools background tools, and only those."""
    server = orders_stdio(Journal(tmp_path / "j.jsonl"), background=("add_order_note",))
    async with await ToolSources.open(
        tools_path=None, mcp_servers=[server], data_dir=tmp_path
    ) as sources:
        marked = {s.name for s in sources.registry.specs() if s.background}
        [note] = [d for d in sources.describe(5.0) if d["name"] == "orders.add_order_note"]
    assert marked == {"orders.add_order_note"}
    assert note["background"] is True


async def test_a_background_list_naming_an_unknown_tool_is_a_load_error(tmp_path: Path) -> None:
    """A `background` entry the server does not list fails the load, naming it."""
    server = orders_stdio(Journal(tmp_path / "j.jsonl"), background=("export_everything",))
    with pytest.raises(ToolLoadError, match="`background` names tools it does not list"):
        await ToolSources.open(tools_path=None, mcp_servers=[server], data_dir=tmp_path)
