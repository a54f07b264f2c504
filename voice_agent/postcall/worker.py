"""`voice-agent postcall`: the arq worker that turns call records into reports and side effects.

`process_call(ctx, call_id)` is the one job. It loads the record (Redis, else this host's spool,
else the store), registers the call, claims it in the store (a call already done is left alone:
no side effects), writes the report (or reuses the one an earlier try saved) and runs the
integrations. Every step is a job event in the store, which is what staff see.

Failures are retried by arq with capped exponential backoff and jitter (`Retry(defer=...)`):
an integration that failed, a model that did not answer, a try that ran out of time, a store or
Redis that did not answer. The try that exhausts `VOICE_AGENT_POSTCALL_MAX_TRIES` leaves the call
`dead`, with its error, for staff to retry. A run past that budget (the last try never finished:
its worker was killed) records the call dead instead of doing the work.

A job ends only once the store holds its outcome (`done` or `dead`): arq's own try limit is out
of reach, every run is bounded by our timeouts well inside arq's, and while the store cannot take
the outcome (`postcall.outcome_unsaved`) the job is retried with capped backoff instead of
ending, however long the store stays away.

A killed worker's job is run again by arq once its in-progress lease expires (arq's timeout plus
ten seconds); the store's claim on the call lapses after `attempt_timeout_s`, which is shorter,
so the rerun can take the call over. SIGTERM stops taking jobs, lets running ones finish for
`shutdown_grace_s`, then cancels the rest, which arq runs again on the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from arq.worker import Retry, Worker, func
from redis.exceptions import RedisError

from voice_agent import tracing
from voice_agent.backoff import ReconnectPolicy
from voice_agent.call_record import CallRecord
from voice_agent.exceptions import ConfigError, ProviderError, ToolLoadError
from voice_agent.logging import bound_contextvars, get_logger
from voice_agent.postcall.handover import DELIVERY_ERRORS, SpoolFlusher, spool_for
from voice_agent.postcall.integrations import (
    TICKET_TOOL,
    EmailDraftIntegration,
    Integration,
    IntegrationJob,
    TicketIntegration,
    WebhookIntegration,
    idempotency_key,
    run_integration,
)
from voice_agent.postcall.models import CallStatus, StoredReport
from voice_agent.postcall.queue import (
    JOB_FUNCTION,
    QUEUE_NAME,
    RESULT_TTL_S,
    PostCallQueue,
    StoredMark,
    connect,
    health_key,
    valid_call_id,
)
from voice_agent.postcall.recovery import forget_journal
from voice_agent.postcall.reporter import ReportOutcome, ReportWriter, fallback_outcome
from voice_agent.postcall.spool import RecordSpool
from voice_agent.postcall.store import ReportStore
from voice_agent.providers.openai_connection import OpenAIConnection
from voice_agent.settings import Settings
from voice_agent.tooling.registry import ToolRegistry

log = get_logger("postcall.worker")

CTX_KEY = "postcall"
ARQ_MAX_TRIES = 1_000_000


@dataclass(frozen=True, kw_only=True)
class PostCallOptions:
    """How the post-call worker runs; the defaults suit production, tests shrink the times."""

    max_tries: int = 5
    concurrency: int = 4
    review_confidence: float = 0.6
    attempt_timeout_s: float = 120.0  # one try: model, store and integrations
    store_timeout_s: float = 10.0  # one store statement (waiting for a lock included)
    model_timeout_s: float = 60.0  # one model request
    integration_timeout_s: float = 30.0  # one tool run
    backoff: ReconnectPolicy = field(
        default_factory=lambda: ReconnectPolicy(initial_delay_s=2.0, max_delay_s=300.0)
    )
    poll_delay_s: float = 0.1  # how soon a free slot takes the next job (a Redis poll each time)
    redis_backoff: ReconnectPolicy = field(
        default_factory=lambda: ReconnectPolicy(initial_delay_s=0.5, max_delay_s=10.0)
    )  # between pings while Redis is away
    shutdown_grace_s: int = 30
    health_interval_s: float = 5.0

    @property
    def job_timeout_s(self) -> float:
        """The bound on one run of the job: the try, the store steps around it, and one
        failing store statement."""
        return self.attempt_timeout_s + self.store_timeout_s + 5.0

    @property
    def arq_timeout_s(self) -> float:
        """arq's own limit, past ours and the give-up after it: arq never cuts a run short."""
        return self.job_timeout_s + self.store_timeout_s + 5.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PostCallOptions:
        """The options the settings give, with `overrides` (tests, benchmarks)."""
        values: dict[str, Any] = {
            "max_tries": settings.postcall_max_tries,
            "concurrency": settings.postcall_concurrency,
            "attempt_timeout_s": settings.postcall_attempt_timeout_s,
            "store_timeout_s": settings.database_timeout_s,
            "backoff": ReconnectPolicy(
                initial_delay_s=min(2.0, settings.postcall_retry_max_s),
                max_delay_s=settings.postcall_retry_max_s,
            ),
            "redis_backoff": ReconnectPolicy(
                initial_delay_s=0.5, max_delay_s=min(10.0, settings.redis_retry_max_s)
            ),
            "review_confidence": settings.postcall_review_confidence,
        }
        values.update(overrides)
        return cls(**values)


