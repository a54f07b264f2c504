"""The three systems under test and how the benchmark starts and calls each.

Every system gets the same scripted models, the same greeting and instructions, and runs pinned
to CPU 0. Ours is `voice-agent worker`, called through our token service. LiveKit Agents is its
worker (job processes from its warm pool), called with tokens that dispatch its agent name.
Pipecat is a dispatcher that starts a bot process per room on LiveKit's `room_started` webhook,
called with plain room tokens.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from livekit import api

from benchmarks.compare.venvs import LIVEKIT_AGENTS, PIPECAT
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.devstack.processes import ManagedProcess, ReadyCheck, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

GREETING = "Hello! How can I help you today?"
INSTRUCTIONS = (
    "You are a friendly, concise voice assistant for a customer support line. Answer in one or "
    "two short spoken sentences, without lists, markdown or emoji."
)
STT_MODEL, LLM_MODEL, TTS_MODEL, TTS_VOICE = (
    "gpt-4o-mini-transcribe", "gpt-4o-mini", "gpt-4o-mini-tts", "alloy",
)  # fmt: skip
PIPECAT_ROOM_PREFIX = "bench-pipecat-"
# Nothing here may fetch weights: every model these systems load ships inside a package.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

OURS, LIVEKIT, PIPECAT_NAME = "ours", "livekit-agents", "pipecat"
# Not as shipped, so outside the target's ratio: LiveKit Agents with the VAD alone ending turns.
LIVEKIT_VAD = "livekit-agents-vad"


@dataclass
class System:
    """A running system under test: its process tree and how a caller reaches it."""

    name: str
    label: str
    process: ManagedProcess
    livekit: LiveKitEndpoint
    agent_name: str | None = None  # dispatch this agent by name in the caller's token
    room_prefix: str = "bench-"
    token_service_url: str | None = None  # ours: callers ask our token service instead
    as_shipped: bool = True  # False: a variant, reported beside the target's ratio
    extra: dict[str, str] = field(default_factory=dict)

    def grant(self) -> Mapping[str, str] | None:
        """A caller's token for a new room of this system; None: ask the token service."""
        if self.token_service_url is not None:
            return None
        room = f"{self.room_prefix}{secrets.token_hex(6)}"
        token = api.AccessToken(self.livekit.api_key, self.livekit.api_secret)
        token.with_identity(f"caller-{secrets.token_hex(4)}").with_grants(
            api.VideoGrants(
                room_join=True, room=room, can_publish=True, can_subscribe=True,
                can_publish_data=True,
            )
        )  # fmt: skip
        if self.agent_name:
            token.with_room_config(
                api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=self.agent_name)])
            )
        return {"rtc_url": self.livekit.ws_url, "token": token.to_jwt(), "room": room}


def _common_env(livekit: LiveKitEndpoint, models_url: str) -> dict[str, str]:
    return dict(os.environ) | OFFLINE | {
        "LIVEKIT_URL": livekit.ws_url, "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "OPENAI_BASE_URL": models_url, "OPENAI_API_KEY": "scripted",
        "BENCH_GREETING": GREETING, "BENCH_INSTRUCTIONS": INSTRUCTIONS,
        "BENCH_STT_MODEL": STT_MODEL, "BENCH_LLM_MODEL": LLM_MODEL,
        "BENCH_TTS_MODEL": TTS_MODEL, "BENCH_TTS_VOICE": TTS_VOICE,
    }  # fmt: skip


def _http_ok(url: str) -> ReadyCheck:
    async def ready() -> bool:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status == 200

    return ready


def _log_says(path: Path, text: str) -> ReadyCheck:
    def says() -> bool:
        return path.exists() and text in path.read_text(errors="replace")

    async def ready() -> bool:
        return await asyncio.to_thread(says)

    return ready


