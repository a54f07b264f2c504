"""A speculative reply: generated and synthesised while held; its tools run only after commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.unit import test_reply_tools
from tests.unit.test_reply_tools import Rig, call
from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.reply import AgentReply
from voice_agent.agent.spoken import SpokenOutput
from voice_agent.agent.voice import HeldTools
from voice_agent.chat import ChatMessage
from voice_agent.providers.fake import FakeCompletion, FakeLLM, FakeTTS

# The reply tests' fixtures: a started speaker, and a rig of one call's tools.
speaker = test_reply_tools.speaker
make_rig = test_reply_tools.make_rig


def held_reply(rig: Rig, llm: FakeLLM, tts: FakeTTS, release: asyncio.Event) -> AgentReply:
    """A reply built as `AgentVoice.prepare` builds one: held output, held tools."""
    rig.tools.begin_turn(1)
    timer = TurnTimer(turn=1)
    return AgentReply(
        output=SpokenOutput(speaker=rig.speaker, tts=tts, timer=timer, release=release),
        llm=llm,
        timer=timer,
        messages=[ChatMessage.user("Help me please.")],
        tools=HeldTools(rig.tools, release),
        max_tool_rounds=rig.tools.max_rounds,
    )


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Until `condition` holds (polled; the reply runs in its own task)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polled state of another task
            await asyncio.sleep(0.005)


def tool_llm() -> FakeLLM:
    return FakeLLM(
        [
            FakeCompletion(tool_calls=[call("get_incident_status", incident_id="INC-7")]),
            FakeCompletion(text="Incident seven is being investigated."),
        ]
    )


async def test_a_speculative_tool_call_waits_for_the_commit(make_rig: Callable[..., Rig]) -> None:
    """The model's tool call is committed in the reply but runs only once the turn is."""
    rig = make_rig()
    release = asyncio.Event()
    reply = held_reply(rig, tool_llm(), FakeTTS(), release)
    task = asyncio.ensure_future(reply.run())
    await until(lambda: bool(reply.committed))  # the round finished: its call awaits the gate
    await asyncio.sleep(0.05)
    assert rig.ran.calls == []
    release.set()
    await asyncio.wait_for(task, 5)
    assert rig.ran.calls == [("get_incident_status", {"incident_id": "INC-7"})]


async def test_a_discarded_speculation_runs_no_tool_and_audits_nothing(
    make_rig: Callable[..., Rig],
) -> None:
    """Cancelled before the commit: the tool never ran and the record holds no audit of it."""
    rig = make_rig()
    reply = held_reply(rig, tool_llm(), FakeTTS(), asyncio.Event())
    task = asyncio.ensure_future(reply.run())
    await until(lambda: bool(reply.committed))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert rig.ran.calls == []
    assert rig.journal.record.tool_audit == []


async def test_a_held_reply_synthesises_its_first_sentence_but_plays_nothing(
    make_rig: Callable[..., Rig],
) -> None:
    """Held: the first sentence's TTS is done and no audio reaches the room; released, it plays."""
    rig = make_rig()
    release = asyncio.Event()
    tts = FakeTTS()
    llm = FakeLLM([FakeCompletion(text="We open at nine. We close at five.")])
    reply = held_reply(rig, llm, tts, release)
    task = asyncio.ensure_future(reply.run())
    await until(lambda: reply.timer.tts_first_byte is not None)
    await asyncio.sleep(0.05)
    assert [c.text for c in tts.calls] == ["We open at nine."]
    assert reply.timer.first_audio is None
    release.set()
    await asyncio.wait_for(task, 10)
    assert reply.timer.first_audio is not None
    assert [c.text for c in tts.calls] == ["We open at nine.", "We close at five."]
