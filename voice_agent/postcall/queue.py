"""The post-call queue in Redis: call records, and `process_call` jobs run by arq.

arq keeps a job in Redis until a worker finishes it, so a worker killed mid-job leaves the job
behind and another worker runs it again once the dead one's in-progress lease expires (the job
timeout plus ten seconds). Enqueueing with `_job_id="call:<call_id>"` is idempotent: arq refuses a
job id whose job or result is still in Redis, and results are kept for `RESULT_TTL_S`, so a late
duplicate hand-over (the agent and the LiveKit webhook both enqueue every call) is refused.

Jobs and results are JSON, never pickle: the queue is shared across processes and hosts, and
nothing read from Redis should be able to run code. Records live beside the jobs as hashes
(`postcall:record:<call_id>`, fields `complete`, `json`, `source` and `turns`), so a job carries
only a call id. Once the store holds a call, `postcall:stored:<call_id>` says so (and how
complete its record is), so the host that journaled the call can remove its journal.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool

from voice_agent.call_record import CallRecord

QUEUE_NAME = "postcall:queue"
JOB_FUNCTION = "process_call"
HEALTH_KEY = "postcall:worker:health"
RECORD_TTL_S = int(timedelta(days=7).total_seconds())
RESULT_TTL_S = RECORD_TTL_S
# A job not started within this long after its due time expires; as long as records are kept.
JOB_EXPIRY_MS = RECORD_TTL_S * 1000

# Call ids reach us from LiveKit webhooks and URLs too; they become Redis keys and file names.
CALL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")

# The first record is kept, except that a complete record replaces a partial one, and a partial
# one with more transcript turns (a journal recovered later) replaces a thinner partial one.
_PUT_RECORD = """
local current = redis.call('HGET', KEYS[1], 'complete')
if current == '1' then return 0 end
if current == '0' and ARGV[1] == '0' then
  local turns = tonumber(redis.call('HGET', KEYS[1], 'turns') or '0') or 0
  if tonumber(ARGV[5]) <= turns then return 0 end
