"""The calls one worker holds: slots promised to LiveKit, entrypoint tasks, and how each ended.

A slot is taken when the worker accepts an offer (LiveKit's availability request) and freed when
the assignment never comes, or when the entrypoint's task ends. Each task is owned here and has
one cancel path; how it ended decides what LiveKit is told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from livekit.protocol import agent as agent_pb

from voice_agent.agent.job import Entrypoint, JobContext
from voice_agent.logging import bind_context, get_logger

log = get_logger("agent.jobs")

StatusReport = Callable[[JobContext, agent_pb.JobStatus, str], Awaitable[None]]
"""Sends UpdateJobStatus(job, status, error) to LiveKit, if it can."""

# How a job ended -> what LiveKit is told (None: nothing, LiveKit ended the job itself).
_REPORTED_STATUS: dict[str, agent_pb.JobStatus | None] = {
    "success": agent_pb.JS_SUCCESS,
    "failed": agent_pb.JS_FAILED,
    "terminated": None,
    "shutdown": agent_pb.JS_FAILED,
    "drain_timeout": agent_pb.JS_FAILED,
    "cancelled": agent_pb.JS_FAILED,
}


@dataclass
class _Running:
    context: JobContext
    task: asyncio.Task[None]
    cancel_reason: str | None = None


class JobSlots:
    """Promised and running jobs; the worker decides which offers to accept."""

    def __init__(
        self,
        *,
        entrypoint: Entrypoint,
        report: StatusReport,
        on_change: Callable[[], None],
        assignment_timeout_s: float,
        stop_timeout_s: float,
    ) -> None:
        self._entrypoint = entrypoint
        self._report = report
        self._on_change = on_change
        self._assignment_timeout_s = assignment_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._running: dict[str, _Running] = {}
        self._promised: dict[str, asyncio.TimerHandle] = {}

    @property
    def running(self) -> int:
        """Jobs whose entrypoint is running."""
        return len(self._running)

    @property
    def taken(self) -> int:
        """Slots in use: running jobs and jobs accepted but not yet assigned."""
        return len(self._running) + len(self._promised)

    def holds(self, job_id: str) -> bool:
        return job_id in self._running or job_id in self._promised

    def promise(self, job_id: str) -> None:
        """Hold a slot for an accepted offer until its assignment arrives (or times out)."""
        loop = asyncio.get_running_loop()
        self._promised[job_id] = loop.call_later(self._assignment_timeout_s, self._expire, job_id)
        self._on_change()

    def _expire(self, job_id: str) -> None:
        if self._promised.pop(job_id, None) is not None:
            log.warning("worker.reservation_expired", job_id=job_id)
            self._on_change()

    def claim(self, job_id: str) -> bool:
        """Take back the slot promised to `job_id`; whether there was one."""
        handle = self._promised.pop(job_id, None)
        if handle is None:
            return False
        handle.cancel()
        self._on_change()
        return True

    def start(self, context: JobContext) -> None:
        """Run the entrypoint for `context` in a task owned here."""
        task = asyncio.create_task(self._run(context), name=f"agent-job-{context.job_id}")
        self._running[context.job_id] = _Running(context=context, task=task)
        self._on_change()

    def terminate(self, job_id: str) -> bool:
        """Cancel a job LiveKit ended; whether it was running."""
        job = self._running.get(job_id)
        if job is None:
            return False
        job.context.log.info("worker.job_terminated")
        job.cancel_reason = job.cancel_reason or "terminated"
        job.task.cancel()
        return True

    async def stop_all(self, reason: str) -> None:
        """Cancel every running job and wait (bounded) for the entrypoints to finish."""
        for handle in self._promised.values():
            handle.cancel()
        self._promised.clear()
        jobs = list(self._running.values())
        if not jobs:
            return
        for job in jobs:
            job.cancel_reason = job.cancel_reason or reason
            job.task.cancel()
        _, stuck = await asyncio.wait([job.task for job in jobs], timeout=self._stop_timeout_s)
        if stuck:
            log.error(
                "worker.jobs_stuck",
                job_ids=[job.context.job_id for job in jobs if job.task in stuck],
                timeout_s=self._stop_timeout_s,
            )

    async def _run(self, context: JobContext) -> None:
        """One call: report it running, run the entrypoint, report how it ended."""
        bind_context(call_id=context.call_id, job_id=context.job_id)
        started = time.monotonic()
        outcome, failure = "success", None
        try:
            await self._report(context, agent_pb.JS_RUNNING, "")
            context.log.info("job.started", identity=context.identity, user_id=context.user_id)
            await self._entrypoint(context)
        except asyncio.CancelledError:
            job = self._running.get(context.job_id)
            outcome = (job.cancel_reason if job else None) or "cancelled"
            raise
        except Exception as e:  # noqa: BLE001 - the job failed: recorded, the worker goes on
            outcome, failure = "failed", e
        finally:
            self._running.pop(context.job_id, None)
            self._on_change()
            duration_ms = round((time.monotonic() - started) * 1000)
            if failure is not None:
                context.log.error(
                    "job.finished", outcome=outcome, duration_ms=duration_ms, exc_info=failure
                )
            else:
                context.log.info("job.finished", outcome=outcome, duration_ms=duration_ms)
            status = _REPORTED_STATUS[outcome]
            if status is not None:
                await self._report(context, status, _error_text(outcome, failure))


def _error_text(outcome: str, failure: Exception | None) -> str:
    if failure is not None:
        return f"{type(failure).__name__}: {failure}"
    return "" if outcome == "success" else f"job ended: {outcome}"
