"""The voice stack for end-to-end tests: token service and agent worker in this process, on the
real LiveKit server, with the scripted OpenAI-compatible server standing in for the models."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.helpers import make_settings
from voice_agent.agent.runner import build_call_runner
from voice_agent.agent.worker import AgentWorker, WorkerOptions
from voice_agent.call_record import CallRecord, FileRecordSink
from voice_agent.caller.audio import Utterance, synthesize
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.devstack.processes import free_port
from voice_agent.providers.factory import build_providers
from voice_agent.server.app import create_app
from voice_agent.settings import Settings
from voice_agent.testing.scripted_openai import ScriptedOpenAI


class RecordingSink(FileRecordSink):
    """Stores records like the file sink and keeps them for assertions."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.records: dict[str, CallRecord] = {}

    async def submit(self, record: CallRecord) -> None:
        await super().submit(record)
        self.records[record.call_id] = record


@dataclass
class VoiceStack:
    """A running stack and the handles tests need."""

    settings: Settings
    url: str
    models: ScriptedOpenAI
    worker: AgentWorker
    sink: RecordingSink

    async def call(self, *utterances: Utterance, **options: Any) -> dict[str, Any]:
        """One simulated call through the token service; the caller's JSON result."""
        opts = CallerOptions(url=self.url, utterances=utterances, **options)
        return await SimulatedCaller(options=opts).run()


@contextlib.asynccontextmanager
async def voice_stack(
    livekit: LiveKitEndpoint, tmp: Path, *, models: ScriptedOpenAI | None = None, **settings: Any
) -> AsyncIterator[VoiceStack]:
    """Token service + worker on `livekit`, models from the scripted server."""
    async with contextlib.AsyncExitStack() as stack:
        scripted = (
            models if models is not None else await stack.enter_async_context(ScriptedOpenAI())
        )
        port = free_port()
        values: dict[str, Any] = {
            "livekit_url": livekit.ws_url,
            "livekit_api_key": livekit.api_key,
            "livekit_api_secret": livekit.api_secret,
            "port": port,
            "openai_base_url": scripted.base_url,
            "data_dir": tmp,
            "token_rate_limit": "1000/minute",
            "provider_timeout_s": 5.0,
            # The scripted server plays STT and TTS too, unless a test asks for local speech.
            "stt": "openai",
            "tts": "openai",
        }
        values.update(settings)
        config = make_settings(**values)
        runner = web.AppRunner(create_app(config))
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        providers = build_providers(config)
        stack.push_async_callback(providers.aclose)
        sink = RecordingSink(tmp / "records")
        entrypoint, tool_kit = await build_call_runner(config, providers, sink=sink)
        stack.push_async_callback(tool_kit.aclose)
        stack.push_async_callback(entrypoint.aclose)
        worker = AgentWorker(
            settings=config, entrypoint=entrypoint, options=WorkerOptions(max_jobs=8)
        )
        await stack.enter_async_context(worker)
        await worker.wait_registered()
        yield VoiceStack(
            settings=config,
            url=f"http://127.0.0.1:{port}",
            models=scripted,
            worker=worker,
            sink=sink,
        )


_speech_cache: dict[str, Utterance] = {}


async def speech(text: str) -> Utterance:
    """`text` spoken by espeak-ng, cached for the session."""
    if text not in _speech_cache:
        _speech_cache[text] = await synthesize(text)
    return _speech_cache[text]
