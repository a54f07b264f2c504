"""A whole call session in a fake room: greeting, answers, barge-in, hang-up, without LiveKit.

Real parts everywhere but the room: Silero VAD on espeak-ng speech, the turn-taking machine, the
agent's voice playing in real time into an unpublished `rtc.AudioSource`, scripted fake models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fake_room import FakeMicrophone, FakeRoom
from voice_agent.agent.job import JobContext
from voice_agent.agent.listener import SAMPLE_RATE
from voice_agent.agent.options import SessionOptions
from voice_agent.agent.session import CallSession
from voice_agent.call_record import CallJournal, CallRecord
from voice_agent.caller.audio import ROOM_RATE, resample, synthesize
from voice_agent.chat import Role
from voice_agent.logging import get_logger
from voice_agent.pipeline.vad_model import SileroModelPool
from voice_agent.providers.factory import Providers
from voice_agent.providers.fake import (
    FakeCompletion,
    FakeLLM,
    FakeSpeech,
    FakeSTT,
    FakeTranscription,
    FakeTTS,
)
from voice_agent.providers.retry import RetryingLLM, RetryingSTT, RetryingTTS

CALLER = "user-ada"
GREETING = "Hello! How can I help you today?"
LONG_ANSWER = " ".join(
    f"Point number {n} is that our support team is glad to help with any question you have."
    for n in range(1, 7)
)


@dataclass
class Sink:
    """Keeps the finished record."""

    records: list[CallRecord] = field(default_factory=list)
    stored: asyncio.Event = field(default_factory=asyncio.Event)

    async def submit(self, record: CallRecord) -> None:
        self.records.append(record)
        self.stored.set()


@dataclass
class Call:
    """A running session, its room and its models."""

    room: FakeRoom
    sink: Sink
    llm: FakeLLM
    stt: FakeSTT
    session: CallSession
    task: asyncio.Task[None]

    async def join(self) -> FakeMicrophone:
        """The caller joins with a microphone and hears the greeting through."""
        await self.room.wait_for(lambda: self.room.events is not None)
        microphone = self.room.caller_joins(CALLER)
        await self.room.wait_for(lambda: kinds(self.room) == ["greeting"])
        return microphone

    async def record(self) -> CallRecord:
        """The caller hangs up; the record the session stored."""
        self.room.caller_leaves(CALLER)
        async with asyncio.timeout(10):
            await self.sink.stored.wait()
            await self.task
        [record] = self.sink.records
        return record


def kinds(room: FakeRoom) -> list[str]:
    return [t["kind"] for t in room.turns]


async def until(condition: Callable[[], bool], *, timeout_s: float = 15.0) -> None:
    """Poll an observable state the room does not announce, with a bounded deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


_speech: dict[str, bytes] = {}


async def speech(text: str) -> bytes:
    """`text` spoken by espeak-ng at the listener's rate (cached)."""
    if text not in _speech:
        _speech[text] = resample((await synthesize(text)).pcm, ROOM_RATE, SAMPLE_RATE)
    return _speech[text]


async def burst(seconds: float) -> bytes:
    """`seconds` of voiced speech (an "mm-hm" length), cut from the start of a word."""
    pcm = await speech("Hello there")
    samples = memoryview(pcm).cast("h")
    first = next(i for i, v in enumerate(samples) if abs(v) > 3000)
    return pcm[first * 2 : (first + round(seconds * SAMPLE_RATE)) * 2]


Starter = Callable[..., "Call"]


@pytest.fixture
async def vad_models() -> SileroModelPool:
    pool = SileroModelPool(keep=2)
    await pool.prewarm(1)
    return pool


