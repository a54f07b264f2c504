"""`POST /api/calls/{call_id}/retry`: staff send a dead-lettered call through the pipeline again.

Only a `dead` call can be retried (anything else is 409: it is queued, being worked on, or done).
The retry is a new arq job, `call:<call_id>:retry:<n>`, because the call's own job id stays taken
for as long as its result is kept; the call goes back to `queued` with a `retry_requested` event
naming who asked. Side effects that already succeeded are skipped by their idempotency keys.
"""

from __future__ import annotations

from aiohttp import web
from redis.exceptions import RedisError

from voice_agent.logging import bind_context, get_logger
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.queue import retry_job_id, valid_call_id
from voice_agent.server.calls_api import NO_STORE, REPORT_STORE
from voice_agent.server.errors import error_response
from voice_agent.server.staff import StaffIdentity, staff_only
from voice_agent.server.webhooks import POSTCALL_QUEUE

log = get_logger("postcall_api")


@staff_only
async def retry_call(request: web.Request, staff: StaffIdentity) -> web.StreamResponse:
    """POST /api/calls/{call_id}/retry: re-enqueue a dead call; 202 with the new job id."""
    call_id = request.match_info["call_id"]
    if not valid_call_id(call_id):
        return error_response(400, "bad_request", {"parameter": "call_id", "message": "invalid"})
    bind_context(call_id=call_id)
    queue = request.app.get(POSTCALL_QUEUE)
    if queue is None:
        return error_response(503, "unavailable", "the post-call queue is not configured")
    store = request.app[REPORT_STORE]
    call = await store.get_call(call_id)
    if call is None:
        return error_response(404, "not_found", "no call with this id", headers=NO_STORE)
    if call.status is not CallStatus.DEAD:
        return error_response(
            409,
            "conflict",
            f"only a dead call can be retried; this one is {call.status.value}",
            headers=NO_STORE,
        )
    try:
        n = await queue.next_retry_number(call_id)
    except (RedisError, OSError) as e:
        return _queue_down(e)
    job_id = retry_job_id(call_id, n)
    await store.set_status(
        call_id, CallStatus.QUEUED, event="retry_requested", by=staff.identity, job_id=job_id
    )
    try:
        enqueued = await queue.enqueue(call_id, job_id=job_id)
    except (RedisError, OSError) as e:
        await store.set_status(
            call_id,
            CallStatus.DEAD,
            error="staff retry: the queue was down",
            event="retry_failed",
            job_id=job_id,
        )
        return _queue_down(e)
    log.info("postcall.retry_requested", staff=staff.identity, job_id=job_id, enqueued=enqueued)
    return web.json_response(
        {"call_id": call_id, "status": CallStatus.QUEUED.value, "job_id": job_id},
        status=202,
        headers=NO_STORE,
    )


def _queue_down(e: Exception) -> web.Response:
    log.error("postcall.retry_failed", error=f"{type(e).__name__}: {e}"[:300])
    return error_response(503, "unavailable", "the post-call queue did not answer")


def add_routes(app: web.Application) -> None:
    """Register the post-call staff actions."""
    app.router.add_post("/api/calls/{call_id}/retry", retry_call)
