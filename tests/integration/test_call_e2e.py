"""End-to-end calls: a simulated caller, the real LiveKit server, our token service and worker,
and the scripted OpenAI-compatible server for STT, LLM and TTS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import api, rtc

from tests.helpers import strip_project_env
from tests.integration.stack import speech, voice_stack
from voice_agent.caller.audio import ROOM_RATE, Utterance
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.testing.openai_script import (
    ChatReply,
    ErrorReply,
    SpeechReply,
    Timeline,
    TranscriptionReply,
)
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration

QUESTION = "What are your opening hours?"
ANSWER = "We are open from nine to five, Monday to Friday."
LONG_ANSWER = " ".join(
    f"Point number {n} is that our support team is glad to help with any question you have."
    for n in range(1, 9)
)


async def _wait_idle(stack_worker: object, timeout_s: float = 15) -> None:
    """Until the worker runs no call (the job ends a moment after the caller hangs up)."""
    async with asyncio.timeout(timeout_s):
        while stack_worker.active_jobs:  # type: ignore[attr-defined]  # noqa: ASYNC110 - polled
            await asyncio.sleep(0.05)


async def _journaled(journal: Path, event: str, timeout_s: float = 15) -> None:
    """Until the call's journal holds `event` (the agent writes it line by line, flushed)."""
    async with asyncio.timeout(timeout_s):
        while not (journal.exists() and event in _journal_events(journal)):  # noqa: ASYNC110 - a file
            await asyncio.sleep(0.05)


def _journal_events(journal: Path) -> set[str]:
    events = set()
    for line in journal.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line still being written
            events.add(json.loads(line).get("d", {}).get("event"))
    return events


