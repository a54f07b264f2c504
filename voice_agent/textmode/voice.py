"""A conversation test as a real call: LiveKit on loopback, the token service and an agent
worker in this process, and the simulated caller speaking each turn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

from aiohttp import web
from pydantic import SecretStr

from voice_agent.agent.runner import build_call_runner
from voice_agent.agent.worker import AgentWorker, WorkerOptions
from voice_agent.call_record import CallRecord, CallRecordSink
from voice_agent.caller.audio import Utterance, read_wav, synthesize
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller
from voice_agent.devstack.livekit_server import (
    LiveKitEndpoint,
    find_livekit_server,
    livekit_process,
    new_key_pair,
)
from voice_agent.devstack.processes import free_port, free_udp_range
from voice_agent.providers.factory import build_providers
from voice_agent.server.app import create_app
from voice_agent.settings import AuthMode, Settings
from voice_agent.textmode.conversations import ConversationFile

# How long the worker may take to hand over the record once the caller has hung up.
_RECORD_WAIT_S = 15.0


class KeptRecords(CallRecordSink, Protocol):
    """A sink that also hands each record to whoever waits on `records`."""

    records: asyncio.Queue[CallRecord]


@contextlib.asynccontextmanager
async def livekit_server(settings: Settings) -> AsyncIterator[LiveKitEndpoint]:
    """A LiveKit server of its own, bound to 127.0.0.1, for one test call."""
    key, secret = new_key_pair()
    endpoint = LiveKitEndpoint(port=free_port(), api_key=key, api_secret=secret)
    process = livekit_process(
        binary=find_livekit_server(settings.livekit_server_bin),
        endpoint=endpoint,
        udp_range=free_udp_range(),
        log_file=settings.data_dir / "livekit.log",
    )
    await process.start()
    try:
        await process.wait_ready(60)
        yield endpoint
    finally:
        await process.stop()


async def voice_call(
    conversation: ConversationFile,
    settings: Settings,
    *,
    sink: KeptRecords,
    confirm: bool | None,
    livekit: LiveKitEndpoint | None = None,
) -> tuple[dict[str, Any], CallRecord]:
    """Place the conversation as one call; the caller's result and the worker's record."""
    utterances = [await _speech(turn.user, turn.audio) for turn in conversation.turns]
    async with contextlib.AsyncExitStack() as stack:
        if livekit is None:
            livekit = await stack.enter_async_context(livekit_server(settings))
        port = free_port()
        config = settings.model_copy(
            update={
                "livekit_url": livekit.ws_url,
                "livekit_api_key": livekit.api_key,
                "livekit_api_secret": SecretStr(livekit.api_secret),
                "host": "127.0.0.1",
                "port": port,
                "auth_mode": AuthMode.ANONYMOUS,
                "public_rtc_url": None,
                "token_rate_limit": "1000/minute",
                "worker_metrics_port": None,
            }
        )
        runner = web.AppRunner(create_app(config), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        providers = build_providers(config)
        stack.push_async_callback(providers.aclose)
        entrypoint, tool_kit = await build_call_runner(config, providers, sink=sink)
        stack.push_async_callback(tool_kit.aclose)
        stack.push_async_callback(entrypoint.aclose)
        worker = AgentWorker(settings=config, entrypoint=entrypoint, options=WorkerOptions())
        await stack.enter_async_context(worker)
        await worker.wait_registered()
        options = CallerOptions(
            url=f"http://127.0.0.1:{port}", utterances=tuple(utterances), confirm=confirm
        )
        result = await SimulatedCaller(options=options).run()
        record = await asyncio.wait_for(sink.records.get(), _RECORD_WAIT_S)
    return result, record


async def _speech(text: str, audio: Any) -> Utterance:
    return read_wav(audio) if audio is not None else await synthesize(text)
