"""Post-call pipeline benchmark: jobs per second for one worker, enqueue-to-report latency.

One `voice-agent postcall` process (default settings: concurrency 4, arq polling every 0.1 s)
pinned to CPU 0, with the example tools (a real ticket in SQLite per call) and the SQLite report
store; Redis, the scripted OpenAI-compatible server (answers at once with a valid report) and
the enqueuer on CPU 1. Two phases:

1. Throughput: `--calls` records are handed over (spool, Redis, job) before the worker starts;
   jobs/s is calls over the time from the worker's first `started` to its last `done`.
2. Latency: the worker running, `--latency-calls` records are handed over at a steady rate of
   half the measured throughput; latency is hand-over start to the `done` job event.

Figures are printed and written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from voice_agent.call_record import CallRecord, TranscriptTurn  # noqa: E402
from voice_agent.devstack.processes import ManagedProcess, free_port  # noqa: E402
from voice_agent.devstack.redis_server import redis_process  # noqa: E402
from voice_agent.logging import configure_logging  # noqa: E402
from voice_agent.postcall.handover import PostCallSink  # noqa: E402
from voice_agent.postcall.queue import worker_alive  # noqa: E402
from voice_agent.postcall.schema import job_events  # noqa: E402
from voice_agent.postcall.store import ReportStore  # noqa: E402
from voice_agent.settings import Settings  # noqa: E402
from voice_agent.testing.openai_script import ChatReply  # noqa: E402
from voice_agent.testing.scripted_openai import ScriptedOpenAI  # noqa: E402

REPORT = {
    "summary": "The caller was charged twice for March; a refund was requested.",
    "action_items": [{"text": "Refund the duplicate charge.", "owner": "support"}],
    "email_draft": {"subject": "Your refund", "body": "Hello,\n\nWe are on it.\n\nRegards"},
    "resolution_status": "follow_up_needed",
    "sentiment": "neutral",
    "ticket": {
        "title": "Duplicate charge",
        "priority": "normal",
        "category": "billing",
        "description": "The March subscription was charged twice.",
    },
    "confidence": 0.9,
}


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def record(call_id: str) -> CallRecord:
    """A short finished call."""
    now = time.time()
    lines = [
        ("agent", "Hello! How can I help you today?"),
        ("user", "I was charged twice for March."),
        ("agent", "I am sorry; I will open a ticket for a refund."),
    ]
    turns = [
        TranscriptTurn(speaker=s, text=t, started_at=now + i, ended_at=now + i + 1)  # type: ignore[arg-type]
        for i, (s, t) in enumerate(lines)
    ]
    return CallRecord(
        call_id=call_id,
        room=f"call-{call_id}",
        user_id="bench",
        started_at=now - 30,
        ended_at=now,
        end_reason="user_hangup",
        transcript=turns,
        complete=True,
    )


def ticket_count(data_dir: Path) -> int:
    """Rows in the example ticket tool's SQLite file."""
    db = sqlite3.connect(data_dir / "tickets.sqlite3")
    try:
        return int(db.execute("SELECT count(*) FROM tickets").fetchone()[0])
    finally:
        db.close()


async def events(store: ReportStore, name: str) -> dict[str, float]:
    """call_id → time of its `name` job event."""
    async with store.connection() as conn:
        rows = await conn.execute(
            sa.select(job_events.c.call_id, job_events.c.at).where(job_events.c.event == name)
        )
        return {r.call_id: r.at for r in rows}