async def test_call_answers_with_audio_captions_and_states(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """The agent greets, hears the question, answers aloud; captions and states follow suit."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=ANSWER)], transcriptions=[TranscriptionReply(text=QUESTION)]
    )
    async with (
        models,
        voice_stack(livekit_server, tmp_path, models=models, stt_language="en") as stack,
    ):
        result = await stack.call(await speech(QUESTION))
        await _wait_idle(stack.worker)
    assert result["ok"], result
    assert result["greeting"] == "Hello! How can I help you today?"
    assert models.requests_to("/v1/audio/transcriptions")[0].form["language"] == "en"
    [turn] = result["turns"]
    assert turn["user_text"] == QUESTION
    assert turn["agent_text"] == ANSWER
    assert turn["interrupted"] is False
    assert turn["metrics"]["voice_to_voice_ms"] > 0
    assert turn["caller_voice_to_voice_ms"] is not None
    assert result["agent_audio_seconds"] > 2.0  # greeting and answer, both audible
    finals = [(c["speaker"], c["text"]) for c in result["captions"] if c["final"]]
    assert ("user", QUESTION) in finals
    assert ("agent", ANSWER) in finals
    states = result["states"]
    assert states[:3] == ["initializing", "listening", "speaking"]
    assert states[-4:] == ["listening", "thinking", "speaking", "listening"]
    # The LLM saw the instructions, the greeting and the question.
    sent = models.requests_to("/v1/chat/completions")[0].json
    roles = [m["role"] for m in sent["messages"]]
    assert roles[0] == "system"
    assert sent["messages"][-1]["content"] == QUESTION
    [record] = stack.sink.records.values()
    assert [t.speaker for t in record.transcript] == ["agent", "user", "agent"]
    assert record.metrics[0].voice_to_voice_ms == turn["metrics"]["voice_to_voice_ms"]


async def test_barge_in_stops_the_agent_and_records_the_truncation(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """Speaking over a long answer cuts it: interrupted turn, heard text a strict prefix."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=LONG_ANSWER), ChatReply(text="Sure, go ahead.")],
        transcriptions=[TranscriptionReply(text=QUESTION), TranscriptionReply(text="Stop please")],
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        result = await stack.call(await speech(QUESTION), interrupt_after_ms=1500)
        await _wait_idle(stack.worker)
    assert result["ok"], result
    first, second = result["turns"]
    assert first["interrupted"] is True
    assert first["agent_text"]
    assert LONG_ANSWER.startswith(first["agent_text"])
    assert len(first["agent_text"]) < len(LONG_ANSWER) / 2
    assert second["user_text"] == "Stop please"
    assert second["agent_text"] == "Sure, go ahead."
    [record] = stack.sink.records.values()
    cut = [t for t in record.transcript if t.interrupted]
    assert len(cut) == 1
    assert cut[0].text == first["agent_text"]
    # The model's next prompt holds only what the caller heard of the cut answer.
    second_prompt = models.requests_to("/v1/chat/completions")[1].json["messages"]
    assert {"role": "assistant", "content": first["agent_text"]} in [
        {"role": m["role"], "content": m["content"]} for m in second_prompt
    ]


async def test_llm_failure_is_spoken_as_the_fallback_line(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """The model failing twice (first try and retry): the agent says its fallback, not silence."""
    models = ScriptedOpenAI(
        chat=[ErrorReply(status=500), ErrorReply(status=503)],
        transcriptions=[TranscriptionReply(text=QUESTION)],
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        result = await stack.call(await speech(QUESTION))
        await _wait_idle(stack.worker)
    assert result["ok"], result
    [turn] = result["turns"]
    assert "having trouble" in turn["agent_text"]
    assert len(models.requests_to("/v1/chat/completions")) == 2
    [record] = stack.sink.records.values()
    assert any(e.event == "stage_failed" and e.data["stage"] == "llm" for e in record.events)
    assert record.transcript[-1].kind == "fallback"


async def test_repeated_failures_end_the_call_politely(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """After the configured number of failed turns the agent says goodbye and hangs up."""
    models = ScriptedOpenAI(
        chat=[ErrorReply(status=400, type="invalid_request_error")],
        transcriptions=[TranscriptionReply(text=QUESTION)],
    )
    async with (
        models,
        voice_stack(livekit_server, tmp_path, models=models, max_consecutive_failures=1) as stack,
    ):
        result = await stack.call(await speech(QUESTION), trailing_silence_s=0.1)
        await _wait_idle(stack.worker, timeout_s=20)
    [record] = stack.sink.records.values()
    assert record.end_reason == "repeated_failures"
    assert record.transcript[-1].kind == "goodbye"
    assert result["ended"] == {"by": "agent", "reason": "repeated_failures"}
    assert result["turns"], result
    assert result["turns"][0]["agent_text"]  # the fallback line was heard first


async def test_the_greeting_waits_for_the_callers_microphone(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """A caller whose microphone comes late is greeted once the agent hears it, so an answer
    to the greeting is not lost while the track is still being subscribed."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=ANSWER)], transcriptions=[TranscriptionReply(text=QUESTION)]
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        result = await stack.call(await speech(QUESTION), microphone_delay_s=2.0)
        await _wait_idle(stack.worker)
    assert result["ok"], result
    [record] = stack.sink.records.values()
    joined, heard = (
        next(e.at for e in record.events if e.event == name)
        for name in ("user_joined", "user_audio")
    )
    greeting = record.transcript[0]
    assert greeting.kind == "greeting"
    assert heard - joined >= 1.5  # the microphone really came late
    assert heard <= greeting.started_at < heard + 2.0  # after it, and promptly
    assert [t.speaker for t in record.transcript] == ["agent", "user", "agent"]


async def test_a_caller_who_leaves_before_being_heard_ends_the_call_at_once(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """No microphone, then gone: the agent stops waiting to greet and ends the call."""
    async with voice_stack(livekit_server, tmp_path) as stack:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{stack.url}/api/voice-token", json={}) as resp,
        ):
            grant = await resp.json()
        room = rtc.Room()
        await room.connect(grant["rtc_url"], grant["token"])
        # The agent has the caller and now waits for a microphone that never comes.
        call_id = grant["room"].removeprefix("call-")
        await _journaled(stack.settings.data_dir / "calls" / f"{call_id}.jsonl", "user_joined")
        await room.disconnect()
        await _wait_idle(stack.worker, timeout_s=8)  # well before the 10 s wait for audio
    [record] = stack.sink.records.values()
    assert record.end_reason == "user_left"
    assert record.transcript == []


async def test_failure_before_the_fixed_lines_are_ready_still_says_goodbye(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """TTS slow at call start: a turn failing before the goodbye line is synthesised waits for
    it (bounded) instead of hanging up in silence."""
    slow = SpeechReply(timeline=Timeline(first_delay_s=3.0))
    models = ScriptedOpenAI(
        chat=[ErrorReply(status=400, type="invalid_request_error")],
        transcriptions=[TranscriptionReply(text=QUESTION)],
        speech=[slow] * 4,  # the three fixed lines and the greeting, each 3 s late
    )
    async with (
        models,
        voice_stack(livekit_server, tmp_path, models=models, max_consecutive_failures=1) as stack,
    ):
        result = await stack.call(await speech(QUESTION), trailing_silence_s=0.1)
        await _wait_idle(stack.worker, timeout_s=30)
    [record] = stack.sink.records.values()
    assert record.end_reason == "repeated_failures"
    assert record.transcript[-1].kind == "goodbye", record.transcript
    assert not [
        e for e in record.events if e.event == "line_spoken" and not e.data["presynthesised"]
    ]
    assert result["turns"][0]["agent_text"]


async def test_second_user_is_ignored_and_user_leaving_mid_reply_ends_cleanly(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """A second participant cannot take over the call; the caller hanging up mid-reply ends it."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=LONG_ANSWER, timeline=Timeline(chunk_delay_s=0.01))],
        transcriptions=[TranscriptionReply(text=QUESTION)],
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        lkapi = api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        )
        try:
            earlier = {r.name for r in (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms}
            caller = asyncio.create_task(stack.call(await speech(QUESTION), hang_up_after_ms=1500))
            # Wait for this call's room (the server may still hold rooms of earlier tests).
            async with asyncio.timeout(15):
                while True:
                    listed = (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms
                    if rooms := [r for r in listed if r.name not in earlier]:
                        break
                    await asyncio.sleep(0.1)
        finally:
            await lkapi.aclose()
        intruder_token = (
            api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
            .with_identity("intruder")
            .with_grants(api.VideoGrants(room_join=True, room=rooms[0].name))
            .to_jwt()
        )
        intruder = rtc.Room()
        await intruder.connect(livekit_server.ws_url, intruder_token)
        result = await caller  # hangs up 1.5 s into the long answer
        await intruder.disconnect()
        await _wait_idle(stack.worker)
    assert result["ok"], result
    [record] = stack.sink.records.values()
    assert record.end_reason == "user_left"
    assert any(e.event == "extra_participant_ignored" for e in record.events)
    assert record.transcript[-1].speaker == "agent"
    assert record.transcript[-1].interrupted
    assert stack.worker.active_jobs == 0


async def test_silence_and_noise_get_no_reply_and_no_crash(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """Three seconds of white noise then silence: no user turn, no model call, a clean record."""
    import numpy as np

    rng = np.random.default_rng(7)
    noise = (rng.normal(0, 0.05, ROOM_RATE * 3) * 32767).astype(np.int16).tobytes()
    async with voice_stack(livekit_server, tmp_path) as stack:
        result = await stack.call(Utterance(label="noise", pcm=noise), turn_timeout_s=5)
        await _wait_idle(stack.worker)
        assert stack.models.requests_to("/v1/chat/completions") == []
    assert not result["ok"]
    assert "no reply turn" in result["error"]
    [record] = stack.sink.records.values()
    assert [t.speaker for t in record.transcript] == ["agent"]  # the greeting only
    assert record.end_reason == "user_left"


async def test_voice_agent_call_cli_prints_the_contract_json(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """`voice-agent call --say ...` prints one JSON object with the documented keys, exits 0."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=ANSWER)], transcriptions=[TranscriptionReply(text=QUESTION)]
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        env = strip_project_env(dict(os.environ)) | {"VOICE_AGENT_LOG_LEVEL": "warning"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voice_agent", "call", "--url", stack.url, "--say", QUESTION,
            "--record", str(tmp_path / "agent.wav"),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        await _wait_idle(stack.worker)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert set(result) >= {
        "call_id",
        "room",
        "ok",
        "error",
        "states",
        "agent_audio_seconds",
        "turns",
    }
    [turn] = result["turns"]
    assert set(turn) >= {"user_text", "agent_text", "interrupted", "caller_voice_to_voice_ms"}
    assert set(turn["metrics"]) == {
        "eou_delay_ms",
        "stt_ms",
        "llm_ttft_ms",
        "tts_ttfb_ms",
        "voice_to_voice_ms",
        "tool_ms",  # None: no tools ran in this turn
    }
    assert turn["metrics"]["tool_ms"] is None
    assert (tmp_path / "agent.wav").stat().st_size > ROOM_RATE  # over half a second recorded


@pytest.mark.parametrize(
    ("settings", "reason"),
    [({"user_silence_timeout_s": 2.0}, "user_silent"), ({"max_call_s": 4.0}, "max_duration")],
    ids=["silence-timeout", "max-duration"],
)
async def test_agent_says_goodbye_before_hanging_up(
    livekit_server: LiveKitEndpoint, tmp_path: Path, settings: dict[str, Any], reason: str
) -> None:
    """A silent caller, or a call past its limit: the agent says goodbye, then ends the call."""
    async with voice_stack(livekit_server, tmp_path, **settings) as stack:
        result = await stack.call(trailing_silence_s=10)
        await _wait_idle(stack.worker)
    assert result["ok"], result
    assert result["ended"] == {"by": "agent", "reason": reason}  # a clean end, not a failure
    [record] = stack.sink.records.values()
    assert record.end_reason == reason
    assert record.transcript[-1].kind == "goodbye"
    assert "Goodbye" in record.transcript[-1].text
    assert ("agent", "Thanks for calling. Goodbye!") in [
        (c["speaker"], c["text"]) for c in result["captions"] if c["final"]
    ]
