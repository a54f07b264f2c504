"""What an entrypoint gets for one call: which job, where to join, with what, and for whom.

The token service puts the call's metadata (`call_id`, `user_id`, `anonymous`, and `traceparent`
when tracing is on) in the token's `RoomAgentDispatch.metadata`; LiveKit hands it to the worker as
the job's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from livekit.protocol import agent as agent_pb

from voice_agent.logging import Logger, get_logger
from voice_agent.tracing import valid_traceparent

log = get_logger("agent.job")


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """One dispatched call, as the entrypoint sees it."""

    job_id: str
    dispatch_id: str
    agent_name: str
    room_name: str
    url: str
    """The LiveKit URL to join (the assignment's, else the configured `LIVEKIT_URL`)."""
    token: str = field(repr=False)
    """The access token LiveKit minted for this job's agent participant."""
    identity: str
    """The agent's participant identity in the room."""
    metadata: Mapping[str, Any]
    """The dispatch metadata, parsed as a JSON object (empty when absent or not an object)."""
    call_id: str
    """The call's id from the metadata; the room name when the dispatch carried none."""
    user_id: str | None
    traceparent: str | None = None
    """The token mint's span (W3C traceparent) the call's trace continues; None when absent or
    malformed."""
    log: Logger = field(repr=False, compare=False)
    """A structlog logger bound with `call_id`, `job_id` and `room`."""


Entrypoint = Callable[[JobContext], Awaitable[None]]
"""The user-supplied coroutine that runs one call; cancelled when LiveKit ends the job."""


def parse_metadata(raw: str) -> Mapping[str, Any]:
    """The job metadata as a read-only mapping; `{}` when empty or not a JSON object."""
    if not raw:
        return MappingProxyType({})
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("job.metadata_invalid", reason="not JSON", size=len(raw))
        return MappingProxyType({})
    if not isinstance(value, dict):
        log.warning("job.metadata_invalid", reason="not a JSON object", size=len(raw))
        return MappingProxyType({})
    return MappingProxyType(value)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def call_id_of(job: agent_pb.Job) -> str:
    """The call id a job belongs to (for log lines before the job has a context)."""
    return _text(parse_metadata(job.metadata).get("call_id")) or job.room.name


def job_context_from_assignment(
    assignment: agent_pb.JobAssignment,
    *,
    fallback_url: str,
    identity: str,
    base_log: Logger | None = None,
) -> JobContext:
    """Build the entrypoint's view of an assignment; its logger extends `base_log`."""
    job = assignment.job
    metadata = parse_metadata(job.metadata)
    call_id = _text(metadata.get("call_id")) or job.room.name
    return JobContext(
        job_id=job.id,
        dispatch_id=job.dispatch_id,
        agent_name=job.agent_name,
        room_name=job.room.name,
        url=assignment.url or fallback_url,
        token=assignment.token,
        identity=job.state.participant_identity or identity,
        metadata=metadata,
        call_id=call_id,
        user_id=_text(metadata.get("user_id")),
        traceparent=valid_traceparent(metadata.get("traceparent")),
        log=(base_log or log).bind(call_id=call_id, job_id=job.id, room=job.room.name),
    )
