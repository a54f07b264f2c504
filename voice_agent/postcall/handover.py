"""Handing a finished call to the post-call queue without ever losing it.

`PostCallSink.submit` (the agent's `CallRecordSink`) first writes the record to the local spool,
durably; only then does it try Redis: store the record, enqueue `process_call` under the call's
job id, and remove the spool file. When Redis is away the record stays in the spool and the
`SpoolFlusher` delivers it once Redis answers again, retrying with capped exponential backoff
and jitter (many agents lose the same Redis at once; identical delays would bring them all back
together). `submit` never raises for a Redis outage, and once it returns the record is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from redis.exceptions import RedisError

from voice_agent.backoff import ReconnectPolicy
from voice_agent.call_record import CallRecord
from voice_agent.logging import get_logger
from voice_agent.postcall.queue import PostCallQueue, connect
from voice_agent.postcall.spool import RecordSpool
from voice_agent.settings import Settings

log = get_logger("postcall.handover")

# What "Redis is not there right now" looks like from redis-py.
DELIVERY_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def spool_for(settings: Settings) -> RecordSpool:
    """The spool under the data directory."""
    return RecordSpool(directory=settings.data_dir / "spool")


async def deliver(
    queue: PostCallQueue, record: CallRecord, *, source: str, job_id: str | None = None
) -> bool:
    """Store the record in Redis and enqueue its job (the call's own job id unless `job_id`);
    True when a new job was enqueued."""
    await queue.put_record(record, source=source)
    return await queue.enqueue(record.call_id, job_id=job_id)


class SpoolFlusher:
    """Delivers spooled records to the queue; retries with backoff while Redis is away."""

    def __init__(
        self,
        *,
        spool: RecordSpool,
        queue: PostCallQueue,
        backoff: ReconnectPolicy | None = None,
        recheck_s: float = 30.0,
        timeout_s: float = 5.0,
    ) -> None:
        self._spool = spool
        self._queue = queue
        self._backoff = backoff or ReconnectPolicy(initial_delay_s=0.5, max_delay_s=30.0)
        self._recheck_s = recheck_s
        self._timeout_s = timeout_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Something new is waiting in the spool: try soon (not before a running backoff ends)."""
        self._wake.set()

    async def flush_once(self) -> int:
        """Deliver every spooled record; how many. Raises a delivery error when Redis fails."""
        delivered = 0
        for call_id in self._spool.pending():
            record = self._spool.read(call_id)
            if record is None:
                continue  # gone meanwhile (delivered by `submit`), or unreadable (logged)
            async with asyncio.timeout(self._timeout_s):
                enqueued = await deliver(self._queue, record, source="spool")
            self._spool.remove(call_id)
            delivered += 1
            log.info("postcall.handed_over", call_id=call_id, via="spool", enqueued=enqueued)
        return delivered

    async def run(self) -> None:
        """Flush now, then whenever woken or every `recheck_s`; back off while Redis fails."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                delivered = await self.flush_once()
            except DELIVERY_ERRORS as e:
                failures += 1
                delay = self._backoff.delay_s(failures)
                log.warning(
                    "spool.flush_failed",
                    error=f"{type(e).__name__}: {e}"[:300],
                    failures=failures,
                    retry_in_s=round(delay, 2),
                    pending=len(self._spool.pending()),
                )
                await asyncio.sleep(delay)
                continue
            if failures or delivered:
                log.info("spool.flushed", delivered=delivered, after_failures=failures)
            failures = 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._recheck_s):
                    await self._wake.wait()

    def start(self) -> None:
        """Run the flusher in the background until `aclose`."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="spool-flusher")

    async def aclose(self) -> None:
        """Stop the background flusher."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class PostCallSink:
    """The agent's `CallRecordSink`: spool first, then Redis; a flusher covers outages."""

    def __init__(
        self,
        *,
        spool: RecordSpool,
        queue: PostCallQueue,
        timeout_s: float = 2.0,
        flusher: SpoolFlusher | None = None,
    ) -> None:
        self._spool = spool
        self.queue = queue
        self._timeout_s = timeout_s
        self.flusher = flusher or SpoolFlusher(spool=spool, queue=queue)

    @classmethod
    def from_settings(cls, settings: Settings) -> PostCallSink:
        """A sink on `REDIS_URL` with the spool under the data directory."""
        if not settings.redis_url:
            raise ValueError("the post-call sink needs REDIS_URL")
        queue = PostCallQueue(redis=connect(settings.redis_url))
        spool = spool_for(settings)
        backoff = ReconnectPolicy(initial_delay_s=0.5, max_delay_s=settings.redis_retry_max_s)
        flusher = SpoolFlusher(spool=spool, queue=queue, backoff=backoff)
        return cls(spool=spool, queue=queue, flusher=flusher)

    @property
    def spool(self) -> RecordSpool:
        """Where records wait for Redis on this host."""
        return self._spool

    async def submit(
        self, record: CallRecord, *, source: str = "agent", job_id: str | None = None
    ) -> None:
        """Spool the record durably, then hand it to Redis or leave it for the flusher.

        `source` says who hands it over ("agent"; "journal" for a recovered orphan); `job_id`
        replaces the call's own job id (a record that must reach a store already done)."""
        path = await self._spool.write(record)
        try:
            async with asyncio.timeout(self._timeout_s):
                enqueued = await deliver(self.queue, record, source=source, job_id=job_id)
        except DELIVERY_ERRORS as e:
            log.warning(
                "postcall.handover_deferred",
                call_id=record.call_id,
                spool=str(path),
                error=f"{type(e).__name__}: {e}"[:300],
            )
            self.flusher.wake()
            return
        self._spool.remove(record.call_id)
        log.info(
            "postcall.handed_over",
            call_id=record.call_id,
            via="redis",
            source=source,
            enqueued=enqueued,
            complete=record.complete,
        )

    async def __aenter__(self) -> Self:
        self.flusher.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.flusher.aclose()
        await self.queue.aclose()
