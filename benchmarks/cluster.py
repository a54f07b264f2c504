"""Cluster benchmark: the loopback cluster of the cluster test (`tests/cluster_stack.py`: two
LiveKit nodes on one Redis, two token services, two agent workers, two post-call workers,
PostgreSQL), every part a real process, the scripted models in this process.

1. Lone calls: `--lone-calls` calls one after another, nothing else running.
2. Cluster load: `--calls` calls at once (started `--stagger` s apart), alternating token
   services; where LiveKit placed each room (node) and each job (worker) is counted.
   Voice-to-voice is the agent's own figure per turn (end of the caller's speech, as its VAD
   saw it, to its first audio frame out), over `--turns` questions a call.
3. Post-call throughput: `--jobs` finished calls handed over (spool, Redis, job) while no
   post-call worker runs, then one worker started to drain them; then a second backlog, and
   two workers started together. jobs/s is jobs over first `started` to last `done`
   (PostgreSQL store, concurrency 4 each, the scripted model answers at once with a valid
   report). The CPU each process spent per job, and how busy the whole machine was, are
   printed with it: they say what limits the second worker.

Figures are printed and written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from benchmarks.postcall import events, pct, record  # noqa: E402
from benchmarks.report import write_section  # noqa: E402
from tests.cluster_stack import PAIR, Cluster, running_cluster  # noqa: E402
from tests.integration.devstack_support import descendants  # noqa: E402
from voice_agent.caller.audio import synthesize  # noqa: E402
from voice_agent.logging import configure_logging  # noqa: E402
from voice_agent.postcall.handover import PostCallSink  # noqa: E402
from voice_agent.postcall.schema import job_events  # noqa: E402
from voice_agent.postcall.store import ReportStore  # noqa: E402
from voice_agent.settings import Settings  # noqa: E402

QUESTION = "What are your opening hours?"


def voice_to_voice(results: list[dict[str, Any]]) -> list[float]:
    """The agent's voice-to-voice (ms) of every answered, uninterrupted turn."""
    return [
        t["metrics"]["voice_to_voice_ms"]
        for r in results
        for t in r["turns"]
        if not t["interrupted"] and t["metrics"].get("voice_to_voice_ms") is not None
    ]


async def calls_at_once(cluster: Cluster, n: int, turns: int, stagger_s: float) -> list[Any]:
    """`n` calls, started `stagger_s` apart, through alternating token services."""
    question = await synthesize(QUESTION)

    async def one(i: int) -> dict[str, Any]:
        await asyncio.sleep(i * stagger_s)
        started = time.monotonic()
        result = await cluster.call(PAIR[i % 2], question, *[question] * (turns - 1))
        return result | {"duration_s": time.monotonic() - started}

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _ticks(pid: int, *, reaped: bool = True) -> int:
    """CPU time (clock ticks, user + system) of `pid`, and with `reaped` of its children that
    have exited and been waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(f) for f in fields[11 : 15 if reaped else 13])


def cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and its live descendants; this process
    (the harness, which started the whole cluster) counts alone."""
    tick = os.sysconf("SC_CLK_TCK")
    return {
        name: (
            _ticks(pid, reaped=False)
            if pid == os.getpid()
            else sum(_ticks(p) for p in {pid, *descendants(pid)})
        )
        / tick
        for name, pid in roots.items()
    }


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in first]
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