@dataclass(kw_only=True)
class PostCallContext:
    """What every job needs, built once when the worker starts."""

    store: ReportStore
    queue: PostCallQueue
    spool: RecordSpool
    writer: ReportWriter | None  # None: no model configured; every report is the fallback
    integrations: tuple[Integration, ...]
    options: PostCallOptions
    journal_dir: Path  # this host's call journals (the agent's, when they share the data dir)
    held: set[str] = field(default_factory=set)
    """Calls whose claim a run in this process took and could not hand back (the store
    failed): the next run here takes them over without waiting for the claim to lapse."""
    unsaved: dict[str, str] = field(default_factory=dict)
    """Calls given up on whose dead status the store did not take yet, with their error."""


# -- the job ---------------------------------------------------------------------------------


async def process_call(ctx: dict[str, Any], call_id: str) -> str:
    """arq job: report and side effects for one call; its outcome as a word.

    The job ends (returns) only once the store holds the call's outcome; until then it is
    retried, the store's outages included, with capped backoff.
    """
    deps: PostCallContext = ctx[CTX_KEY]
    job_try = int(ctx.get("job_try", 1))
    job_id = str(ctx.get("job_id", ""))
    with bound_contextvars(call_id=call_id, job_id=job_id, job_try=job_try):
        if not isinstance(call_id, str) or not valid_call_id(call_id):
            log.error("postcall.invalid_job", call_id=repr(call_id)[:140])
            return "invalid"
        try:
            async with asyncio.timeout(deps.options.job_timeout_s):
                return await _process(deps, call_id, job_id=job_id, job_try=job_try)
        except Retry:
            raise
        except asyncio.CancelledError:
            await _release_claim(deps, call_id)
            raise
        except Exception as e:  # the store or Redis failed before the try could be judged
            log.exception("postcall.job_error")
            error = f"{type(e).__name__}: {e}"[:2000]
            if job_try < deps.options.max_tries:
                raise Retry(defer=deps.options.backoff.delay_s(job_try)) from e
            return await _give_up(deps, call_id, error, job_try)


async def _release_claim(deps: PostCallContext, call_id: str) -> None:
    """Worker stopping mid-job: hand the call back so the rerun can claim it at once."""
    log.warning("postcall.interrupted")
    with contextlib.suppress(Exception):  # best effort; the claim lapses on its own anyway
        async with asyncio.timeout(2.0):
            await deps.store.set_status(
                call_id, CallStatus.QUEUED, error="the worker stopped mid-job"
            )
        deps.held.discard(call_id)