def ours(
    livekit: LiveKitEndpoint, models_url: str, token_service_url: str, logs: Path, log_level: str
) -> System:
    """`voice-agent worker` on CPU 0, its job cap raised out of the way of the density sweep."""
    metrics_port = free_port()
    env = _common_env(livekit, models_url) | {
        "VOICE_AGENT_STT": "openai", "VOICE_AGENT_TTS": "openai",
        "VOICE_AGENT_STT_MODEL": STT_MODEL, "VOICE_AGENT_LLM_MODEL": LLM_MODEL,
        "VOICE_AGENT_TTS_MODEL": TTS_MODEL, "VOICE_AGENT_TTS_VOICE": TTS_VOICE,
        "VOICE_AGENT_GREETING": GREETING, "VOICE_AGENT_INSTRUCTIONS": INSTRUCTIONS,
        "VOICE_AGENT_MAX_JOBS": "100",
        "VOICE_AGENT_DATA_DIR": str(logs / "ours-data"),
        "VOICE_AGENT_LOG_LEVEL": log_level,
        "VOICE_AGENT_WORKER_METRICS_PORT": str(metrics_port),
    }  # fmt: skip
    process = ManagedProcess(
        name=OURS,
        argv=["taskset", "-c", "0", sys.executable, "-m", "voice_agent", "worker"],
        env=env,
        cwd=ROOT,
        ready=_http_ok(f"http://127.0.0.1:{metrics_port}/healthz"),
        log_file=logs / "ours.log",
    )
    return System(
        name=OURS, label="ours", process=process, livekit=livekit,
        token_service_url=token_service_url,
    )  # fmt: skip


def livekit_agents(
    livekit: LiveKitEndpoint, models_url: str, logs: Path, *, vad_turns: bool = False
) -> System:
    """LiveKit Agents' worker (and its job processes) on CPU 0, from its own venv; with
    `vad_turns`, the variant whose VAD alone ends turns. It logs at info: its "registered
    worker" line is how the harness knows it can take calls."""
    name = LIVEKIT_VAD if vad_turns else LIVEKIT
    agent_name = f"bench-{name}"
    log_file = logs / f"{name}.log"
    env = _common_env(livekit, models_url) | {"BENCH_AGENT_NAME": agent_name}
    if vad_turns:
        env["BENCH_TURN_DETECTION"] = "vad"
    process = ManagedProcess(
        name=name,
        argv=[
            "taskset", "-c", "0", str(LIVEKIT_AGENTS.python), str(HERE / "livekit_agent.py"),
            "start", "--log-level", "info",
        ],
        env=env,
        cwd=HERE,
        ready=_log_says(log_file, "registered worker"),
        log_file=log_file,
    )  # fmt: skip
    label = "LiveKit Agents 1.8.9" + (", VAD end of turn" if vad_turns else "")
    return System(
        name=name, label=label, process=process, livekit=livekit, agent_name=agent_name,
        as_shipped=not vad_turns,
    )  # fmt: skip


def pipecat(livekit: LiveKitEndpoint, models_url: str, dispatcher_port: int, logs: Path) -> System:
    """Pipecat's dispatcher and its bot processes on CPU 0, from its own venv; LiveKit sends
    its webhooks to `dispatcher_port`."""
    env = _common_env(livekit, models_url) | {"BENCH_ROOM_PREFIX": PIPECAT_ROOM_PREFIX}
    process = ManagedProcess(
        name=PIPECAT_NAME,
        argv=[
            "taskset", "-c", "0", str(PIPECAT.python), str(HERE / "pipecat_dispatcher.py"),
            str(dispatcher_port),
        ],
        env=env,
        cwd=HERE,
        ready=_http_ok(f"http://127.0.0.1:{dispatcher_port}/healthz"),
        log_file=logs / "pipecat.log",
    )  # fmt: skip
    return System(
        name=PIPECAT_NAME, label="Pipecat 1.14.0", process=process, livekit=livekit,
        room_prefix=PIPECAT_ROOM_PREFIX,
    )  # fmt: skip