@pytest.fixture
async def start_call(tmp_path: Path, vad_models: SileroModelPool) -> AsyncIterator[Starter]:
    """Starts sessions in fake rooms; cancels whatever is still running at the end."""
    calls: list[Call] = []

    def start(
        *, answers: list[FakeCompletion], transcripts: list[FakeTranscription], **options: Any
    ) -> Call:
        room, sink = FakeRoom(), Sink()
        llm, stt = FakeLLM(answers), FakeSTT(transcripts)
        providers = Providers(
            stt=RetryingSTT(stt, silence_timeout_s=5),
            llm=RetryingLLM(llm, silence_timeout_s=5),
            tts=RetryingTTS(FakeTTS(default=FakeSpeech()), silence_timeout_s=5),
        )
        job = JobContext(
            job_id="AJ_test",
            dispatch_id="AD_test",
            agent_name="voice-agent",
            room_name=room.name,
            url="ws://127.0.0.1:9",
            token="unused",
            identity="agent-test",
            metadata={},
            call_id="call1",
            user_id=CALLER,
            log=get_logger("test.session"),
        )
        journal = CallJournal(directory=tmp_path, call_id="call1", room=room.name, user_id=CALLER)
        session = CallSession(
            job=job,
            options=SessionOptions(instructions="Be brief.", greeting=GREETING, **options),
            providers=providers,
            sink=sink,
            journal=journal,
            room=room,
            vad_models=vad_models,
        )
        call = Call(room, sink, llm, stt, session, asyncio.ensure_future(session.run()))
        calls.append(call)
        return call

    yield start
    for call in calls:
        call.task.cancel()
        await asyncio.gather(call.task, return_exceptions=True)


async def test_the_caller_is_greeted_and_a_question_answered(start_call: Starter) -> None:
    """Greeting once the microphone is heard, then the answer; states and captions follow."""
    call: Call = start_call(
        answers=[FakeCompletion("We open at nine.")],
        transcripts=[FakeTranscription("What are your hours?")],
    )
    microphone = await call.join()
    microphone.say(await speech("What are your hours?"))
    await call.room.wait_for(lambda: kinds(call.room) == ["greeting", "reply"])
    reply = call.room.turns[1]
    assert (reply["user_text"], reply["agent_text"]) == ("What are your hours?", "We open at nine.")
    assert reply["metrics"]["voice_to_voice_ms"] > 0
    assert call.room.states[:4] == ["initializing", "listening", "speaking", "listening"]
    assert call.room.states[-3:] == ["thinking", "speaking", "listening"]
    finals = {(c.sender, c.text) for c in call.room.captions if c.final}
    assert {(CALLER, "What are your hours?"), (None, "We open at nine.")} <= finals
    record = await call.record()
    assert [(t.speaker, t.kind) for t in record.transcript] == [
        ("agent", "greeting"),
        ("user", "user"),
        ("agent", "reply"),
    ]
    assert record.end_reason == "user_left"


async def test_speaking_over_the_answer_interrupts_it_and_keeps_only_what_was_heard(
    start_call: Starter,
) -> None:
    """Barge-in: the long answer is cut, recorded as heard; the next prompt holds that prefix."""
    call: Call = start_call(
        answers=[FakeCompletion(LONG_ANSWER), FakeCompletion("Sure, go ahead.")],
        transcripts=[FakeTranscription("Tell me everything."), FakeTranscription("Stop please")],
    )
    microphone = await call.join()
    microphone.say(await speech("Tell me everything."))
    await call.room.wait_for(
        lambda: len(call.llm.calls) == 1 and call.room.states[-1] == "speaking"
    )
    await until(lambda: call.session.voice.speaker.played_seconds(0) > 1.0)  # well into it
    microphone.say(await speech("Stop please, I have another question."))
    await call.room.wait_for(lambda: kinds(call.room) == ["greeting", "reply", "reply"])
    cut, second = call.room.turns[1:]
    assert cut["interrupted"] is True
    assert cut["agent_text"]
    assert LONG_ANSWER.startswith(cut["agent_text"])
    assert len(cut["agent_text"]) < len(LONG_ANSWER)
    assert (second["user_text"], second["agent_text"]) == ("Stop please", "Sure, go ahead.")
    second_prompt = call.llm.calls[1].messages
    assistant = [m.content for m in second_prompt if m.role is Role.ASSISTANT]
    assert cut["agent_text"] in assistant
    assert LONG_ANSWER not in assistant
    record = await call.record()
    [interrupted] = [t for t in record.transcript if t.interrupted]
    assert interrupted.text == cut["agent_text"]
    assert [e.event for e in record.events].count("interrupted") == 1


