"""LiveKit Agents 1.8 as it ships: the competitor fixture of the side-by-side benchmark.

Runs in its own venv (`.cache/bench-venvs/livekit-agents`), started by
`benchmarks/compare_frameworks.py` as `python livekit_agent.py start`. The worker registers under
BENCH_AGENT_NAME with the LiveKit server of LIVEKIT_URL and runs each call in a process of its
warm pool, the framework's documented shape: Silero VAD loaded once per process in prewarm; the
OpenAI STT, LLM and TTS plugins pointed at the scripted models (OPENAI_BASE_URL); the default
turn handling (in production mode, LiveKit's `turn-detector-v1-mini` on the weights inside
`livekit-local-inference`, then the 0.5 s minimum endpointing delay); preemptive generation on,
its 1.8 default. The call opens with BENCH_GREETING. With BENCH_TURN_DETECTION=vad the end of
turn is the VAD's alone (the benchmark's variant `livekit-agents-vad`), all else as shipped.
One departure, for the shared machine: the worker reports the CPU of its own processes as its
load (see `TreeCpuLoad`).

Not product code: a benchmark fixture, configured by the environment the harness sets.
"""

from __future__ import annotations

import math
import os
import time

import psutil
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.plugins import openai, silero


class TreeCpuLoad:
    """The worker's load as the CPU its own processes (worker and job processes) use, over the
    cores it may run on, like our worker's. LiveKit Agents' default reports the whole machine's
    CPU, and the LiveKit server dispatches only to workers under its target load (0.7): on a
    shared benchmark machine the load generator and other work would keep this worker from
    getting calls at all, which measures the machine, not the framework."""

    def __init__(self, *, window_s: float = 1.0) -> None:
        self._root = psutil.Process()
        self._cores = max(len(os.sched_getaffinity(0)), 1)
        self._window_s = window_s
        self._last: dict[int, float] = {}
        self._at = time.monotonic()
        self._value = 0.0

    def __call__(self) -> float:
        now = time.monotonic()
        if now - self._at < self._window_s:
            return self._value
        used: dict[int, float] = {}
        for proc in [self._root, *self._root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:  # exited while we looked
                continue
            used[proc.pid] = times.user + times.system
        spent = sum(cpu - self._last.get(pid, cpu) for pid, cpu in used.items())
        self._value = min(max(spent / ((now - self._at) * self._cores), 0.0), 1.0)
        self._last, self._at = used, now
        return self._value


# Admission by load is off in the worker (LiveKit Agents' own development default), as our
# worker's job cap is raised in the benchmark: density is judged by latency, not by when a
# worker stops accepting jobs. The health port is picked free so several workers can share a
# machine.
server = AgentServer(load_threshold=math.inf, load_fnc=TreeCpuLoad(), port=0)


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