async def _load_record(deps: PostCallContext, call_id: str) -> tuple[CallRecord, str] | None:
    queued = await deps.queue.get_record(call_id)
    if queued is not None:
        return queued.record, queued.source
    spooled = deps.spool.read(call_id)
    if spooled is not None:
        return spooled, "spool"
    known = await deps.store.get_call(call_id)
    if known is not None:
        return known.record, known.source
    return None


async def _process(deps: PostCallContext, call_id: str, *, job_id: str, job_try: int) -> str:
    store, options = deps.store, deps.options
    loaded = await _load_record(deps, call_id)
    if loaded is None:
        log.error("postcall.record_missing")
        return "missing"
    record, source = loaded
    await store.add_call(record, source=source)
    await _note_stored(deps, call_id)
    if job_try > options.max_tries:
        # Reached when the last try never finished (its worker was killed or hung), or when
        # the store could not take the outcome of the last try.
        error = deps.unsaved.get(call_id) or (
            f"try {options.max_tries} of {options.max_tries} never finished (worker killed)"
        )
        return await _give_up(deps, call_id, error, job_try)
    # A claim this process holds from a run the store failed under is ours to take over.
    lease_s = 0.0 if call_id in deps.held else options.attempt_timeout_s
    detail = await store.claim(call_id, lease_s=lease_s)
    if detail is None:
        current = await store.get_call(call_id)
        if current is None or current.status is CallStatus.DONE:
            deps.held.discard(call_id)
            log.info("postcall.already_done")
            return "already_done"
        # Claimed by a try whose worker died; its claim lapses after attempt_timeout_s.
        held_for = time.time() - current.updated_at.timestamp()
        wait = max(0.5, options.attempt_timeout_s - held_for + 0.5)
        log.info("postcall.claim_held", status=current.status.value, retry_in_s=round(wait, 2))
        raise Retry(defer=wait)
    deps.held.add(call_id)
    await store.add_job_event(
        call_id, "started", job_id=job_id, job_try=job_try, attempt=detail.attempts
    )
    log.info("postcall.started", attempt=detail.attempts)
    try:
        # One span per try, continuing the call's trace from the worker's call span.
        with tracing.span(
            "postcall.job",
            parent=detail.record.traceparent,
            kind=tracing.SpanKind.CONSUMER,
            job_try=job_try,
            source=source,
        ):
            async with asyncio.timeout(options.attempt_timeout_s):
                # The store's record: the complete one when any hand-over brought it.
                failures = await _attempt(deps, detail.record, detail.report, job_try)
    except TimeoutError:
        failures = [f"the try ran out of time ({options.attempt_timeout_s:g} s)"]
    except ProviderError as e:
        failures = [f"the model failed: {e}"]
    except Exception as e:  # an unexpected fault is still this try failing, and retried
        log.exception("postcall.try_failed")
        failures = [f"{type(e).__name__}: {e}"]
    if not failures:
        await store.set_status(call_id, CallStatus.DONE, event="done", job_try=job_try)
        deps.held.discard(call_id)
        log.info("postcall.done")
        return "done"
    error = "; ".join(failures)[:2000]
    if job_try >= options.max_tries:
        return await _give_up(deps, call_id, error, job_try)
    delay = options.backoff.delay_s(job_try)
    await store.set_status(
        call_id,
        CallStatus.QUEUED,
        error=error,
        event="retry_scheduled",
        job_try=job_try,
        defer_s=round(delay, 3),
    )
    deps.held.discard(call_id)
    log.warning("postcall.retry_scheduled", defer_s=round(delay, 3), error=error)
    raise Retry(defer=delay)


async def _note_stored(deps: PostCallContext, call_id: str) -> None:
    """The store holds the call: say so in Redis (the agent's host then removes its journal),
    and remove this host's journal when the store has all of it."""
    state = await deps.store.record_state(call_id)
    if state is None:
        return
    mark = StoredMark(complete=state[0], turns=state[1])
    try:
        await deps.queue.mark_stored(call_id, complete=mark.complete, turns=mark.turns)
    except DELIVERY_ERRORS as e:  # the journal waits for a later sweep; the job goes on
        log.warning("postcall.mark_failed", error=f"{type(e).__name__}: {e}"[:200])
    await asyncio.to_thread(forget_journal, deps.journal_dir, call_id, mark)


