"""Turn taking end to end: speculation at the caller's pause and backchannels over the agent,
through the real LiveKit server, our worker and the scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import speech, voice_stack
from voice_agent.caller.audio import ROOM_RATE, Utterance
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.testing.openai_script import ChatReply, ChatScript, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration

QUESTION = "What are your opening hours?"
ANSWER = "We are open from nine to five, Monday to Friday."
LONG_ANSWER = " ".join(
    f"Point number {n} is that our support team is glad to help with any question you have."
    for n in range(1, 4)
)
STT = "/v1/audio/transcriptions"
CHAT = "/v1/chat/completions"


async def _idle(worker: Any, timeout_s: float = 15) -> None:
    """Until the worker runs no call (the job ends a moment after the caller hangs up)."""
    async with asyncio.timeout(timeout_s):
        while worker.active_jobs:  # noqa: ASYNC110 - polled state of another component
            await asyncio.sleep(0.05)


def _answer_by_last_words(answers: Mapping[str, str]) -> Any:
    """A chat router: the reply named by the last user message (so no request pops another's)."""

    def route(body: Mapping[str, Any]) -> ChatScript | None:
        last = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        return ChatReply(text=answers.get(last, "I did not follow."))

    return route


def _user_caption_finals(result: dict[str, Any]) -> list[str]:
    return [c["text"] for c in result["captions"] if c["final"] and c["speaker"] == "user"]


def _answered_as_one_turn(result: dict[str, Any], record: Any, words: str, answer: str) -> None:
    """The call was one turn of `words`, answered `answer`; the record and the captions hold
    those words, once."""
    assert result["ok"], result
    [turn] = result["turns"]
    assert (turn["user_text"], turn["agent_text"]) == (words, answer)
    assert [t.text for t in record.transcript if t.speaker == "user"] == [words]
    assert _user_caption_finals(result) == [words]


async def test_a_question_is_answered_by_its_speculative_reply_with_one_transcription(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """A complete question: transcribed once at the pause, its prepared reply played at the
    commit; one STT request, one LLM request, nothing wasted."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=ANSWER)], transcriptions=[TranscriptionReply(text=QUESTION)]
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        result = await stack.call(await speech(QUESTION))
        await _idle(stack.worker)
    assert result["ok"], result
    [turn] = result["turns"]
    assert (turn["user_text"], turn["agent_text"]) == (QUESTION, ANSWER)
    assert len(models.requests_to(STT)) == 1
    assert len(models.requests_to(CHAT)) == 1
    [record] = stack.sink.records.values()
    assert (record.usage.speculations, record.usage.speculations_wasted) == (1, 0)
    assert _user_caption_finals(result) == [QUESTION]


async def test_the_caller_going_on_after_a_pause_discards_the_speculation(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """ "My account number is ... four five six": the first pause's speculation is wasted and
    leaves no trace; the whole sentence is the one turn, transcribed by its own speculation."""
    first, whole = "My account number is", "My account number is four five six, thanks."
    models = ScriptedOpenAI(
        transcriptions=[TranscriptionReply(text=first), TranscriptionReply(text=whole)],
        chat_router=_answer_by_last_words({first: "Go on.", whole: "Thanks, I found it."}),
    )
    head, tail = await speech("My account number is"), await speech("four five six")
    pause = b"\0\0" * int(ROOM_RATE * 0.4)
    utterance = Utterance(label="number with a pause", pcm=head.pcm + pause + tail.pcm)
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        result = await stack.call(utterance)
        await _idle(stack.worker)
    assert result["ok"], result
    [turn] = result["turns"]
    assert (turn["user_text"], turn["agent_text"]) == (whole, "Thanks, I found it.")
    assert len(models.requests_to(STT)) == 2  # one per pause; the commit reused the second
    [record] = stack.sink.records.values()
    assert (record.usage.speculations, record.usage.speculations_wasted) == (2, 1)
    assert [t.text for t in record.transcript if t.speaker == "user"] == [whole]
    assert [t.text for t in record.transcript if t.speaker == "agent"][1:] == [
        "Thanks, I found it."
    ]
    assert _user_caption_finals(result) == [whole]
    last_prompt = models.requests_to(CHAT)[-1].json["messages"]
    assert [m["content"] for m in last_prompt if m["role"] == "user"] == [whole]


async def test_a_backchannel_over_the_agent_does_not_interrupt_it(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """ "Okay" said over a long answer pauses it, is judged a backchannel, and the agent resumes
    and finishes: the answer is not interrupted and the "okay" is no turn."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=LONG_ANSWER)],
        transcriptions=[TranscriptionReply(text=QUESTION), TranscriptionReply(text="Okay.")],
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        result = await stack.call(
            await speech(QUESTION),
            interrupt_after_ms=1500,
            interruption=await speech("okay"),
            interruption_answered=False,
        )
        await _idle(stack.worker)
    assert result["ok"], result
    [turn] = result["turns"]
    assert turn["interrupted"] is False
    assert turn["agent_text"] == LONG_ANSWER
    [record] = stack.sink.records.values()
    events = [e.event for e in record.events]
    assert "barge_in" in events
    assert "barge_in_resumed" in events
    assert "interrupted" not in events
    assert [t.text for t in record.transcript if t.speaker == "user"] == [QUESTION]
    assert len(models.requests_to(CHAT)) == 1


async def test_short_words_over_the_agent_that_are_no_backchannel_interrupt_it(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """ "Wait" over the agent is judged no backchannel: the answer is cut and "Wait." answered,
    its transcript from the judgement (no third transcription)."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=LONG_ANSWER), ChatReply(text="Sure, go ahead.")],
        transcriptions=[TranscriptionReply(text=QUESTION), TranscriptionReply(text="Wait.")],
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        result = await stack.call(
            await speech(QUESTION), interrupt_after_ms=1500, interruption=await speech("wait")
        )
        await _idle(stack.worker)
    assert result["ok"], result
    first, second = result["turns"]
    assert first["interrupted"] is True
    assert LONG_ANSWER.startswith(first["agent_text"])
    assert (second["user_text"], second["agent_text"]) == ("Wait.", "Sure, go ahead.")
    assert len(models.requests_to(STT)) == 2


async def _turns_of(
    livekit_server: LiveKitEndpoint,
    tmp_path: Path,
    said: list[list[str]],
    transcripts: list[str] | list[TranscriptionReply],
    answers: Mapping[str, str],
    pause_s: float,
    **settings: Any,
) -> tuple[dict[str, Any], ScriptedOpenAI, Any]:
    """The caller says each of `said` (its parts with `pause_s` between them) in one call; the
    scripted STT hears `transcripts` (one per pause), and the chat answers by `answers`."""
    models = ScriptedOpenAI(
        transcriptions=[
            t if isinstance(t, TranscriptionReply) else TranscriptionReply(text=t)
            for t in transcripts
        ],
        chat_router=_answer_by_last_words(answers),
    )
    pause = b"\0\0" * int(ROOM_RATE * pause_s)
    utterances = [
        Utterance(label=" ... ".join(parts), pcm=pause.join([(await speech(p)).pcm for p in parts]))
        for parts in said
    ]
    async with models, voice_stack(livekit_server, tmp_path, models=models, **settings) as stack:
        result = await stack.call(*utterances)
        await _idle(stack.worker)
    [record] = stack.sink.records.values()
    return result, models, record


async def test_a_sentence_the_stt_leaves_unmarked_waits_for_the_caller_to_go_on(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """ "I was wondering ... if you could help me" with an STT known to punctuate: it writes the
    first part without a full stop, as Whisper does when a sentence breaks off, so the 0.8 s
    pause does not end the turn; the whole sentence is one turn."""
    whole = "I was wondering if you could help me."
    result, _models, record = await _turns_of(
        livekit_server,
        tmp_path,
        [["I was wondering", "if you could help me"]],
        ["I was wondering", whole],
        {whole: "Thanks, I have it."},
        0.8,
        stt_punctuates=True,
    )
    _answered_as_one_turn(result, record, whole, "Thanks, I have it.")


async def test_the_punctuation_rule_is_learned_from_the_calls_transcripts(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """`VOICE_AGENT_STT_PUNCTUATES=auto` with a remote STT: once the call's first transcript
    shows a final mark, an unmarked "I was wondering" later in the call waits for the rest."""
    first, whole = "Hello there.", "I was wondering if you could help me."
    result, _models, _record = await _turns_of(
        livekit_server,
        tmp_path,
        [["hello there"], ["I was wondering", "if you could help me"]],
        [first, "I was wondering", whole],
        {first: "Hello!", whole: "Thanks, I have it."},
        0.8,
        stt_punctuates="auto",
    )
    assert result["ok"], result
    assert [(t["user_text"], t["agent_text"]) for t in result["turns"]] == [
        (first, "Hello!"),
        (whole, "Thanks, I have it."),
    ]


async def test_pauses_past_the_speculation_cap_are_still_judged_by_their_words(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """A code read digit by digit with one prepared reply allowed per turn: the later pauses are
    transcribed without a reply (one STT request per pause, no further LLM request), their
    unfinished words keep the turn open past the silence rule's 0.5 s, and the whole code is
    one turn."""
    whole = "The code is four seven two, thanks."
    result, models, record = await _turns_of(
        livekit_server,
        tmp_path,
        [["The code is", "four", "seven", "two thanks"]],
        ["The code is", "The code is 4.", "The code is 4, 7.", whole],
        {whole: "Thanks, I have it."},
        0.8,
        speculation_max_per_turn=1,
    )
    assert result["ok"], result
    [turn] = result["turns"]
    assert (turn["user_text"], turn["agent_text"]) == (whole, "Thanks, I have it.")
    assert len(models.requests_to(STT)) == 4  # one per pause; the commit reused the last
    assert len(models.requests_to(CHAT)) == 2  # the first pause's prepared reply, and the answer
    assert (record.usage.speculations, record.usage.speculations_wasted) == (4, 3)
    assert [t.text for t in record.transcript if t.speaker == "user"] == [whole]


async def test_a_list_item_said_with_a_level_voice_waits_for_the_rest(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """ "I need eggs, ... milk and bread." with an STT that writes the first part as a finished
    sentence ("I need eggs.", as Whisper does): the words are complete, but espeak's voice stays
    up on the comma, so the 0.7 s pause waits (1 s for a level pitch) and the list is one turn.
    With the pitch rule off the same call is cut at the comma: the pitch is what held it."""
    whole = "I need eggs, milk and bread."
    said, heard = [["I need eggs,", "milk and bread."]], ["I need eggs.", whole]
    result, _models, record = await _turns_of(
        livekit_server, tmp_path / "pitch", said, heard, {whole: "Got it."}, 0.7,
        stt_punctuates=True,
    )  # fmt: skip
    _answered_as_one_turn(result, record, whole, "Got it.")

    cut, _models, _record = await _turns_of(
        livekit_server, tmp_path / "off", said, heard, {whole: "Got it."}, 0.7,
        stt_punctuates=True, eou_level_pitch_ms=0,
    )  # fmt: skip
    assert cut["turns"][0]["user_text"] == "I need eggs."


async def test_a_fragment_whisper_guesses_at_waits_for_the_rest(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """ "My account number is ... four five six seven." through local Whisper, the pitch rule
    off: whatever Whisper makes of espeak's first part, the number is one turn. Most runs it
    guesses a finished sentence ("My counter-harm worries.") and scores it low, and the call's
    record says the pause was held for that (`turn_held`, `unsure_words`, under 0.6); when
    it hears the words as they are ("My count number is") they are unfinished and wait. (The
    rule's effect, against the same call with it off, is tested deterministically on the call
    session, tests/unit/test_call_session.py: what Whisper hears through Opus varies.)"""
    said = [["My account number is", "four five six seven."]]
    result, _models, record = await _turns_of(
        livekit_server, tmp_path, said, [], {}, 1.0,
        stt="local", provider_timeout_s=30.0, stt_punctuates=True, eou_level_pitch_ms=0,
    )  # fmt: skip
    assert result["ok"], result
    [turn] = result["turns"]
    assert "4567" in turn["user_text"].replace(" ", "").replace("-", ""), turn["user_text"]
    assert [t.speaker for t in record.transcript].count("user") == 1
    held = next(e.data for e in record.events if e.event == "turn_held")  # at the long pause
    assert held["reason"] in {"unsure_words", "incomplete"}, held
    if held["reason"] == "unsure_words":
        assert held["confidence"] < 0.6, held
    assert held["wait_ms"] > 0


async def test_words_the_remote_stt_doubts_wait_for_the_rest(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """ "My account number is ... four five six seven." with the OpenAI STT (gpt-4o-mini-
    transcribe, asked for logprobs): at the 1 s pause it hears a finished sentence it scores
    0.4, so the pause is held (`turn_held`, `unsure_words`) and the number is one turn. With
    the rule off the same call is cut at the guess: the score is what held it."""
    whole = "My account number is 4567."
    said = [["My account number is", "four five six seven."]]
    heard = [
        TranscriptionReply(text="My counter-harm worries.", confidence=0.4),
        TranscriptionReply(text=whole, confidence=0.95),
    ]
    result, models, record = await _turns_of(
        livekit_server, tmp_path / "on", said, heard, {whole: "Thanks, I found it."}, 1.0,
        stt_punctuates=True, eou_level_pitch_ms=0,
    )  # fmt: skip
    assert result["ok"], result
    [turn] = result["turns"]
    assert (turn["user_text"], turn["agent_text"]) == (whole, "Thanks, I found it.")
    assert [t.text for t in record.transcript if t.speaker == "user"] == [whole]
    held = next(e.data for e in record.events if e.event == "turn_held")
    assert held["reason"] == "unsure_words", held
    assert held["confidence"] == pytest.approx(0.4, abs=0.01)
    assert models.requests_to(STT)[0].form.get("include[]") == "logprobs"

    cut, _models, _record = await _turns_of(
        livekit_server, tmp_path / "off", said, heard, {}, 1.0,
        stt_punctuates=True, eou_level_pitch_ms=0, eou_min_confidence=0,
    )  # fmt: skip
    assert cut["turns"][0]["user_text"] == "My counter-harm worries."


async def test_words_the_stt_looped_on_are_answered_said_once(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """The STT hears "I need eggs. Milk, bread and butter" and loops on the phrase (Whisper base
    did, forty times over): the turn waits the loop's longer silence, and the model, the
    captions and the record get the phrase once; the record says how many words were dropped."""
    looping = "I need eggs. " + "Milk, bread and butter " * 12 + "milk, bread and butter."
    once = "I need eggs. Milk, bread and butter."
    result, models, record = await _turns_of(
        livekit_server, tmp_path, [["I need eggs, milk, bread and butter."]], [looping],
        {once: "Noted: eggs, milk, bread and butter."}, 0.0,
    )  # fmt: skip
    _answered_as_one_turn(result, record, once, "Noted: eggs, milk, bread and butter.")
    last_prompt = models.requests_to(CHAT)[-1].json["messages"]
    assert [m["content"] for m in last_prompt if m["role"] == "user"] == [once]
    dropped = next(e.data for e in record.events if e.event == "loop_dropped")
    assert dropped == {"words": 48}
    held = next(e.data for e in record.events if e.event == "turn_held")
    assert held["reason"] == "looped_words", held