async def test_a_short_sound_over_the_agent_pauses_it_and_it_resumes(start_call: Starter) -> None:
    """A brief "mm" over the answer: paused, resumed where it stopped, said in full."""
    answer = "Our office opens at nine in the morning and closes at five in the afternoon."
    call: Call = start_call(
        answers=[FakeCompletion(answer)],
        transcripts=[FakeTranscription("When are you open?")],
    )
    microphone = await call.join()
    microphone.say(await speech("When are you open?"))
    await call.room.wait_for(
        lambda: len(call.llm.calls) == 1 and call.room.states[-1] == "speaking"
    )
    await until(lambda: call.session.voice.speaker.played_seconds(0) > 0.5)
    microphone.say(await burst(0.25))
    await call.room.wait_for(lambda: kinds(call.room) == ["greeting", "reply"])
    reply = call.room.turns[1]
    assert (reply["agent_text"], reply["interrupted"]) == (answer, False)
    record = await call.record()
    events = [e.event for e in record.events]
    assert "barge_in" in events
    assert "barge_in_resumed" in events
    assert "interrupted" not in events
    assert len(call.stt.calls) == 1  # the sound was no turn


async def test_the_caller_leaving_ends_the_call_and_stores_the_record(start_call: Starter) -> None:
    """Hanging up mid-call: the session leaves the room and the record ends with user_left."""
    call: Call = start_call(answers=[], transcripts=[])
    await call.join()
    record = await call.record()
    assert call.room.left.is_set()
    assert record.end_reason == "user_left"
    assert [t.kind for t in record.transcript] == ["greeting"]


@pytest.mark.parametrize(("score", "turns"), [(0.4, 1), (0.9, 2)])
async def test_complete_words_the_stt_scored_low_wait_for_the_rest(
    start_call: Starter, score: float, turns: int
) -> None:
    """ "My account number is ... four five six seven" with a 0.8 s pause: the speculative
    transcript of the first part comes back as a finished question the STT scored `score`.
    Scored 0.4 (under the 0.6 floor) it waits as unfinished words do and the number is one
    turn; scored 0.9 the pause ends the turn and the number is a second one."""
    whole = "My account number is 4567."
    call: Call = start_call(
        answers=[FakeCompletion("Thanks, found it."), FakeCompletion("Anything else?")],
        transcripts=[
            FakeTranscription("What is it?", confidence=score),
            # the turn so far at the next pause: all of it when held, the rest when cut
            FakeTranscription(whole if turns == 1 else "4567.", confidence=0.9),
        ],
        turn_detector="transcript",
        speech_pause_ms=120,
        eou_complete_ms=250,
        eou_incomplete_ms=1500,
        stt_punctuates=True,
        eou_min_confidence=0.6,
        speculation_max_per_turn=3,
        speculation_max_wasted=10,
    )
    microphone = await call.join()
    pause = b"\0\0" * int(SAMPLE_RATE * 0.8)
    microphone.say(
        await speech("My account number is") + pause + await speech("four five six seven")
    )
    await call.room.wait_for(lambda: len(kinds(call.room)) == 1 + turns)
    said = [t["user_text"] for t in call.room.turns[1:]]
    assert said == ([whole] if turns == 1 else ["What is it?", "4567."])
    record = await call.record()
    held = [e.data for e in record.events if e.event == "turn_held"]
    doubted = [h for h in held if h["reason"] == "unsure_words"]
    if turns == 1:  # the record says why the agent waited at the pause
        assert doubted == [
            {
                "reason": "unsure_words",
                "words": 3,
                "confidence": 0.4,
                "wait_ms": doubted[0]["wait_ms"],
            }
        ]
        assert 0 < doubted[0]["wait_ms"] <= 1500
    else:
        assert doubted == []
