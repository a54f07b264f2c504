"""The agent worker against a real LiveKit server: dispatch, concurrency, drain, reconnection."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from livekit import api, rtc
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from tests.helpers import make_settings
from voice_agent.agent import AgentWorker, JobContext, ReconnectPolicy, WorkerOptions
from voice_agent.devstack.livekit_server import (
    LiveKitEndpoint,
    find_livekit_server,
    livekit_process,
    new_key_pair,
)
from voice_agent.devstack.processes import ManagedProcess, free_port, free_udp_range
from voice_agent.exceptions import ConfigError, DependencyUnavailableError
from voice_agent.server.auth import Caller
from voice_agent.server.tokens import VoiceToken, VoiceTokenMinter
from voice_agent.settings import Settings

pytestmark = pytest.mark.integration

STEP_S = 15.0  # the bound on any one awaited event; each normally takes well under a second
CALL_LIMIT_S = 60.0  # a test agent never stays in a call longer than this, whatever happens

FAST = WorkerOptions(
    max_jobs=2,
    status_interval_s=0.5,
    ping_interval_s=1.0,
    ping_timeout_s=5.0,
    reconnect=ReconnectPolicy(initial_delay_s=0.1, max_delay_s=0.5),
    drain_timeout_s=STEP_S,
    job_stop_timeout_s=5.0,
)


def worker_settings(endpoint: LiveKitEndpoint) -> Settings:
    """Settings for `endpoint`, under an agent name no other test registers."""
    return make_settings(
        livekit_url=endpoint.ws_url,
        livekit_api_key=endpoint.api_key,
        livekit_api_secret=endpoint.api_secret,
        agent_name=f"test-agent-{secrets.token_hex(4)}",
    )


def new_call(settings: Settings) -> VoiceToken:
    """A browser's token for a new call, exactly as the token service mints it."""
    caller = Caller(identity=f"user-{secrets.token_hex(4)}", anonymous=True)
    return VoiceTokenMinter(settings).mint(caller)


async def wait_for_participant(
    room: rtc.Room, accept: Callable[[rtc.RemoteParticipant], bool]
) -> rtc.RemoteParticipant:
    """The first remote participant in `room` (present or arriving) that `accept`s."""
    found: asyncio.Future[rtc.RemoteParticipant] = asyncio.get_running_loop().create_future()

    def check(participant: rtc.RemoteParticipant) -> None:
        if accept(participant) and not found.done():
            found.set_result(participant)

    room.on("participant_connected", check)
    try:
        for participant in room.remote_participants.values():
            check(participant)
        return await found
    finally:
        room.off("participant_connected", check)


