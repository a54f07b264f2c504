"""One call id, one session: the claim a job takes before it runs a call.

A voice token stays valid for its TTL, and LiveKit dispatches our agent whenever a room is created
from it. A caller who leaves and joins again with the same token after the room closed gets a
second job under the same call id; run as a call, it would be a second, unrecorded conversation
(its hand-over is refused as a duplicate, its tool calls never reach the staff audit). So every
job claims its call id first, and only the first claim runs a session; later jobs are refused
(`runner.py` tells the caller and closes the room).

The claim is shared across workers and hosts in Redis when `REDIS_URL` is set: `SET NX` on
`voice_agent:call_session:<call_id>`, kept for the token TTL plus a minute, which covers every
join the token allows (a session starts after its token was minted). A journal of the call on this
host also counts as a claim, so a lost Redis key cannot let a second session write into it.
Without Redis, or while Redis fails, claims are held in this process (and the journal check), so
one worker still refuses; across hosts that window is logged (`call.claim_unshared`).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from voice_agent.logging import get_logger

log = get_logger("agent.claims")

KEY_PREFIX = "voice_agent:call_session:"
_CLAIM_ERRORS = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class CallClaim:
    """The outcome of claiming a call id for a job."""

    first: bool
    """True when this job is the call's one session."""
    owner_job_id: str | None = None
    """The job that holds the call, when it is not this one (None when unknown: a journal, or a
    claim Redis holds in a form we cannot read, says so)."""
    shared: bool = True
    """False when Redis could not be asked: the claim holds for this process only."""


class CallClaims:
    """Claims call ids for jobs: in Redis (shared) when given a client, else in this process."""

    def __init__(
        self,
        *,
        ttl_s: float,
        journal_dir: Path,
        redis: Redis | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self._ttl_s = ttl_s
        self._journal_dir = journal_dir
        self._redis = redis
        self._timeout_s = timeout_s
        self._local: dict[str, tuple[str, float]] = {}  # call id -> (job id, monotonic expiry)

    async def claim(self, call_id: str, job_id: str) -> CallClaim:
        """Claim `call_id` for `job_id`; `first` says whether this job may run the call."""
        owner = self._claim_locally(call_id, job_id)
        shared = False
        if self._redis is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    in_redis = await self._claim_in_redis(call_id, job_id)
            except _CLAIM_ERRORS as e:
                log.warning(
                    "call.claim_unshared",
                    call_id=call_id,
                    job_id=job_id,
                    error=f"{type(e).__name__}: {e}"[:300],
                )
            else:
                shared = True
                owner = in_redis if in_redis is not None else owner
        if owner is not None and owner != job_id:
            return CallClaim(first=False, owner_job_id=owner or None, shared=shared)
        if await asyncio.to_thread(self._journal_exists, call_id):
            return CallClaim(first=False, shared=shared)  # a session ran here; Redis forgot it
        return CallClaim(first=True, shared=shared)

    def _claim_locally(self, call_id: str, job_id: str) -> str | None:
        """Record the claim in this process; the earlier job id when there is one."""
        now = time.monotonic()
        for key in [k for k, (_, expires) in self._local.items() if expires <= now]:
            del self._local[key]
        held = self._local.get(call_id)
        if held is not None:
            return held[0]
        self._local[call_id] = (job_id, now + self._ttl_s)
        return None

    async def _claim_in_redis(self, call_id: str, job_id: str) -> str | None:
        """`SET NX` the claim; the job id already holding it, or None when this job now does."""
        assert self._redis is not None
        key = KEY_PREFIX + call_id
        value = json.dumps({"job_id": job_id, "at": time.time()}, separators=(",", ":"))
        if await self._redis.set(key, value, nx=True, ex=max(1, round(self._ttl_s))):
            return None
        raw = await self._redis.get(key)
        if raw is None:  # expired between the two commands: it is ours to take again
            taken = await self._redis.set(key, value, nx=True, ex=max(1, round(self._ttl_s)))
            return None if taken else ""
        try:
            held = json.loads(raw)
        except ValueError:
            return ""
        owner = held.get("job_id") if isinstance(held, dict) else None
        return owner if isinstance(owner, str) else ""

    def _journal_exists(self, call_id: str) -> bool:
        return (self._journal_dir / f"{call_id}.jsonl").exists()

    async def aclose(self) -> None:
        """Close the Redis connection, if any."""
        if self._redis is not None:
            await self._redis.aclose()
