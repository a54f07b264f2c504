"""`voice-agent worker`: the agent worker process, from settings to running calls.

One process serves many calls: the providers (and their HTTP connection pools) are shared, each
call gets its own `CallSession`. SIGTERM drains: no new calls are accepted, running calls finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from aiohttp import web
from redis.asyncio import Redis

from voice_agent import tracing
from voice_agent.agent import ffi_routing, metrics
from voice_agent.agent.call_claims import CallClaim, CallClaims
from voice_agent.agent.call_rooms import CallRooms
from voice_agent.agent.call_tools import CallTools, ToolKit
from voice_agent.agent.client_channel import ClientChannel
from voice_agent.agent.job import JobContext
from voice_agent.agent.options import session_options, spoken_lines
from voice_agent.agent.session import AGENT_HANG_UPS, CallSession, needed_turn_models
from voice_agent.agent.worker import AgentWorker, WorkerOptions
from voice_agent.call_record import CallJournal, CallRecordSink, FileRecordSink
from voice_agent.logging import bind_context, get_logger
from voice_agent.metrics import WORKER_REGISTRY, metrics_endpoint
from voice_agent.pipeline.vad_model import SileroModelPool
from voice_agent.profile import AgentProfile, load_profile
from voice_agent.providers.factory import Providers, build_providers
from voice_agent.settings import Settings

log = get_logger("agent.runner")

# VAD models loaded at start; later calls reuse the models of calls that ended.
_PREWARMED_VAD_MODELS = 4


# A claim outlives the token that could dispatch its call again (sessions start after the mint).
_CLAIM_MARGIN_S = 60.0
# How a session ended with nobody left on the call: its room is closed at once.
_ROOM_CLOSE_WAIT_S = 6.0
_CALLER_GONE = frozenset({"user_left", "no_user"})
# Calls whose room is deleted once the session is over: nobody is left (the caller went, or the
# agent hung up and disconnected them). Deleting it while the agent is still in it crashed the
# process at exit under livekit 1.2.1 (a segfault in a native destructor).
_CLOSE_AFTER = _CALLER_GONE | AGENT_HANG_UPS


class CallRunner:
    """The worker's entrypoint: one `CallSession` per dispatched job, one per call id.

    A job whose call id already had a session (the caller joined again with the same token
    after the room closed) runs no session: see `_refuse`.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        providers: Providers,
        sink: CallRecordSink | None = None,
        profile: AgentProfile | None = None,
        tool_kit: ToolKit | None = None,
    ) -> None:
        self._settings = settings
        self._providers = providers
        self._profile = profile or AgentProfile.built_in(settings)
        self._tool_kit = tool_kit
        self._options = session_options(settings, self._profile)
        # Shared by the worker's calls: fixed lines rendered once, VAD models loaded once.
        self._lines = spoken_lines(self._options)
        self.vad_models = SileroModelPool()
        # The Smart Turn model when the detector needs it: loaded at worker start (`run_worker`).
        self.turn_models = needed_turn_models(self._options)
        self._sink = sink or FileRecordSink(settings.data_dir / "records")
        self._journal_dir = settings.data_dir / "calls"
        self._claims = CallClaims(
            ttl_s=settings.token_ttl_seconds + _CLAIM_MARGIN_S,
            journal_dir=self._journal_dir,
            redis=(
                Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
                if settings.redis_url
                else None
            ),
        )
        self._rooms = CallRooms(settings)

    async def load_turn_model(self) -> None:
        """Load and warm up the Smart Turn model, if the detector needs it, before the first
        call; one that cannot be loaded is logged, and its calls fall back to the rules."""
        if self.turn_models is not None:
            await self.turn_models.prewarm(log)

    async def aclose(self) -> None:
        """Release the claims' Redis connection."""
        await self._claims.aclose()

    async def __call__(self, job: JobContext) -> None:
        bind_context(call_id=job.call_id)
        # The call's span on this worker continues the token mint's trace (the dispatch metadata).
        with tracing.span(
            "call", parent=job.traceparent, kind=tracing.SpanKind.CONSUMER, job_id=job.job_id
        ):
            await self._run(job)

    async def _run(self, job: JobContext) -> None:
        claim = await self._claims.claim(job.call_id, job.job_id)
        if not claim.first:
            await self._refuse(job, claim)
            return
        journal = CallJournal(
            directory=self._journal_dir,
            call_id=job.call_id,
            room=job.room_name,
            user_id=job.user_id,
            traceparent=tracing.traceparent(),  # the post-call job continues the call's span
        )
        kit = self._tool_kit

        def tools(channel: ClientChannel) -> CallTools:
            assert kit is not None
            return CallTools(
                kit=kit,
                profile=self._profile,
                channel=channel,
                journal=journal,
                call_id=job.call_id,
                user_id=job.user_id,
                log=job.log,
            )

        session = CallSession(
            job=job,
            options=self._options,
            providers=self._providers,
            sink=self._sink,
            journal=journal,
            tools=tools if kit is not None else None,
            client_policy=self._profile.client_actions,
            lines=self._lines,
            vad_models=self.vad_models,
            rooms=self._rooms,
            turn_models=self.turn_models,
        )
        try:
            await session.run()
        finally:
            # LiveKit often ends the job (cancelling us) as the caller leaves: close it anyway.
            reason = journal.record.end_reason
            if reason in _CLOSE_AFTER:
                closing = "caller_gone" if reason in _CALLER_GONE else "agent_hung_up"
                await _uncancelled(
                    self._rooms.close(job.room_name, call_id=job.call_id, reason=closing)
                )

    async def _refuse(self, job: JobContext, claim: CallClaim) -> None:
        """A second job for a call that already had its session: run nothing. If that session
        is still in the room (a duplicate dispatch) leave the room alone; otherwise close it, so
        the caller hears at once that the call is over (`ROOM_DELETED`)."""
        owner = claim.owner_job_id
        session_agent = f"agent-{owner}"
        if owner is not None and await self._rooms.has_participant(
            job.room_name, session_agent, call_id=job.call_id
        ):
            metrics.CALLS_REFUSED.labels(action="ignored").inc()
            job.log.warning("call.duplicate_dispatch_ignored", session_job_id=owner)
            return
        metrics.CALLS_REFUSED.labels(action="room_closed").inc()
        job.log.warning("call.rejoin_refused", session_job_id=owner, shared_claim=claim.shared)
        await self._rooms.close(job.room_name, call_id=job.call_id, reason="rejoin_refused")