async def drain_backlog(
    cluster: Cluster, settings: Settings, workers: list[str], jobs: int, round_: int
) -> Drain:
    """Hand `jobs` calls over with no post-call worker running, then start `workers` together;
    throughput and what it cost."""
    tag = f"w{len(workers)}r{round_}"
    ids = {f"{tag}{i:05d}" for i in range(jobs)}
    async with PostCallSink.from_settings(settings) as sink:
        for call_id in sorted(ids):
            await sink.submit(record(call_id))
    parts = [cluster.postcall[name] for name in workers]
    busy_before = machine_busy()
    t0 = time.monotonic()
    await cluster.start_parts(parts)
    roots = {f"postcall-{n}": p.process.pid or 0 for n, p in zip(workers, parts, strict=True)}
    roots |= cluster.engine_pids | {"harness and models": os.getpid()}
    cpu_before = cpu_seconds(roots) | {k: 0.0 for k in roots if k.startswith("postcall-")}
    store = await ReportStore.open(ReportStore.url_from_settings(settings))
    try:
        await wait_counted(store, tag, jobs, timeout_s=900)
        done = {k: v for k, v in (await events(store, "done")).items() if k in ids}
        started = await events(store, "started")
        wall = time.monotonic() - t0
        cpu_after, busy_after = cpu_seconds(roots), machine_busy()
    finally:
        await store.close()
        await asyncio.gather(*(p.process.stop(grace_s=10) for p in parts))
    used = {k: (cpu_after[k] - cpu_before[k]) / jobs * 1000 for k in roots}
    machine = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
    return Drain(
        jobs_per_s=jobs / (max(done.values()) - min(started[k] for k in ids)),
        cpu_ms_per_job=used,
        machine_busy=machine,
        wall_s=wall,
    )


@dataclass
class Drain:
    """One post-call phase: throughput, CPU milliseconds per job by process, machine use."""

    jobs_per_s: float
    cpu_ms_per_job: dict[str, float]
    machine_busy: float  # fraction of the machine's CPUs busy (every program on it)
    wall_s: float

    def describe_cpu(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.cpu_ms_per_job.items())
        return f"{parts}; the machine {self.machine_busy:.0%} busy"

    def describe(self) -> str:
        return f"{self.jobs_per_s:.1f} jobs/s; CPU ms per job: {self.describe_cpu()}"


async def wait_counted(store: ReportStore, tag: str, jobs: int, timeout_s: float) -> None:
    """Wait until `jobs` calls whose ids start with `tag` are done (one count a poll, so the
    harness takes little CPU from the workers it measures)."""
    query = (
        sa.select(sa.func.count())
        .select_from(job_events)
        .where(job_events.c.event == "done", job_events.c.call_id.startswith(tag))
    )
    deadline = time.monotonic() + timeout_s
    while True:
        async with store.connection() as conn:
            if (await conn.execute(query)).scalar_one() >= jobs:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"the {tag} jobs were not all done after {timeout_s:g} s")
        await asyncio.sleep(0.5)


