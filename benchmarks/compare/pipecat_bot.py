"""A Pipecat 1.x bot for one room: the competitor fixture of the side-by-side benchmark.

Runs in its own venv (`.cache/bench-venvs/pipecat`), one process per room as Pipecat is
deployed, started by `pipecat_dispatcher.py` as `python pipecat_bot.py URL ROOM TOKEN`. The
pipeline is Pipecat's documented voice shape: LiveKit transport in, OpenAI STT (segmented, on
Silero VAD's speech segments), the user context aggregator with Silero VAD and Pipecat's default
turn strategies (in 1.x: Smart Turn v3 on its packaged weights decides the end of turn), the
OpenAI LLM, OpenAI TTS, LiveKit transport out, the assistant aggregator. All three services
point at the scripted models (OPENAI_BASE_URL). The bot greets with BENCH_GREETING when the
caller joins and ends when the caller leaves.

Not product code: a benchmark fixture, configured by the environment the harness sets.
"""

from __future__ import annotations

import asyncio
import os
import sys

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport


async def run_bot(url: str, room: str, token: str) -> None:
    """Join `room` and hold the conversation until the caller leaves."""
    env = os.environ
    models = {"api_key": env["OPENAI_API_KEY"], "base_url": env["OPENAI_BASE_URL"]}
    transport = LiveKitTransport(
        url=url,
        token=token,
        room_name=room,
        params=LiveKitParams(audio_in_enabled=True, audio_out_enabled=True),
    )
    stt = OpenAISTTService(
        **models, settings=OpenAISTTService.Settings(model=env["BENCH_STT_MODEL"])
    )
    llm = OpenAILLMService(
        **models,
        settings=OpenAILLMService.Settings(
            model=env["BENCH_LLM_MODEL"], system_instruction=env["BENCH_INSTRUCTIONS"]
        ),
    )
    tts = OpenAITTSService(
        **models,
        settings=OpenAITTSService.Settings(
            model=env["BENCH_TTS_MODEL"], voice=env["BENCH_TTS_VOICE"]
        ),
    )
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            llm,
            tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    task = PipelineTask(pipeline)

    @transport.event_handler("on_first_participant_joined")
    async def greet(transport: LiveKitTransport, participant_id: str) -> None:
        await task.queue_frame(TTSSpeakFrame(env["BENCH_GREETING"]))

    @transport.event_handler("on_participant_disconnected")
    async def hang_up(transport: LiveKitTransport, participant_id: str) -> None:
        await task.cancel()

    await PipelineRunner(handle_sigint=False, handle_sigterm=True).run(task)


if __name__ == "__main__":
    asyncio.run(run_bot(*sys.argv[1:4]))
