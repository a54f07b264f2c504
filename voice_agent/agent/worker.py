"""The agent worker: LiveKit's dispatch protocol, with one owned task per call.

    worker → register{JT_ROOM, agent_name}          server → register{worker_id}
    server → availability{job}                       worker → availability{job_id, available}
    server → assignment{job, url, token}             worker → update_job{RUNNING, SUCCESS|FAILED}
    server → termination{job_id}                     the job's task is cancelled
    worker → update_worker{status, load, job_count}  every `status_interval_s` and on change
    worker → ping{timestamp}                         server → pong{last_timestamp, timestamp}

LiveKit never pings a worker, it only answers; so our pings are the liveness check, and silence
longer than `ping_timeout_s` counts as a dead connection. A dropped socket does not end the calls
(each holds its own room connection): the worker reconnects with backoff, re-registers, and keeps
counting the calls still running in the load it reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import aiohttp
from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

from voice_agent import __version__
from voice_agent.agent import metrics
from voice_agent.agent.connection import WorkerConnection, websocket_url
from voice_agent.agent.job import Entrypoint, JobContext, call_id_of, job_context_from_assignment
from voice_agent.agent.jobs import JobSlots
from voice_agent.agent.load import ProcessCpuMeter, worker_load
from voice_agent.backoff import ReconnectPolicy
from voice_agent.exceptions import DependencyUnavailableError
from voice_agent.logging import get_logger
from voice_agent.protocol import ATTR_AGENT_STATE, AgentState
from voice_agent.settings import Settings

log = get_logger("agent.worker")

# What the agent participant shows from the moment it joins, until the call session takes over.
_INITIAL_ATTRIBUTES = {ATTR_AGENT_STATE: AgentState.INITIALIZING.value}


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """The worker's knobs; the defaults suit production.

    `max_jobs` is the number of concurrent calls at which the worker reports a load of 1.0 and
    `WS_FULL`. LiveKit stops offering jobs earlier, once the reported load reaches its
    `agents.target_load` (0.7 by default), so raise that in the server config to use every slot.
    """

    max_jobs: int = 4
    status_interval_s: float = 2.5
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 15.0
    register_timeout_s: float = 10.0
    assignment_timeout_s: float = 15.0
    """How long a slot promised in an availability answer waits for its assignment."""
    drain_timeout_s: float = 600.0
    job_stop_timeout_s: float = 10.0
    """How long a cancelled entrypoint gets to clean up before the worker stops waiting."""
    measure_cpu: bool = True
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)

    def __post_init__(self) -> None:
        if self.max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        if self.ping_timeout_s <= self.ping_interval_s:
            raise ValueError("ping_timeout_s must exceed ping_interval_s")
        durations = {
            "status_interval_s": self.status_interval_s,
            "ping_interval_s": self.ping_interval_s,
            "register_timeout_s": self.register_timeout_s,
            "assignment_timeout_s": self.assignment_timeout_s,
            "drain_timeout_s": self.drain_timeout_s,
            "job_stop_timeout_s": self.job_stop_timeout_s,
        }
        for name, value in durations.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive")


class AgentWorker:
    """Registers with LiveKit as `settings.agent_name` and runs `entrypoint` once per call.

    Use `async with AgentWorker(...) as worker:` (serves in the background until the block ends)
    or `await worker.run()` (serves until `drain()` or `aclose()` from another task).
    """

    def __init__(
        self, *, settings: Settings, entrypoint: Entrypoint, options: WorkerOptions | None = None
    ) -> None:
        self._api_key, self._api_secret = settings.livekit_credentials()
        self._url = websocket_url(settings.livekit_url)
        self._agent_name = settings.agent_name
        self._options = options or WorkerOptions()
        self._cpu = ProcessCpuMeter() if self._options.measure_cpu else None
        self._log = log.bind(agent_name=self._agent_name)
        self._jobs = JobSlots(
            entrypoint=entrypoint,
            report=self._report_job,
            on_change=self._notify,
            assignment_timeout_s=self._options.assignment_timeout_s,
            stop_timeout_s=self._options.job_stop_timeout_s,
        )
        self._conn: WorkerConnection | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._draining = False
        self._closing = False
        self._closed_logged = False
        self._registrations = 0
        self._load = 0.0
        self._last_status: agent_pb.WorkerStatus | None = None
        self._changed = asyncio.Event()
        self._status_due = asyncio.Event()

    # -- public state ------------------------------------------------------------------------

    @property
    def worker_id(self) -> str | None:
        """The id LiveKit gave this worker, while registered."""
        return self._conn.worker_id if self._conn is not None else None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def active_jobs(self) -> int:
        """Calls whose entrypoint is running now."""
        return self._jobs.running

    @property
    def load(self) -> float:
        """The load last reported to LiveKit."""
        return self._load

    @property
    def closed(self) -> bool:
        """True once the worker has stopped serving (`aclose()`, `drain()` or a fatal error)."""
        return self._loop_task is not None and self._loop_task.done()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        if exc_type is None:
            self._raise_if_failed()

    def start(self) -> asyncio.Task[None]:
        """Start serving in a task this worker owns; the task."""
        if self._loop_task is not None:
            raise RuntimeError("this worker has already been started")
        self._loop_task = asyncio.create_task(self._connection_loop(), name="agent-worker")
        self._loop_task.add_done_callback(lambda _: self._notify())
        return self._loop_task

    async def run(self) -> None:
        """Serve until `drain()` or `aclose()`; raises if LiveKit stays away or rejects us."""
        task = self.start()
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            await self.aclose()
            raise
        await self.aclose()
        self._raise_if_failed()

    async def wait_registered(self, *, other_than: str | None = None) -> str:
        """The worker id once registered (under an id other than `other_than`, if given)."""
        while True:
            changed = self._changed
            if self._conn is not None and self._conn.worker_id != other_than:
                return self._conn.worker_id
            if self._loop_task is None:
                raise RuntimeError("start the worker first")
            if self._loop_task.done():
                self._raise_if_failed()
                raise RuntimeError("the worker has stopped")
            await changed.wait()

    async def wait_closed(self) -> None:
        """Return once the worker has stopped serving; raise its fatal error, if it had one."""
        if self._loop_task is None:
            raise RuntimeError("start the worker first")
        await asyncio.wait({self._loop_task})
        self._raise_if_failed()

    async def drain(self, *, timeout_s: float | None = None) -> None:
        """Refuse new calls, wait for running ones (cancelling them after the timeout), close."""
        timeout = self._options.drain_timeout_s if timeout_s is None else timeout_s
        if not self._draining:
            self._draining = True  # before any await: from here on every offer is refused
            self._log.info("worker.draining", active_jobs=self._jobs.running, timeout_s=timeout)
            self._notify()
        try:
            async with asyncio.timeout(timeout):
                await self._wait_until(lambda: self._jobs.taken == 0)
        except TimeoutError:
            self._log.warning(
                "worker.drain_timeout", active_jobs=self._jobs.running, timeout_s=timeout
            )
            await self._jobs.stop_all("drain_timeout")
        else:
            self._log.info("worker.drained")
        await self.aclose()

    async def aclose(self) -> None:
        """Stop now: cancel running calls (they still report while connected), then disconnect."""
        if not self._closing:
            self._closing = True
            self._log.info("worker.closing", active_jobs=self._jobs.running)
            self._notify()
        await self._jobs.stop_all("shutdown")
        task = self._loop_task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # already logged; run() and __aexit__ raise it
        if not self._closed_logged:
            self._closed_logged = True
            self._log.info("worker.closed", registrations=self._registrations)

    # -- connection --------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        policy = self._options.reconnect
        attempt = 0  # consecutive reconnect attempts since the last registration
        error = ""
        try:
            async with aiohttp.ClientSession() as http:
                while True:
                    if attempt > 0:
                        if policy.exhausted(attempt):
                            self._log.error("worker.gave_up", attempts=attempt - 1, error=error)
                            raise DependencyUnavailableError(
                                f"LiveKit unreachable after {attempt - 1} reconnect attempts: "
                                f"{error}"
                            )
                        delay = policy.delay_s(attempt)
                        self._log.warning(
                            "worker.reconnecting",
                            attempt=attempt,
                            delay_s=round(delay, 3),
                            error=error,
                        )
                        await asyncio.sleep(delay)
                    try:
                        conn = await WorkerConnection.open(
                            http,
                            url=self._url,
                            api_key=self._api_key,
                            api_secret=self._api_secret,
                            request=self._register_request(),
                            timeout_s=self._options.register_timeout_s,
                        )
                    except DependencyUnavailableError as e:
                        attempt, error = attempt + 1, str(e)
                        continue
                    try:
                        await self._serve(conn)
                    except DependencyUnavailableError as e:
                        self._log.warning("worker.disconnected", error=str(e))
                        attempt, error = 1, str(e)
                    except Exception as e:  # noqa: BLE001 - one bad message must not end calls
                        self._log.error("worker.disconnected", error=repr(e), exc_info=e)
                        attempt, error = 1, repr(e)
        except Exception as e:  # fatal, logged and stopped on (not swallowed)
            # Fatal (bad credentials, LiveKit gone for good): no call may outlive the worker.
            self._log.error("worker.failed", error=str(e), error_type=type(e).__name__)
            self._closing = True
            await self._jobs.stop_all("shutdown")
            raise

    def _register_request(self) -> agent_pb.RegisterWorkerRequest:
        return agent_pb.RegisterWorkerRequest(
            type=agent_pb.JT_ROOM,
            agent_name=self._agent_name,
            version=__version__,
            allowed_permissions=models_pb.ParticipantPermission(
                can_subscribe=True,
                can_publish=True,
                can_publish_data=True,
                can_update_metadata=True,  # the agent publishes its state as an attribute
            ),
        )

    async def _serve(self, conn: WorkerConnection) -> None:
        """Handle one registered connection until it drops (raises DependencyUnavailableError)."""
        self._conn = conn
        self._registrations += 1
        self._log = log.bind(agent_name=self._agent_name, worker_id=conn.worker_id)
        self._log.info(
            "worker.registered",
            server_version=conn.server_version,
            reconnect=self._registrations > 1,
            active_jobs=self._jobs.running,
        )
        self._last_status = None
        self._notify()
        helpers = [
            asyncio.create_task(self._report_status(conn), name="agent-worker-status"),
            asyncio.create_task(self._ping(conn), name="agent-worker-ping"),
        ]
        try:
            while True:
                message = await conn.receive(timeout_s=self._options.ping_timeout_s)
                await self._handle(conn, message)
        finally:
            self._conn = None
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await conn.close()
            self._notify()

    async def _handle(self, conn: WorkerConnection, message: agent_pb.ServerMessage) -> None:
        kind = message.WhichOneof("message")
        if kind == "availability":
            await self._answer_availability(conn, message.availability)
        elif kind == "assignment":
            await self._start_job(message.assignment)
        elif kind == "termination":
            self._terminate_job(message.termination.job_id)
        elif kind == "pong":
            rtt_ms = _now_ms() - message.pong.last_timestamp
            self._log.debug("worker.pong", rtt_ms=rtt_ms)
        elif kind == "go_away":
            raise DependencyUnavailableError(f"LiveKit asked us to go: {message.go_away.reason}")
        else:
            self._log.debug("worker.message_ignored", kind=kind)

    async def _report_status(self, conn: WorkerConnection) -> None:
        """Send UpdateWorkerStatus now, every `status_interval_s`, and whenever state changes."""
        while True:
            self._status_due.clear()
            try:
                await conn.send(agent_pb.WorkerMessage(update_worker=self._status_update()))
            except DependencyUnavailableError:
                await conn.close()  # the receive loop notices and reconnects
                return
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that arrives
            # as the event fires, and this task would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._options.status_interval_s):
                    await self._status_due.wait()

    async def _ping(self, conn: WorkerConnection) -> None:
        while True:
            await asyncio.sleep(self._options.ping_interval_s)
            try:
                await conn.send(
                    agent_pb.WorkerMessage(ping=agent_pb.WorkerPing(timestamp=_now_ms()))
                )
            except DependencyUnavailableError:
                await conn.close()
                return

    def _status_update(self) -> agent_pb.UpdateWorkerStatus:
        job_count = self._jobs.taken
        cpu = self._cpu.sample() if self._cpu is not None else 0.0
        self._load = worker_load(job_count=job_count, max_jobs=self._options.max_jobs, cpu=cpu)
        metrics.WORKER_LOAD.set(self._load)
        full = self._draining or self._closing or job_count >= self._options.max_jobs
        status = agent_pb.WS_FULL if full else agent_pb.WS_AVAILABLE
        if status != self._last_status:
            self._last_status = status
            self._log.info(
                "worker.status_changed",
                status="full" if full else "available",
                load=round(self._load, 3),
                job_count=job_count,
                draining=self._draining,
            )
        return agent_pb.UpdateWorkerStatus(
            status=status, load=self._load, job_count=job_count, draining=self._draining
        )

    # -- jobs --------------------------------------------------------------------------------

    def _refusal(self, job_id: str) -> str | None:
        """Why an offered job must be refused, or None to accept it."""
        if self._closing:
            return "closing"
        if self._draining:
            return "draining"
        if self._jobs.holds(job_id):
            return "duplicate"
        if self._jobs.taken >= self._options.max_jobs:
            return "full"
        return None

    async def _answer_availability(
        self, conn: WorkerConnection, request: agent_pb.AvailabilityRequest
    ) -> None:
        job = request.job
        refusal = self._refusal(job.id)
        response = agent_pb.AvailabilityResponse(job_id=job.id, available=refusal is None)
        if refusal is None:
            response.participant_identity = f"agent-{job.id}"
            response.participant_name = self._agent_name
            response.participant_attributes.update(_INITIAL_ATTRIBUTES)
            self._jobs.promise(job.id)
        self._log.info(
            "worker.job_offered",
            call_id=call_id_of(job),
            job_id=job.id,
            room=job.room.name,
            accepted=refusal is None,
            reason=refusal,
        )
        await conn.send(agent_pb.WorkerMessage(availability=response))

    async def _start_job(self, assignment: agent_pb.JobAssignment) -> None:
        job_id = assignment.job.id
        promised = self._jobs.claim(job_id)
        context = job_context_from_assignment(
            assignment, fallback_url=self._url, identity=f"agent-{job_id}", base_log=self._log
        )
        if self._jobs.holds(job_id):
            context.log.warning("worker.assignment_duplicate")
            return
        if self._closing:
            context.log.warning("worker.assignment_refused", reason="closing")
            await self._report_job(context, agent_pb.JS_FAILED, "agent worker shutting down")
            return
        if not promised:  # LiveKit assigns only what we accepted; honour it anyway
            context.log.warning("worker.assignment_unexpected")
        context.log.info("worker.job_assigned", identity=context.identity, url=context.url)
        self._jobs.start(context)

    def _terminate_job(self, job_id: str) -> None:
        if not self._jobs.terminate(job_id):
            self._log.info("worker.termination_ignored", job_id=job_id, reason="not running")

    async def _report_job(
        self, context: JobContext, status: agent_pb.JobStatus, error: str
    ) -> None:
        """Tell LiveKit about a job; a lost connection only costs the report, not the call."""
        conn, name = self._conn, agent_pb.JobStatus.Name(status)
        if conn is None:
            context.log.info("job.status_unreported", status=name, reason="disconnected")
            return
        update = agent_pb.UpdateJobStatus(job_id=context.job_id, status=status, error=error)
        try:
            await conn.send(agent_pb.WorkerMessage(update_job=update))
        except DependencyUnavailableError as e:
            context.log.warning("job.status_unreported", status=name, reason=str(e))

    # -- plumbing ----------------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake everything that waits on this worker's state, and send a status update."""
        self._status_due.set()
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while True:
            changed = self._changed
            if predicate():
                return
            await changed.wait()

    def _raise_if_failed(self) -> None:
        task = self._loop_task
        if task is not None and task.done() and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error


def _now_ms() -> int:
    return int(time.time() * 1000)