async def wait_done(store: ReportStore, ids: set[str], timeout_s: float) -> dict[str, float]:
    """The `done` times of `ids`, once all are done."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = {k: v for k, v in (await events(store, "done")).items() if k in ids}
        if len(done) == len(ids):
            return done
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(done)} of {len(ids)} calls done after {timeout_s:g} s")
        await asyncio.sleep(0.2)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--latency-calls", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    pinned = len(os.sched_getaffinity(0)) > 1
    if pinned:
        os.sched_setaffinity(0, {1})
    tmp = Path(tempfile.mkdtemp(prefix="postcall-bench-"))
    port = free_port()
    redis = redis_process(port=port, data_dir=None, log_file=tmp / "redis.log")
    await redis.start()
    await redis.wait_ready(30)
    redis_url = f"redis://127.0.0.1:{port}/0"
    total = args.calls + args.latency_calls
    models = ScriptedOpenAI(chat=[ChatReply(text=json.dumps(REPORT))] * total)
    await models.start()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_url,
        data_dir=tmp,
        tools_path=ROOT / "tools",
        openai_base_url=models.base_url,
    )
    configure_logging(settings.model_copy(update={"log_level": "warning"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_AGENT_", "OPENAI_"))}
    env.update(
        {
            "REDIS_URL": redis_url,
            "VOICE_AGENT_DATA_DIR": str(tmp),
            "VOICE_AGENT_TOOLS_PATH": str(ROOT / "tools"),
            "OPENAI_BASE_URL": models.base_url,
            "VOICE_AGENT_LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT),
        }
    )
    argv = [sys.executable, "-m", "voice_agent", "postcall"]
    if pinned:
        argv = ["taskset", "-c", "0", *argv]

    async def ready() -> bool:
        return worker.pid is not None and await worker_alive(redis_url, worker.pid)

    worker = ManagedProcess(
        name="postcall", argv=argv, env=env, cwd=tmp, ready=ready, log_file=tmp / "worker.log"
    )
    store = await ReportStore.open(ReportStore.url_from_settings(settings))
    try:
        # Phase 1: a backlog, then one worker drains it.
        async with PostCallSink.from_settings(settings) as sink:
            t0 = time.perf_counter()
            for i in range(args.calls):
                await sink.submit(record(f"t{i:05d}"))
            handover_ms = (time.perf_counter() - t0) / args.calls * 1000
        await worker.start()
        await worker.wait_ready(60)
        backlog = {f"t{i:05d}" for i in range(args.calls)}
        done = await wait_done(store, backlog, timeout_s=600)
        started = await events(store, "started")
        span = max(done.values()) - min(started[k] for k in backlog)
        jobs_per_s = args.calls / span
        # Phase 2: steady hand-overs at half that rate.
        interval = 2.0 / jobs_per_s
        submitted: dict[str, float] = {}
        async with PostCallSink.from_settings(settings) as sink:
            for i in range(args.latency_calls):
                call_id = f"l{i:05d}"
                submitted[call_id] = time.time()
                await sink.submit(record(call_id))
                await asyncio.sleep(max(0.0, submitted[call_id] + interval - time.time()))
        finished = await wait_done(store, set(submitted), timeout_s=600)
        latency_ms = [(finished[k] - submitted[k]) * 1000 for k in submitted]
        tickets = await asyncio.to_thread(ticket_count, tmp)
    finally:
        await worker.stop()
        await store.close()
        await models.close()
        await redis.stop()
    p50, p95 = pct(latency_ms, 50), pct(latency_ms, 95)
    print(f"hand-over (spool + Redis + enqueue): {handover_ms:.2f} ms per call")
    print(f"throughput: {args.calls} calls in {span:.1f} s = {jobs_per_s:.1f} jobs/s (one worker)")
    print(
        f"enqueue-to-report at {1 / interval:.1f} calls/s: p50 {p50:.0f} ms, p95 {p95:.0f} ms "
        f"({len(latency_ms)} calls)"
    )
    if tickets != total:
        raise SystemExit(f"expected {total} tickets, found {tickets}")
    if not args.no_write:
        write_section(
            "Post-call pipeline",
            "`benchmarks/postcall.py`: one `voice-agent postcall` worker with default settings "
            "(concurrency 4, arq polling every 0.1 s, SQLite report store, a ticket per call "
            "through the example `create_ticket` tool) pinned to CPU 0; Redis, the scripted "
            "model (a valid report at once) and the hand-overs on CPU 1. Throughput: a backlog "
            "drained by the worker (first `started` to last `done`). Latency: hand-over start "
            "to the `done` job event, with calls arriving at half that throughput.",
            "| calls | jobs/s | hand-over ms/call | latency calls | rate calls/s "
            "| latency p50 ms | latency p95 ms |\n|---|---|---|---|---|---|---|\n"
            f"| {args.calls} | {jobs_per_s:.1f} | {handover_ms:.2f} | {len(latency_ms)} | "
            f"{1 / interval:.1f} | {p50:.0f} | {p95:.0f} |",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
