"""LiveKit's own network resume keeps the call: a caller whose signalling connection drops and
comes back within the SDK's resume window stays in the same call, with the same agent session,
and no second job or record appears."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.tcp_proxy import CuttableProxy
from tests.integration.stack import speech, voice_stack
from tests.integration.test_worker_dispatch import watching_logs
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.testing.openai_script import ChatReply, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration

FIRST, SECOND = "Is the VPN down today?", "And what about email?"
ANSWER_1, ANSWER_2 = "No, the VPN is up.", "Email is working normally too."


async def test_a_brief_network_cut_resumes_the_same_call(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """The caller asks, the connection to LiveKit is cut and restored, the caller asks again:
    both answers come from the one session, which ends only when the caller hangs up."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=ANSWER_1), ChatReply(text=ANSWER_2)],
        transcriptions=[TranscriptionReply(text=FIRST), TranscriptionReply(text=SECOND)],
    )
    async with (
        models,
        CuttableProxy(target_port=livekit_server.port) as proxy,
        voice_stack(livekit_server, tmp_path, models=models, public_rtc_url=proxy.url) as stack,
    ):
        with watching_logs() as logs:

            async def cut_and_restore(turns_done: int) -> None:
                reconnections = proxy.connections
                await proxy.cut()  # the signalling socket reset, new connections refused
                await proxy.restore()
                # The SDK resumes over a new signalling connection through the proxy.
                await logs.wait_for("caller.resumed")
                assert proxy.connections > reconnections

            result = await stack.call(
                await speech(FIRST), await speech(SECOND), between_turns=cut_and_restore
            )
            await logs.wait_for("call.ended")
    assert result["ok"], result
    assert [t["agent_text"] for t in result["turns"]] == [ANSWER_1, ANSWER_2]
    [record] = stack.sink.records.values()
    assert [t.text for t in record.transcript if t.speaker == "user"] == [FIRST, SECOND]
    failures = [e for e in logs.entries if e["event"] in ("call.task_failed", "call.failed")]
    assert record.end_reason == "user_left", failures
    assert [e.event for e in record.events].count("user_joined") == 1
    assert len(logs.named("job.started")) == 1
    assert len(logs.named("call.joined")) == 1