async def _give_up(deps: PostCallContext, call_id: str, error: str, job_try: int) -> str:
    """Record the call dead with its error; while the store cannot take that, the job is
    retried with capped backoff instead of ending (arq would forget it)."""
    try:
        async with asyncio.timeout(deps.options.store_timeout_s + 2.0):
            await deps.store.set_status(
                call_id, CallStatus.DEAD, error=error, event="dead", job_try=job_try
            )
    except Exception as e:  # any failure to write it: the outcome is not stored yet
        deps.unsaved[call_id] = error
        delay = deps.options.backoff.delay_s(job_try)
        log.error(
            "postcall.outcome_unsaved",
            outcome="dead",
            error=error[:300],
            store_error=f"{type(e).__name__}: {e}"[:300],
            retry_in_s=round(delay, 2),
        )
        raise Retry(defer=delay) from e
    deps.unsaved.pop(call_id, None)
    deps.held.discard(call_id)
    log.error("postcall.dead", error=error)
    return "dead"


async def _attempt(
    deps: PostCallContext, record: CallRecord, saved: StoredReport | None, job_try: int
) -> list[str]:
    """One try: the report (unless an earlier try saved it), then each integration."""
    store, call_id = deps.store, record.call_id
    if saved is None:
        with tracing.span("postcall.report"):
            outcome = await _write_report(deps, record, job_try)
        saved = outcome.stored
        await store.save_report(call_id, saved)
        await store.add_job_event(
            call_id,
            "report_saved",
            needs_review=saved.needs_review,
            review_reasons=saved.review_reasons,
            model=saved.model,
            model_attempts=len(outcome.attempts),
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )
        log.info(
            "postcall.report_saved",
            needs_review=saved.needs_review,
            review_reasons=saved.review_reasons,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )
    else:
        await store.add_job_event(call_id, "report_reused")
    failures = []
    for integration in deps.integrations:
        job = IntegrationJob(
            call_id=call_id,
            user_id=record.user_id,
            stored=saved,
            idempotency_key=idempotency_key(call_id, integration.name),
        )
        with tracing.span(f"integration {integration.name}", integration=integration.name) as span:
            ok = await run_integration(store, integration, job)
            span.set_attribute("ok", ok)
        if not ok:
            failures.append(f"{integration.name} failed")
    return failures


async def _write_report(deps: PostCallContext, record: CallRecord, job_try: int) -> ReportOutcome:
    store, call_id = deps.store, record.call_id
    if deps.writer is None:
        return fallback_outcome(record, "no_model")

    async def on_attempt(attempt: Any) -> None:
        await store.add_job_event(call_id, "model_attempt", **dataclasses.asdict(attempt))

    try:
        return await deps.writer.write(record, on_attempt=on_attempt)
    except ProviderError as e:
        await store.add_job_event(
            call_id, "model_failed", error=str(e)[:500], retryable=e.retryable
        )
        if e.retryable and job_try < deps.options.max_tries:
            raise  # a passing outage: the job is retried later
        log.warning("postcall.model_unavailable", error=str(e)[:300])
        return fallback_outcome(record, "model_unavailable")


# -- the process -----------------------------------------------------------------------------


def build_writer(settings: Settings, options: PostCallOptions) -> ReportWriter | None:
    """The report writer on the configured OpenAI-compatible server, or None without one."""
    try:
        connection = OpenAIConnection.from_settings(settings)
    except ConfigError as e:
        log.warning("postcall.no_model", reason=str(e), effect="every report is the fallback")
        return None
    connection = dataclasses.replace(connection, timeout_s=options.model_timeout_s)
    return ReportWriter(
        client=connection.client(),
        model=settings.llm_model,
        review_confidence=options.review_confidence,
    )