async def wait_for_departure(room: rtc.Room, identity: str) -> None:
    """Return once `identity` has left `room` (or our own connection has ended)."""
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_left(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == identity and not gone.done():
            gone.set_result(None)

    def on_disconnected(*_: Any) -> None:
        if not gone.done():
            gone.set_result(None)

    room.on("participant_disconnected", on_left)
    room.on("disconnected", on_disconnected)
    try:
        if identity not in room.remote_participants:
            return
        await gone
    finally:
        room.off("participant_disconnected", on_left)
        room.off("disconnected", on_disconnected)


async def leave(room: rtc.Room) -> None:
    """Disconnect, even when a cancellation (a job termination) arrives halfway."""
    leaving = asyncio.ensure_future(room.disconnect())
    try:
        await asyncio.shield(leaving)
    except asyncio.CancelledError:
        await leaving
        raise


@asynccontextmanager
async def caller_in_room(call: VoiceToken) -> AsyncIterator[rtc.Room]:
    """The browser side of a call: joins with the minted token, leaves on exit."""
    room = rtc.Room()
    await room.connect(call.rtc_url, call.token)
    try:
        yield room
    finally:
        await room.disconnect()


def is_agent(participant: rtc.RemoteParticipant) -> bool:
    return bool(participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)


class RoomJoiningAgent:
    """A test entrypoint: joins the call's room with the job's token, reports the caller it
    sees, and stays until the caller leaves (or the job is cancelled)."""

    def __init__(self) -> None:
        self.jobs: list[JobContext] = []
        self._joined: dict[str, asyncio.Future[str]] = {}
        self._ended: dict[str, asyncio.Future[str]] = {}

    def joined(self, room_name: str) -> asyncio.Future[str]:
        """Resolves to the identity of the caller the agent saw in `room_name`."""
        return self._joined.setdefault(room_name, asyncio.get_running_loop().create_future())

    def ended(self, room_name: str) -> asyncio.Future[str]:
        """Resolves to "caller_left" or "cancelled" once the agent's call in `room_name` ends."""
        return self._ended.setdefault(room_name, asyncio.get_running_loop().create_future())

    def job(self, room_name: str) -> JobContext:
        return next(job for job in self.jobs if job.room_name == room_name)

    async def __call__(self, job: JobContext) -> None:
        self.jobs.append(job)
        joined, ended = self.joined(job.room_name), self.ended(job.room_name)
        room = rtc.Room()
        try:
            await room.connect(job.url, job.token)
            caller = await asyncio.wait_for(
                wait_for_participant(room, lambda p: not is_agent(p)), STEP_S
            )
            joined.set_result(caller.identity)
            await asyncio.wait_for(wait_for_departure(room, caller.identity), CALL_LIMIT_S)
            ended.set_result("caller_left")
        except asyncio.CancelledError:
            _settle(ended, "cancelled")
            raise
        except Exception as e:  # whatever went wrong reaches the waiters, then is raised
            for future in (joined, ended):
                if not future.done():
                    future.set_exception(e)
            raise
        finally:
            await leave(room)


def _settle(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


WAIT_S = 60.0  # how long a test waits for a log event before failing


class LogWatch:
    """A structlog processor that keeps every event and lets a test await one."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[Any]]] = []

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        entry = dict(event_dict)
        self.entries.append(entry)
        for matches, future in self._waiters:
            if not future.done() and matches(entry):
                future.set_result(entry)
        return event_dict

    def named(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        """Every event called `event` whose fields include `fields`."""
        return [e for e in self.entries if _matches(e, event, fields)]

    async def wait_for(
        self, event: str, *, timeout_s: float = WAIT_S, **fields: Any
    ) -> dict[str, Any]:
        """The first event called `event` with `fields`, already logged or still to come; an
        AssertionError naming what was logged instead when none comes within `timeout_s`."""
        if found := self.named(event, **fields):
            return found[0]
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiter = (lambda e: _matches(e, event, fields), future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise AssertionError(self._missing(event, fields, timeout_s)) from None
        finally:
            self._waiters.remove(waiter)

    def _missing(self, event: str, fields: dict[str, Any], timeout_s: float) -> str:
        same_name = [e for e in self.entries if e["event"] == event]
        last = [{k: e.get(k) for k in ("event", "call_id", "reason")} for e in self.entries[-15:]]
        return (
            f"no {event!r} with {fields} within {timeout_s:.0f} s;"
            f" {event!r} events logged: {same_name}; the last events: {last}"
        )


def _matches(entry: dict[str, Any], event: str, fields: dict[str, Any]) -> bool:
    return entry["event"] == event and all(entry.get(k) == v for k, v in fields.items())


@contextmanager
def watching_logs() -> Iterator[LogWatch]:
    """Route every structlog event (with its contextvars) through a `LogWatch`."""
    watch = LogWatch()
    with capture_logs(processors=[merge_contextvars, watch]):
        yield watch


async def test_a_voice_token_dispatches_the_registered_worker_into_the_call(
    livekit_server: LiveKitEndpoint,
) -> None:
    """A caller joining with a minted token gets our agent: it joins with the job token, sees
    the caller, carries the call's metadata, and every job event is logged with the call_id."""
    settings = worker_settings(livekit_server)
    agent = RoomJoiningAgent()
    with watching_logs() as logs:
        async with AgentWorker(settings=settings, entrypoint=agent, options=FAST) as worker:
            worker_id = await asyncio.wait_for(worker.wait_registered(), STEP_S)
            call = new_call(settings)
            async with caller_in_room(call) as caller_room:
                seen = await asyncio.wait_for(agent.joined(call.room), STEP_S)
                agent_there = await asyncio.wait_for(
                    wait_for_participant(caller_room, is_agent), STEP_S
                )
                assert worker.active_jobs == 1
            assert await asyncio.wait_for(agent.ended(call.room), STEP_S) == "caller_left"
            finished = await asyncio.wait_for(logs.wait_for("job.finished"), STEP_S)

    job = agent.job(call.room)
    assert seen == call.identity
    assert agent_there.identity == job.identity == f"agent-{job.job_id}"
    assert job.call_id == call.call_id
    assert job.user_id == call.identity
    assert job.metadata["call_id"] == call.call_id
    assert job.agent_name == settings.agent_name
    assert job.url == livekit_server.ws_url  # LiveKit sends no URL: the configured one is used
    assert logs.named("worker.registered")[0]["worker_id"] == worker_id
    for name in ("worker.job_offered", "worker.job_assigned", "job.started", "job.finished"):
        (entry,) = logs.named(name)
        assert entry["call_id"] == call.call_id, name
    # The agent leaves when the caller does; LiveKit may end the job first, which is as good.
    assert finished["outcome"] in {"success", "terminated"}


async def test_one_worker_serves_two_calls_at_once(livekit_server: LiveKitEndpoint) -> None:
    """Two callers joining together both get the same worker's agent, running concurrently."""
    settings = worker_settings(livekit_server)
    agent = RoomJoiningAgent()
    with watching_logs() as logs:
        async with AgentWorker(settings=settings, entrypoint=agent, options=FAST) as worker:
            await asyncio.wait_for(worker.wait_registered(), STEP_S)
            calls = [new_call(settings), new_call(settings)]
            async with AsyncExitStack() as stack:
                await asyncio.gather(*(stack.enter_async_context(caller_in_room(c)) for c in calls))
                seen = await asyncio.wait_for(
                    asyncio.gather(*(agent.joined(c.room) for c in calls)), STEP_S
                )
                assert worker.active_jobs == 2
            outcomes = await asyncio.wait_for(
                asyncio.gather(*(agent.ended(c.room) for c in calls)), STEP_S
            )
            for c in calls:
                await asyncio.wait_for(logs.wait_for("job.finished", call_id=c.call_id), STEP_S)
    assert seen == [c.identity for c in calls]
    assert outcomes == ["caller_left", "caller_left"]
    assert len({job.job_id for job in agent.jobs}) == 2
    full = logs.named("worker.status_changed", status="full", draining=False)
    assert full
    assert full[0]["job_count"] == 2


async def test_a_draining_worker_takes_no_new_call_and_stops_when_its_call_ends(
    livekit_server: LiveKitEndpoint,
) -> None:
    """While draining, a new call goes to another worker; drain() returns once the last call
    on the draining worker has ended, and that worker is closed."""
    settings = worker_settings(livekit_server)
    agent_a, agent_b = RoomJoiningAgent(), RoomJoiningAgent()
    with watching_logs() as logs:
        async with AsyncExitStack() as stack:
            worker_a = await stack.enter_async_context(
                AgentWorker(settings=settings, entrypoint=agent_a, options=FAST)
            )
            id_a = await asyncio.wait_for(worker_a.wait_registered(), STEP_S)
            first = new_call(settings)
            first_caller = await stack.enter_async_context(caller_in_room(first))
            await asyncio.wait_for(agent_a.joined(first.room), STEP_S)

            # Only now a second worker under the same name, so the first call surely went to A.
            worker_b = await stack.enter_async_context(
                AgentWorker(settings=settings, entrypoint=agent_b, options=FAST)
            )
            id_b = await asyncio.wait_for(worker_b.wait_registered(), STEP_S)

            drained = asyncio.create_task(worker_a.drain())
            await asyncio.sleep(0)  # let drain() begin: it refuses offers before its first await
            assert worker_a.draining

            second = new_call(settings)
            await stack.enter_async_context(caller_in_room(second))
            await asyncio.wait_for(agent_b.joined(second.room), STEP_S)
            assert [job.room_name for job in agent_a.jobs] == [first.room]
            assert not drained.done()  # A's call is still on

            await first_caller.disconnect()
            await asyncio.wait_for(drained, STEP_S)
            assert worker_a.closed
            assert not worker_b.closed
            assert agent_a.ended(first.room).result() == "caller_left"
    for offer in logs.named("worker.job_offered", call_id=second.call_id):
        assert offer["accepted"] == (offer["worker_id"] == id_b), offer
    drain_status = logs.named("worker.status_changed", worker_id=id_a, draining=True)
    assert [e["status"] for e in drain_status] == ["full"]
    assert logs.named("worker.drained", worker_id=id_a)


@pytest.fixture
def own_livekit(tmp_path: Path) -> Callable[[LiveKitEndpoint], ManagedProcess]:
    """Makes LiveKit server processes for one endpoint (this test's own, not the session's)."""
    udp_range = free_udp_range()

    def make(endpoint: LiveKitEndpoint) -> ManagedProcess:
        return livekit_process(
            binary=find_livekit_server(),
            endpoint=endpoint,
            udp_range=udp_range,
            log_file=tmp_path / "livekit.log",
        )

    return make


async def test_the_worker_registers_again_after_livekit_restarts(
    own_livekit: Callable[[LiveKitEndpoint], ManagedProcess],
) -> None:
    """When LiveKit goes away and comes back on the same address, the worker reconnects,
    registers anew, and the restarted server dispatches calls to it."""
    key, secret = new_key_pair()
    endpoint = LiveKitEndpoint(port=free_port(), api_key=key, api_secret=secret)
    settings = worker_settings(endpoint)
    agent = RoomJoiningAgent()
    server = own_livekit(endpoint)
    await server.start()
    try:
        await server.wait_ready(30)
        with watching_logs() as logs:
            async with AgentWorker(settings=settings, entrypoint=agent, options=FAST) as worker:
                before = await asyncio.wait_for(worker.wait_registered(), STEP_S)
                await server.stop()
                server = own_livekit(endpoint)
                await server.start()
                await server.wait_ready(30)
                after = await asyncio.wait_for(worker.wait_registered(other_than=before), STEP_S)

                call = new_call(settings)
                async with caller_in_room(call):
                    seen = await asyncio.wait_for(agent.joined(call.room), STEP_S)
                await asyncio.wait_for(agent.ended(call.room), STEP_S)
                await asyncio.wait_for(logs.wait_for("job.finished"), STEP_S)
    finally:
        await server.stop()
    assert after != before
    assert seen == call.identity
    assert logs.named("worker.disconnected", worker_id=before)
    assert logs.named("worker.reconnecting")
    assert [e["worker_id"] for e in logs.named("worker.registered")] == [before, after]


async def test_livekit_ending_the_job_cancels_the_entrypoint(
    livekit_server: LiveKitEndpoint,
) -> None:
    """Deleting the call's agent dispatch makes LiveKit terminate the job: the entrypoint's
    task is cancelled and the job is logged as terminated."""
    settings = worker_settings(livekit_server)
    agent = RoomJoiningAgent()
    lkapi = api.LiveKitAPI(
        livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
    )
    try:
        with watching_logs() as logs:
            async with AgentWorker(settings=settings, entrypoint=agent, options=FAST) as worker:
                await asyncio.wait_for(worker.wait_registered(), STEP_S)
                call = new_call(settings)
                async with caller_in_room(call):
                    await asyncio.wait_for(agent.joined(call.room), STEP_S)
                    (dispatch,) = await lkapi.agent_dispatch.list_dispatch(call.room)
                    await lkapi.agent_dispatch.delete_dispatch(dispatch.id, call.room)
                    outcome = await asyncio.wait_for(agent.ended(call.room), STEP_S)
                    finished = await asyncio.wait_for(logs.wait_for("job.finished"), STEP_S)
                    assert worker.active_jobs == 0
    finally:
        await lkapi.aclose()
    assert outcome == "cancelled"
    assert finished["outcome"] == "terminated"
    assert logs.named("worker.job_terminated", call_id=call.call_id)


async def test_a_worker_with_the_wrong_secret_fails_at_once_with_a_config_error(
    livekit_server: LiveKitEndpoint,
) -> None:
    """LiveKit answers 401 to a wrong key pair; retrying cannot help, so the worker stops."""
    settings = make_settings(
        livekit_url=livekit_server.ws_url,
        livekit_api_key=livekit_server.api_key,
        livekit_api_secret="not-the-secret-0123456789abcdefghijklmnop",
    )
    worker = AgentWorker(settings=settings, entrypoint=RoomJoiningAgent(), options=FAST)
    with pytest.raises(ConfigError, match="rejected the worker's credentials"):
        async with worker:
            await asyncio.wait_for(worker.wait_closed(), STEP_S)
    assert worker.closed
    with pytest.raises(ConfigError):
        await worker.wait_registered()


async def test_a_worker_gives_up_after_its_bounded_reconnect_attempts() -> None:
    """With `max_attempts` set and nothing listening, run() raises once the attempts are spent."""
    key, secret = new_key_pair()
    nothing_there = LiveKitEndpoint(port=free_port(), api_key=key, api_secret=secret)
    options = dataclasses.replace(
        FAST, reconnect=ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.1, max_attempts=2)
    )
    worker = AgentWorker(
        settings=worker_settings(nothing_there), entrypoint=RoomJoiningAgent(), options=options
    )
    with watching_logs() as logs, pytest.raises(DependencyUnavailableError, match="2 reconnect"):
        await asyncio.wait_for(worker.run(), STEP_S)
    assert [e["attempt"] for e in logs.named("worker.reconnecting")] == [1, 2]
    assert logs.named("worker.gave_up")


async def test_a_drain_that_times_out_cancels_the_running_call(
    livekit_server: LiveKitEndpoint,
) -> None:
    """A call still running when the drain timeout passes is cancelled, and the worker closes."""
    settings = worker_settings(livekit_server)
    agent = RoomJoiningAgent()
    with watching_logs() as logs:
        async with AgentWorker(settings=settings, entrypoint=agent, options=FAST) as worker:
            await asyncio.wait_for(worker.wait_registered(), STEP_S)
            call = new_call(settings)
            async with caller_in_room(call):
                await asyncio.wait_for(agent.joined(call.room), STEP_S)
                await asyncio.wait_for(worker.drain(timeout_s=0.2), STEP_S)
                assert worker.closed
                assert agent.ended(call.room).result() == "cancelled"
    (finished,) = logs.named("job.finished", call_id=call.call_id)
    assert finished["outcome"] == "drain_timeout"
    assert logs.named("worker.drain_timeout")


async def test_a_failing_entrypoint_fails_its_job_and_the_worker_serves_on(
    livekit_server: LiveKitEndpoint,
) -> None:
    """An entrypoint that raises ends only its own job (logged as failed); the next call is
    served as usual."""
    settings = worker_settings(livekit_server)
    agent = RoomJoiningAgent()
    calls_seen = 0

    async def fails_first(job: JobContext) -> None:
        nonlocal calls_seen
        calls_seen += 1
        if calls_seen == 1:
            raise RuntimeError("the first call breaks")
        await agent(job)

    with watching_logs() as logs:
        async with AgentWorker(settings=settings, entrypoint=fails_first, options=FAST) as worker:
            await asyncio.wait_for(worker.wait_registered(), STEP_S)
            broken, working = new_call(settings), new_call(settings)
            async with caller_in_room(broken):
                failed = await asyncio.wait_for(
                    logs.wait_for("job.finished", call_id=broken.call_id), STEP_S
                )
            async with caller_in_room(working):
                seen = await asyncio.wait_for(agent.joined(working.room), STEP_S)
            await asyncio.wait_for(logs.wait_for("job.finished", call_id=working.call_id), STEP_S)
    assert seen == working.identity
    assert failed["outcome"] == "failed"
    assert failed["exc_info"].args == ("the first call breaks",)
