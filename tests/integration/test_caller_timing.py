"""The simulated caller's voice-to-voice figure: end of the caller's speech to the first audible
agent audio, checked against delays the scripted models add on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest
from livekit import api

from tests.integration.stack import speech, voice_stack
from voice_agent.caller.audio import ROOM_RATE, Utterance
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.testing.openai_script import ChatReply, Timeline, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration

QUESTION = "When do you open?"
EXTRA_DELAY_S = 1.0


async def test_caller_voice_to_voice_follows_a_known_model_delay(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """A first token 1 s later makes the caller's figure 1 s larger; a clip's 1 s silent tail
    changes nothing; and the caller never hears the agent before the agent has spoken."""
    quick, slow = Timeline(first_delay_s=0.2), Timeline(first_delay_s=0.2 + EXTRA_DELAY_S)
    models = ScriptedOpenAI(
        chat=[
            ChatReply(text="We open at nine.", timeline=quick),
            ChatReply(text="We open at nine.", timeline=slow),
            ChatReply(text="We open at nine.", timeline=quick),
        ],
        transcriptions=[TranscriptionReply(text=QUESTION)] * 3,
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        plain = await speech(QUESTION)
        tailed = Utterance(label="tailed", pcm=plain.pcm + bytes(2 * ROOM_RATE))
        result = await stack.call(plain, plain, tailed)
    assert result["ok"], result
    caller = [t["caller_voice_to_voice_ms"] for t in result["turns"]]
    agent = [t["metrics"]["voice_to_voice_ms"] for t in result["turns"]]
    assert None not in caller, result["turns"]
    # Audio reaches the caller after the agent sends it (the agent measures from the speech as
    # its VAD heard it, which may end a few tens of ms apart from the caller's own reckoning).
    for heard, sent in zip(caller, agent, strict=True):
        assert heard >= sent - 100, (caller, agent)
    # The added delay shows up whole on the caller's side, and the caller's figure moves with the
    # agent's own from turn to turn (a loaded machine slows both alike; the transport does not
    # change between turns).
    assert caller[1] - caller[0] >= EXTRA_DELAY_S * 1000 - 300, caller
    assert abs((caller[1] - caller[0]) - (agent[1] - agent[0])) <= 300, (caller, agent)
    # A silent tail is not the agent's time (the old figure lost the whole tail: ~1 s here).
    assert abs((caller[2] - caller[0]) - (agent[2] - agent[0])) <= 300, (caller, agent)


async def test_caller_with_a_minted_token_hears_turns_in_the_audio(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """Joining with a token minted elsewhere and reading turns from the agent's audio alone (no
    turn summaries), the caller still makes the call and times every reply."""
    async with voice_stack(livekit_server, tmp_path) as stack:
        room = "call-minted-elsewhere"
        token = (
            api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
            .with_identity("minted-caller")
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .with_room_config(
                api.RoomConfiguration(
                    agents=[api.RoomAgentDispatch(agent_name=stack.settings.agent_name)]
                )
            )
            .to_jwt()
        )
        grant = {"rtc_url": livekit_server.ws_url, "token": token, "room": room}
        question = await speech(QUESTION)
        result = await stack.call(
            question, question, grant=grant, turns_from_audio=True, turn_quiet_s=0.8
        )
    assert result["ok"], result
    assert result["room"] == room
    assert len(result["turns"]) == 2
    assert all(t["caller_voice_to_voice_ms"] is not None for t in result["turns"]), result