def build_integrations(
    settings: Settings, options: PostCallOptions, http: aiohttp.ClientSession
) -> tuple[Integration, ...]:
    """The side effects the settings ask for: email draft always, ticket and webhook when set."""
    found: list[Integration] = [EmailDraftIntegration()]
    if settings.tools_path.is_dir():
        try:
            spec = ToolRegistry.load(settings.tools_path).get(TICKET_TOOL)
        except ToolLoadError as e:
            raise ConfigError(f"cannot load the tools for the ticket integration: {e}") from e
        if spec is not None:
            found.append(
                TicketIntegration(
                    spec=spec, data_dir=settings.data_dir, timeout_s=options.integration_timeout_s
                )
            )
        else:
            log.warning("postcall.no_ticket_tool", tools_path=str(settings.tools_path))
    else:
        log.warning("postcall.no_tools_dir", tools_path=str(settings.tools_path))
    if settings.postcall_webhook_url:
        if settings.postcall_webhook_secret is None:
            raise ConfigError(
                "VOICE_AGENT_POSTCALL_WEBHOOK_URL needs VOICE_AGENT_POSTCALL_WEBHOOK_SECRET "
                "(the webhook is always signed)"
            )
        found.append(
            WebhookIntegration(
                url=settings.postcall_webhook_url,
                secret=settings.postcall_webhook_secret.get_secret_value(),
                session=http,
            )
        )
    return tuple(found)