def median_drain(drains: list[Drain]) -> Drain:
    """The round with the median throughput."""
    return sorted(drains, key=lambda d: d.jobs_per_s)[len(drains) // 2]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lone-calls", type=int, default=3)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--stagger", type=float, default=0.5)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    env = {"VOICE_AGENT_MAX_JOBS": "20", "VOICE_AGENT_LOG_LEVEL": "info"}
    async with running_cluster(root, env=env) as cluster:
        cluster.models.default_transcript = QUESTION
        lone: list[dict[str, Any]] = []
        for _ in range(args.lone_calls):
            lone += await calls_at_once(cluster, 1, args.turns, 0)
            await cluster.wait_for_rooms(0)
        roots = {f"livekit-{n}": node.process.pid or 0 for n, node in cluster.nodes.items()}
        roots |= {f"worker-{n}": w.process.pid or 0 for n, w in cluster.workers.items()}
        cpu_before = cpu_seconds(roots)
        t0 = time.monotonic()
        loaded = await calls_at_once(cluster, args.calls, args.turns, args.stagger)
        load_s = time.monotonic() - t0
        cpu_after = cpu_seconds(roots)
        call_s = sum(r["duration_s"] for r in loaded)  # token to hang-up, summed
        load_cpu = {k: (cpu_after[k] - cpu_before[k]) / call_s * 1000 for k in roots}
        placed = [
            (cluster.node_that_held(r["room"] or ""), cluster.worker_of_call(r["call_id"] or ""))
            for r in loaded
        ]
        failed = sum(1 for r in loaded + lone if not r["ok"])
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            redis_url=cluster.redis_url,
            database_url=cluster.database_url,
            data_dir=root / "bench-handover",
        )
        configure_logging(settings.model_copy(update={"log_level": "warning"}))
        await asyncio.gather(*(p.process.stop(grace_s=10) for p in cluster.postcall.values()))
        ones: list[Drain] = []
        twos: list[Drain] = []
        for round_ in range(args.rounds):  # alternated, so a busy spell hits both alike
            ones.append(await drain_backlog(cluster, settings, ["1"], args.jobs, round_))
            twos.append(await drain_backlog(cluster, settings, ["1", "2"], args.jobs, round_))
    one, two = median_drain(ones), median_drain(twos)
    one_worker, two_workers = one.jobs_per_s, two.jobs_per_s
    lone_v2v, load_v2v = voice_to_voice(lone), voice_to_voice(loaded)
    nodes = collections.Counter(node for node, _ in placed)
    workers = collections.Counter(worker for _, worker in placed)
    speedup = two_workers / one_worker
    lines = [
        f"calls placed per node: {dict(sorted(nodes.items()))}; per worker: "
        f"{dict(sorted(workers.items()))} ({args.calls} calls at once, {failed} failed)",
        f"voice-to-voice, lone call: p50 {pct(lone_v2v, 50):.0f} ms, p95 {pct(lone_v2v, 95):.0f}"
        f" ms ({len(lone_v2v)} turns)",
        f"voice-to-voice, {args.calls} calls across the cluster: p50 {pct(load_v2v, 50):.0f} ms,"
        f" p95 {pct(load_v2v, 95):.0f} ms ({len(load_v2v)} turns, {load_s:.0f} s)",
        "  CPU ms per call-second: " + ", ".join(f"{k} {v:.0f}" for k, v in load_cpu.items()),
        f"post-call: one worker {one_worker:.1f} jobs/s, two workers {two_workers:.1f} jobs/s"
        f" ({speedup:.2f}x; medians of {args.rounds} rounds of {args.jobs} jobs: one "
        + ", ".join(f"{d.jobs_per_s:.1f}" for d in ones)
        + "; two "
        + ", ".join(f"{d.jobs_per_s:.1f}" for d in twos)
        + ")",
        f"  one worker: {one.describe()}",
        f"  two workers: {two.describe()}",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section(
            "Cluster",
            "`benchmarks/cluster.py`: the cluster test's deployment on loopback (two LiveKit "
            "1.13.5 nodes in multi-node mode on one Redis, rooms placed by room count; two "
            "token services; two agent workers of `VOICE_AGENT_MAX_JOBS=20`; two post-call "
            "workers; PostgreSQL), every part its own process on the machine's two cores, the "
            "scripted models in the benchmark process. Voice-to-voice is the agent's figure "
            f"per turn, {args.turns} questions a call: {args.lone_calls} lone calls one after "
            f"another, then {args.calls} calls at once, started {args.stagger:g} s apart "
            "through alternating token services. Post-call: a backlog of "
            f"{args.jobs} finished calls drained by one worker, then another by two started "
            "together (first `started` to last `done`, concurrency 4 each).",
            "| figure | value |\n|---|---|\n"
            f"| calls per node ({args.calls} at once) | "
            + ", ".join(f"{k}: {v}" for k, v in sorted(nodes.items()))
            + " |\n"
            "| calls per worker | "
            + ", ".join(f"{k}: {v}" for k, v in sorted(workers.items()))
            + " |\n"
            f"| voice-to-voice p50 / p95, lone call | {pct(lone_v2v, 50):.0f} / "
            f"{pct(lone_v2v, 95):.0f} ms ({len(lone_v2v)} turns) |\n"
            f"| voice-to-voice p50 / p95, {args.calls} calls across the cluster | "
            f"{pct(load_v2v, 50):.0f} / {pct(load_v2v, 95):.0f} ms ({len(load_v2v)} turns) |\n"
            "| CPU ms per call-second | "
            + ", ".join(f"{k} {v:.0f}" for k, v in load_cpu.items())
            + " |\n"
            f"| post-call jobs/s, one worker (median of {args.rounds}) | {one_worker:.1f} "
            f"(rounds: {', '.join(f'{d.jobs_per_s:.1f}' for d in ones)}) |\n"
            f"| post-call jobs/s, two workers (median of {args.rounds}) | {two_workers:.1f}, "
            f"{speedup:.2f}x (rounds: {', '.join(f'{d.jobs_per_s:.1f}' for d in twos)}) |\n"
            f"| post-call CPU ms per job, one worker | {one.describe_cpu()} |\n"
            f"| post-call CPU ms per job, two workers | {two.describe_cpu()} |",
        )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
