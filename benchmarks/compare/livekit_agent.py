"""LiveKit Agents 1.8 as it ships: the competitor fixture of the side-by-side benchmark.

Runs in its own venv (`.cache/bench-venvs/livekit-agents`), started by
`benchmarks/compare_frameworks.py` as `python livekit_agent.py start`. The worker registers under
BENCH_AGENT_NAME with the LiveKit server of LIVEKIT_URL and runs each call in a process of its
warm pool, the framework's documented shape: Silero VAD loaded once per process in prewarm; the
OpenAI STT, LLM and TTS plugins pointed at the scripted models (OPENAI_BASE_URL); the default
turn handling (in production mode, LiveKit's `turn-detector-v1-mini` on the weights inside
`livekit-local-inference`, then the 0.5 s minimum endpointing delay); preemptive generation on,
its 1.8 default. The call opens with BENCH_GREETING. With BENCH_TURN_DETECTION=vad the end of
turn is the VAD's alone (the variant `livekit-agents-vad` of the benchmark), everything else
as shipped.

Not product code: a benchmark fixture, configured by the environment the harness sets.
"""

from __future__ import annotations

import math
import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.plugins import openai, silero

# Admission by machine CPU load is off (LiveKit Agents' own development default), as our worker's
# job cap is raised in the benchmark: density is judged by latency, not by when a worker stops
# accepting jobs. The health port is picked free so several workers can share a machine.
server = AgentServer(load_threshold=math.inf, port=0)


def prewarm(proc: JobProcess) -> None:
    """Load Silero once per pooled process, before a call is assigned to it."""
    proc.userdata["vad"] = silero.VAD.load()


server.setup_fnc = prewarm


@server.rtc_session(agent_name=os.environ["BENCH_AGENT_NAME"])
async def entrypoint(ctx: JobContext) -> None:
    """One call: the voice pipeline on the scripted models, greeting first."""
    base_url = os.environ["OPENAI_BASE_URL"]
    turn_detection = os.environ.get("BENCH_TURN_DETECTION")
    session: AgentSession = AgentSession(
        turn_handling={"turn_detection": turn_detection} if turn_detection else {},
        vad=ctx.proc.userdata["vad"],
        stt=openai.STT(model=os.environ["BENCH_STT_MODEL"], base_url=base_url),
        llm=openai.LLM(model=os.environ["BENCH_LLM_MODEL"], base_url=base_url),
        tts=openai.TTS(
            model=os.environ["BENCH_TTS_MODEL"],
            voice=os.environ["BENCH_TTS_VOICE"],
            base_url=base_url,
            response_format="pcm",  # raw 24 kHz PCM, what the scripted server (and ours) speaks
        ),
    )
    await session.start(agent=Agent(instructions=os.environ["BENCH_INSTRUCTIONS"]), room=ctx.room)
    session.say(os.environ["BENCH_GREETING"])


if __name__ == "__main__":
    cli.run_app(server)
