"""How a call session starts and ends for LiveKit's own client components, in a fake room.

The state leaves `initializing` as soon as the caller is there; every caption segment ends with a
final version; and the agent hangs up cleanly (its reason on itself, the caller
disconnected, then it leaves), while a caller who leaves just ends the call.
"""

from __future__ import annotations

import asyncio

from tests.fake_room import FakeMicrophone, webm_opus
from tests.unit.test_call_session import CALLER, Starter, kinds, speech
from tests.unit.test_call_session import start_call as start_call
from tests.unit.test_call_session import vad_models as vad_models
from voice_agent.agent.listener import SAMPLE_RATE
from voice_agent.exceptions import ProviderError
from voice_agent.providers.fake import FakeCompletion, FakeTimeline, FakeTranscription


async def test_the_state_leaves_initializing_as_soon_as_the_caller_is_there(
    start_call: Starter,
) -> None:
    """A caller whose microphone is not heard yet already sees `listening`, before the greeting."""
    call = start_call(answers=[], transcripts=[])
    await call.room.wait_for(lambda: call.room.events is not None)
    assert call.room.events is not None
    call.room.events.participant_joined(CALLER, agent=False)  # no microphone yet
    await call.room.wait_for(lambda: call.room.states == ["initializing", "listening"])
    assert call.room.turns == []  # still waiting to hear the caller before greeting


async def test_a_caption_left_interim_by_a_failed_transcription_ends_final_and_empty(
    start_call: Starter,
) -> None:
    """STT shows an interim, then fails: the caller's segment still gets its final version."""
    failing = FakeTimeline(
        error=ProviderError("boom", provider="fake.stt", retryable=False), fail_after=1
    )
    call = start_call(
        answers=[],
        transcripts=[FakeTranscription("never", interim=["What are"], timeline=failing)],
    )
    microphone = await call.join()
    microphone.say(await speech("What are your hours?"))
    await call.room.wait_for(lambda: kinds(call.room) == ["greeting", "reply"])
    mine = [c for c in call.room.captions if c.sender == CALLER]
    assert [(c.text, c.final) for c in mine] == [("What are", False), ("", True)]


async def test_a_reply_cut_by_the_call_ending_ends_its_caption_final(start_call: Starter) -> None:
    """The caller hangs up while the answer is still being generated: its caption ends final."""
    call = start_call(
        answers=[FakeCompletion(["We open", " at nine.", " And close"], timeline=_stalls())],
        transcripts=[FakeTranscription("What are your hours?")],
    )
    microphone = await call.join()
    microphone.say(await speech("What are your hours?"))
    await call.room.wait_for(
        lambda: any(c.sender is None and not c.final for c in call.room.captions)
    )
    await call.record()
    agent = [c for c in call.room.captions if c.sender is None]
    segments = {c.attributes["lk.segment_id"] for c in agent}
    finals = {c.attributes["lk.segment_id"] for c in agent if c.final}
    assert segments == finals


async def test_captions_also_go_out_as_legacy_transcription_packets(start_call: Starter) -> None:
    """Each caption version is also a transcription packet of the track it transcribes."""
    call = start_call(
        answers=[FakeCompletion("We open at nine.")],
        transcripts=[FakeTranscription("What are your hours?")],
    )
    microphone = await call.join()
    microphone.say(await speech("What are your hours?"))
    await call.room.wait_for(lambda: kinds(call.room) == ["greeting", "reply"])
    legacy = {
        (c.sender, c.text, c.attributes["track_sid"]) for c in call.room.legacy_captions if c.final
    }
    assert (CALLER, "What are your hours?", microphone.sid) in legacy
    assert (None, "We open at nine.", "TR_agent_voice") in legacy


async def test_hanging_up_sets_the_reason_and_closes_the_room_before_leaving(
    start_call: Starter,
) -> None:
    """At its time limit the agent says goodbye, sets `end_reason`, removes the caller, leaves."""
    call = start_call(answers=[], transcripts=[], max_call_s=1.0)
    await call.join()
    await call.room.left.wait()
    assert call.room.attributes["end_reason"] == "max_duration"
    assert call.room.hung_up  # the fake room asserts it came before the agent left
    assert kinds(call.room)[-1] == "goodbye"


async def test_a_caller_leaving_ends_the_call_without_disconnecting_anyone(
    start_call: Starter,
) -> None:
    """The caller hangs up: the agent leaves; no end reason, nobody disconnected by the agent."""
    call = start_call(answers=[], transcripts=[])
    await call.join()
    record = await call.record()
    assert record.end_reason == "user_left"
    assert "end_reason" not in call.room.attributes
    assert not call.room.hung_up


def _stalls() -> FakeTimeline:
    return FakeTimeline(stall_after=2, resume=asyncio.Event())


async def test_words_said_before_the_agent_joined_are_answered(start_call: Starter) -> None:
    """The caller asks before the agent is there; the pre-connect buffer carries the question."""
    call = start_call(
        answers=[FakeCompletion("We open at nine.")],
        transcripts=[FakeTranscription("What are your hours?")],
    )
    await call.room.wait_for(lambda: call.room.events is not None)
    question = await speech("What are your hours?")
    attributes = {"trackId": FakeMicrophone.sid, "sampleRate": "48000", "channels": "1"}
    call.room.caller_sends_pre_connect(
        CALLER, webm_opus(question, sample_rate=SAMPLE_RATE), attributes=attributes
    )
    call.room.caller_joins(CALLER)  # the live microphone stays silent
    await call.room.wait_for(lambda: "reply" in kinds(call.room))
    reply = next(t for t in call.room.turns if t["kind"] == "reply")
    assert (reply["user_text"], reply["agent_text"]) == ("What are your hours?", "We open at nine.")
    [heard] = call.stt.calls
    assert heard.audio.duration_s > 1.0  # the question itself, from the buffer