end
redis.call('HSET', KEYS[1], 'complete', ARGV[1], 'json', ARGV[2], 'source', ARGV[4],
           'turns', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_PUT_RECORD_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'complete', ARGV[1], 'json', ARGV[2], 'source', ARGV[4],
           'turns', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def valid_call_id(call_id: str) -> bool:
    """True for a call id safe to use in keys and file names."""
    return CALL_ID_RE.fullmatch(call_id) is not None


def job_id_for(call_id: str) -> str:
    """The one job id every hand-over of `call_id` uses."""
    return f"call:{call_id}"


def retry_job_id(call_id: str, n: int) -> str:
    """The job id of staff retry number `n` of a dead call."""
    return f"call:{call_id}:retry:{n}"


def health_key(pid: int | None = None, host: str | None = None) -> str:
    """The key a running post-call worker keeps fresh in Redis (per host and process)."""
    return f"postcall:worker:{host or socket.gethostname()}:{pid or os.getpid()}:health"


async def worker_alive(url: str, pid: int) -> bool:
    """True while the post-call worker with `pid` on this host refreshes its health key."""
    client = connect(url, timeout_s=1.0)
    try:
        return bool(await client.exists(health_key(pid)))
    finally:
        await client.aclose(close_connection_pool=True)


def record_key(call_id: str) -> str:
    """Where a call's record is kept in Redis."""
    return f"postcall:record:{call_id}"


def stored_key(call_id: str) -> str:
    """Where the post-call worker says the store holds a call (and how much of it)."""
    return f"postcall:stored:{call_id}"


@dataclass(frozen=True)
class StoredMark:
    """What the store holds of a call, as the post-call worker last saw it."""

    complete: bool
    turns: int

    def covers(self, record: CallRecord) -> bool:
        """True when the store has at least what `record` holds (the journal may go)."""
        return self.complete or self.turns >= len(record.transcript)


def _jsonable(value: Any) -> Any:
    # arq stores exceptions as job results; keep their type and message, as text.
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


def serialize(data: dict[str, Any]) -> bytes:
    """arq job serializer: JSON."""
    return json.dumps(data, default=_jsonable, separators=(",", ":")).encode()


def deserialize(data: bytes) -> dict[str, Any]:
    """arq job deserializer: JSON."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("an arq job must be a JSON object")
    return value


def connect(url: str, *, timeout_s: float = 2.0) -> ArqRedis:
    """An arq Redis client for `url` with our serializer; connects lazily, on first use."""
    pool = ConnectionPool.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    return ArqRedis(
        pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=QUEUE_NAME,
        expires_extra_ms=JOB_EXPIRY_MS,
    )


@dataclass(frozen=True)
class QueuedRecord:
    """A record as Redis holds it, with who handed it over."""

    record: CallRecord
    source: str


class PostCallQueue:
    """Records and `process_call` jobs in Redis; every operation is idempotent."""

    def __init__(self, *, redis: ArqRedis) -> None:
        self.redis = redis

    async def put_record(self, record: CallRecord, *, source: str) -> bool:
        """Keep `record` unless one is kept already (a complete one does replace a partial one);
        False when it was not kept.

        `source` says who handed it over ("agent", "spool", "webhook"); the store keeps it.
        """
        return await self._put(_PUT_RECORD, record, source)

    async def put_record_if_absent(self, record: CallRecord, *, source: str) -> bool:
        """Keep `record` only when the call has none yet; True when it was kept."""
        return await self._put(_PUT_RECORD_IF_ABSENT, record, source)

    async def _put(self, script: str, record: CallRecord, source: str) -> bool:
        complete = "1" if record.complete else "0"
        kept = await self.redis.eval(  # type: ignore[misc]  # redis-py types eval loosely
            script,
            1,
            record_key(record.call_id),
            complete,
            record.model_dump_json(),
            str(RECORD_TTL_S),
            source,
            str(len(record.transcript)),
        )
        return bool(kept)

    async def mark_stored(self, call_id: str, *, complete: bool, turns: int) -> None:
        """Say that the store holds the call's record (complete or not, with so many turns)."""
        await self.redis.set(stored_key(call_id), f"{int(complete)}:{turns}", ex=RECORD_TTL_S)

    async def stored(self, call_id: str) -> StoredMark | None:
        """What the store holds of the call, when a post-call worker has said so."""
        raw = await self.redis.get(stored_key(call_id))
        if raw is None:
            return None
        complete, _, turns = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition(":")
        return StoredMark(complete=complete == "1", turns=int(turns or 0))

    async def has_record(self, call_id: str) -> bool:
        """True when Redis holds a record of the call."""
        return bool(await self.redis.exists(record_key(call_id)))

    async def get_record(self, call_id: str) -> QueuedRecord | None:
        """The call's record and who handed it over, or None when Redis has none."""
        raw, source = await self.redis.hmget(record_key(call_id), ["json", "source"])  # type: ignore[misc]
        if raw is None:
            return None
        return QueuedRecord(
            record=CallRecord.model_validate_json(raw),
            source=source.decode() if isinstance(source, bytes) else "agent",
        )

    async def enqueue(
        self, call_id: str, *, job_id: str | None = None, defer_s: float | None = None
    ) -> bool:
        """Enqueue `process_call(call_id)`; False when that job id was already queued or done."""
        job = await self.redis.enqueue_job(
            JOB_FUNCTION,
            call_id,
            _job_id=job_id or job_id_for(call_id),
            _defer_by=defer_s if defer_s else None,
        )
        return job is not None

    async def next_retry_number(self, call_id: str) -> int:
        """A fresh number for a staff retry of the call (1, 2, ...)."""
        key = f"postcall:retries:{call_id}"
        n = int(await self.redis.incr(key))
        await self.redis.expire(key, RECORD_TTL_S)
        return n

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose(close_connection_pool=True)