async def _wait_for_redis(
    queue: PostCallQueue, stop: asyncio.Event, backoff: ReconnectPolicy
) -> bool:
    """Ping Redis with backoff until it answers (True) or a stop is asked for (False)."""
    failures = 0
    while not stop.is_set():
        try:
            await queue.redis.ping()
            if failures:
                log.info("postcall.redis_back", after_failures=failures)
            return True
        except DELIVERY_ERRORS as e:
            failures += 1
            delay = backoff.delay_s(failures)
            log.warning(
                "postcall.waiting_for_redis",
                error=f"{type(e).__name__}: {e}"[:200],
                failures=failures,
                retry_in_s=round(delay, 2),
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
    return False


async def serve_queue(worker: Worker, deps: PostCallContext, stop: asyncio.Event) -> None:
    """Run `worker` until `stop`, riding out Redis outages.

    arq's poll raises when Redis goes away; the worker then waits for Redis with backoff and
    polls again. Jobs already running carry on meanwhile (they need the store, not Redis); one
    that cannot report its end to Redis is run again after its lease, and finds its call done.
    While Redis is away the worker's health key is not refreshed and lapses, so it reads as not
    ready to whoever watches it (the dev supervisor); it is written again on the first poll.
    """
    while await _wait_for_redis(deps.queue, stop, deps.options.redis_backoff):
        try:
            await worker.async_run()
            return
        except DELIVERY_ERRORS as e:
            if stop.is_set():
                return
            log.warning(
                "postcall.redis_lost",
                error=f"{type(e).__name__}: {e}"[:300],
                running_jobs=await _resync_slots(worker),
            )


async def _resync_slots(worker: Worker) -> int:
    """Recount arq's job slots from the jobs really running; how many run.

    arq takes a slot before it asks Redis whether a job may start, and a Redis error there
    leaves the slot taken; enough outages would leave a worker that never takes a job again.
    Jobs that ended meanwhile are collected here (their end could not reach Redis: arq runs
    them again after their lease). Uses arq 0.28's `tasks`, `job_counter` and `sem` (pinned).
    """
    for job_id, task in list(worker.tasks.items()):
        if task.done():
            del worker.tasks[job_id]
            if not task.cancelled() and task.exception() is not None:
                log.warning(
                    "postcall.job_end_unrecorded", job_id=job_id, error=str(task.exception())[:200]
                )
    running = len(worker.tasks)
    worker.job_counter = running
    worker.sem = asyncio.BoundedSemaphore(worker.max_jobs + 1)
    for _ in range(running):  # never blocks: the running jobs release theirs when they end
        await worker.sem.acquire()
    return running


@contextlib.asynccontextmanager
async def postcall_context(
    settings: Settings, options: PostCallOptions
) -> AsyncIterator[PostCallContext]:
    """Open the store, Redis, the model client and integrations; close them all after."""
    if not settings.redis_url:
        raise ConfigError("voice-agent postcall needs REDIS_URL (its queue)")
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        integrations = build_integrations(settings, options, http)
        store = await ReportStore.open(
            ReportStore.url_from_settings(settings), timeout_s=settings.database_timeout_s
        )
        stack.push_async_callback(store.close)
        queue = PostCallQueue(redis=connect(settings.redis_url))
        stack.push_async_callback(queue.aclose)
        writer = build_writer(settings, options)
        if writer is not None:
            stack.push_async_callback(writer.aclose)
        yield PostCallContext(
            store=store,
            queue=queue,
            spool=spool_for(settings),
            writer=writer,
            integrations=integrations,
            options=options,
            journal_dir=settings.data_dir / "calls",
        )


def build_worker(deps: PostCallContext, *, burst: bool = False) -> Worker:
    """The arq worker for `process_call` on the context's Redis connection."""
    options = deps.options
    job = func(
        process_call,
        name=JOB_FUNCTION,
        # arq must never end the job on its own: the try budget is counted by `process_call`,
        # which ends the job only once the store holds its outcome.
        max_tries=ARQ_MAX_TRIES,
        timeout=options.arq_timeout_s,  # our own bounds end a run first
        keep_result=RESULT_TTL_S,  # a finished call's job id stays taken: no second run
    )
    return Worker(
        functions=[job],
        queue_name=QUEUE_NAME,
        redis_pool=deps.queue.redis,
        burst=burst,
        handle_signals=False,
        job_completion_wait=options.shutdown_grace_s,
        max_jobs=options.concurrency,
        poll_delay=options.poll_delay_s,
        keep_result=RESULT_TTL_S,
        max_tries=ARQ_MAX_TRIES,
        health_check_interval=options.health_interval_s,
        health_check_key=health_key(),
        ctx={CTX_KEY: deps},
        job_serializer=deps.queue.redis.job_serializer,
        job_deserializer=deps.queue.redis.job_deserializer,
        log_results=False,
    )


async def run_postcall(settings: Settings, *, options: PostCallOptions | None = None) -> None:
    """Run the post-call worker until SIGTERM/SIGINT; running jobs get a grace period."""
    options = options or PostCallOptions.from_settings(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    worker: Worker | None = None

    def on_signal(sig: signal.Signals) -> None:
        stop.set()
        if worker is not None:
            log.info("postcall.signal", signal=sig.name, grace_s=options.shutdown_grace_s)
            worker.handle_sig_wait_for_completion(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with postcall_context(settings, options) as deps:
            flusher = SpoolFlusher(
                spool=deps.spool,
                queue=deps.queue,
                backoff=ReconnectPolicy(
                    initial_delay_s=0.5, max_delay_s=settings.redis_retry_max_s
                ),
            )
            flusher.start()
            worker = build_worker(deps)
            log.info(
                "postcall.started_worker",
                concurrency=options.concurrency,
                max_tries=options.max_tries,
                model=deps.writer.model if deps.writer else None,
                integrations=[i.name for i in deps.integrations],
            )
            try:
                await serve_queue(worker, deps, stop)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not stop.is_set() or (current is not None and current.cancelling()):
                    raise  # cancelled from outside, not by our own shutdown
            finally:
                await flusher.aclose()
                await _close_worker(worker)
            log.info("postcall.stopped")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _close_worker(worker: Worker) -> None:
    """Cancel what is left and remove the health key; the pool is closed by its owner."""
    for task in worker.tasks.values():
        if not task.done():
            task.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    with contextlib.suppress(RedisError, OSError):
        await worker.pool.delete(worker.health_check_key)