async def _uncancelled(step: Coroutine[Any, Any, object]) -> None:
    """Run `step` to its end even when cancelled meanwhile (bounded), then re-raise."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task}, timeout=_ROOM_CLOSE_WAIT_S)
        raise


async def build_call_runner(
    settings: Settings,
    providers: Providers,
    *,
    profile: AgentProfile | None = None,
    sink: CallRecordSink | None = None,
) -> tuple[CallRunner, ToolKit]:
    """The worker's entrypoint with the profile's tools loaded and its MCP servers started
    (close both when done)."""
    profile = profile or load_profile(settings)
    tool_kit = await ToolKit.open(settings, profile)
    registered = set(tool_kit.registry.names())
    missing = sorted(set(profile.tools.allowed) - registered)
    if missing:
        log.error("worker.profile_tools_missing", profile=profile.name, tools=missing)
    log.info(
        "worker.profile",
        profile=profile.name,
        tools=sorted(set(profile.tools.allowed) & registered),
        client_actions=list(profile.client_actions.allowed),
        mcp_servers=[server.name for server in profile.mcp_servers],
    )
    runner = CallRunner(
        settings=settings, providers=providers, sink=sink, profile=profile, tool_kit=tool_kit
    )
    return runner, tool_kit


class WorkerStatus(Protocol):
    """What the worker's `/healthz` reports (an `AgentWorker`)."""

    @property
    def worker_id(self) -> str | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def active_jobs(self) -> int: ...
    @property
    def draining(self) -> bool: ...


HealthReport = Callable[[], tuple[dict[str, Any], int]]


def worker_health_app(report: HealthReport) -> web.Application:
    """The worker's own HTTP endpoints: `/metrics`, and `/healthz` answering `report()`."""

    async def healthz(request: web.Request) -> web.Response:
        body, status = report()
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics_endpoint(WORKER_REGISTRY))
    app.router.add_get("/healthz", healthz)
    return app


@contextlib.asynccontextmanager
async def health_server(settings: Settings, worker: WorkerStatus) -> AsyncIterator[None]:
    """`/metrics` and `/healthz` (200 once registered with LiveKit) on the worker metrics port."""
    if settings.worker_metrics_port is None:
        yield
        return

    def report() -> tuple[dict[str, Any], int]:
        registered = worker.worker_id is not None and not worker.closed
        body = {
            "status": "ok" if registered else "not_registered",
            "pid": os.getpid(),
            "worker_id": worker.worker_id,
            "active_jobs": worker.active_jobs,
            "draining": worker.draining,
        }
        return body, 200 if registered else 503

    runner = web.AppRunner(worker_health_app(report), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.worker_metrics_port).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def run_worker(
    settings: Settings,
    *,
    sink: CallRecordSink | None = None,
    services: Sequence[AbstractAsyncContextManager[object]] = (),
) -> None:
    """Run the worker until SIGTERM/SIGINT, then drain.

    Finished call records go to `sink` (default: a JSON file each under the data directory); a
    sink that is an async context manager is entered first and closed after the drain.
    `services` (such as the orphaned journal recovery) run beside the worker: entered after the
    sink, before the worker takes calls, and closed after the drain.
    """
    ffi_routing.install()  # before any room exists: see ffi_routing
    profile = load_profile(settings)
    if profile.voice is not None:
        settings = settings.model_copy(update={"tts_voice": profile.voice})
    providers = build_providers(settings)
    try:
        runner, tool_kit = await build_call_runner(settings, providers, profile=profile, sink=sink)
    except BaseException:
        await providers.aclose()
        raise
    options = WorkerOptions(max_jobs=settings.max_jobs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Models for the first calls, loaded before the worker takes any (about 50 ms each).
        await runner.vad_models.prewarm(_PREWARMED_VAD_MODELS)
        await runner.load_turn_model()
        async with (
            sink if isinstance(sink, AbstractAsyncContextManager) else contextlib.nullcontext(),
            _services(services),
            AgentWorker(settings=settings, entrypoint=runner, options=options) as worker,
            health_server(settings, worker),
        ):
            log.info("worker.started", agent_name=settings.agent_name, max_jobs=settings.max_jobs)
            stopping = asyncio.ensure_future(stop.wait())
            closed = asyncio.ensure_future(worker.wait_closed())
            try:
                await asyncio.wait({stopping, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if closed.done():
                closed.result()  # a fatal worker error (e.g. bad credentials) ends the process
                return
            closed.cancel()
            log.info("worker.signal", action="draining", active_jobs=worker.active_jobs)
            await worker.drain(timeout_s=settings.drain_timeout_s)
    finally:
        await runner.aclose()
        await providers.aclose()
        await tool_kit.aclose()


@contextlib.asynccontextmanager
async def _services(services: Sequence[AbstractAsyncContextManager[object]]) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for service in services:
            await stack.enter_async_context(service)
        yield
