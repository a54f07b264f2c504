"""Voice pipeline benchmark: pipeline overhead, barge-in latency and call density on one core.

A real LiveKit server, the token service and the scripted OpenAI-compatible server (its own
process) run on CPU 1, LiveKit and the models ahead of the simulated callers, which speak
espeak-ng utterances in real time from this process (CPU 1); `voice-agent worker` runs pinned to
CPU 0. The calls of a level join 100 ms apart; once all are greeted, callers start talking spread
over 4 s, so every measured turn runs with all the level's calls connected. The scripted models
answer at once, so what remains of voice-to-voice beyond end-of-turn silence, STT, LLM first
token and TTS first byte is our own pipeline's overhead. Figures are printed and written to
docs/benchmarks.md.

With `--processes N` the worker is `voice-agent worker --processes N` (one process pinned to each
of CPUs 0..N-1; LiveKit spreads the calls by the load each reports) and the harness still runs on
CPU 1, so on this 2-core machine the second worker process shares its core with the load
generator: the figures are for the whole machine, written to their own section. Each level also
reports the CPU other programs on the machine used meanwhile (shared machines are noisy).

Targets (issue 3): overhead p95 <= 30 ms; barge-in (speech onset to agent audio stopped) p95
<= 150 ms; >= 20 concurrent calls per worker core with voice-to-voice p95 within 20 % of a lone
call; <= 25 MB resident memory per extra call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from benchmarks.report import write_section  # noqa: E402
from voice_agent.agent import ffi_routing  # noqa: E402
from voice_agent.caller.audio import Utterance, synthesize  # noqa: E402
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller  # noqa: E402
from voice_agent.devstack.livekit_server import (  # noqa: E402
    LiveKitEndpoint,
    find_livekit_server,
    livekit_process,
    new_key_pair,
)
from voice_agent.devstack.local_llm import MODEL_ALIAS, local_llm_process  # noqa: E402
from voice_agent.devstack.processes import (  # noqa: E402
    ManagedProcess,
    ReadyCheck,
    free_port,
    free_udp_range,
)
from voice_agent.server.app import create_app  # noqa: E402
from voice_agent.settings import Settings  # noqa: E402

QUESTION = "What are your opening hours?"
# LiveKit and the scripted models stand for services on other machines: on CPU 1 they run ahead
# of the simulated callers (the load generator), so their answers do not queue behind it.
SERVICE_NICENESS = -5
# Callers start talking spread over this long once all calls of a level are connected.
TURN_SPREAD_S = 4.0
LINE_UP_TIMEOUT_S = 90.0
# The stages the agent times per turn; what voice-to-voice holds beyond them is our overhead.
STAGES = ("eou_delay_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def worker_pids(pid: int, processes: int) -> list[int]:
    """The agent worker processes: `pid` itself, or the pool's children."""
    if processes == 1:
        return [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def machine_busy_seconds() -> float:
    """CPU time all processes on this machine have used so far (from /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and every process below it (this benchmark and what it started)."""
    total = 0.0
    with contextlib.suppress(OSError):
        total = cpu_seconds(pid)
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_cpu_seconds(int(child))
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_calls(
    url: str, utterance: Utterance, n: int, *, turns: int, interrupt_after_ms: int | None
) -> list[dict[str, Any]]:
    """`n` concurrent simulated calls, started 100 ms apart. Each waits after its greeting until
    all have been greeted, then starts talking at its own offset within a spread of
    `TURN_SPREAD_S`: every measured turn runs with all `n` calls connected, and the callers do
    not all speak at the same instant (nor do real ones)."""
    barrier = asyncio.Barrier(n)

    async def one(i: int) -> dict[str, Any]:
        async def lined_up() -> None:
            try:
                async with asyncio.timeout(LINE_UP_TIMEOUT_S):
                    await barrier.wait()
            except (TimeoutError, asyncio.BrokenBarrierError):
                await barrier.abort()  # a call failed to join: the others go ahead
            await asyncio.sleep(i * TURN_SPREAD_S / n)

        await asyncio.sleep(i * 0.1)
        opts = CallerOptions(
            url=url,
            utterances=(utterance,) * turns,
            interrupt_after_ms=interrupt_after_ms,
            turn_timeout_s=60,
            agent_join_timeout_s=60,
            listen_audio=False,
            before_first_turn=lined_up,
        )
        try:
            return await SimulatedCaller(options=opts).run()
        except Exception as e:  # noqa: BLE001 - the harness failed (a publish timed out): count it
            return {"ok": False, "error": f"caller: {type(e).__name__}: {e}", "turns": []}

    return await asyncio.gather(*(one(i) for i in range(n)))


def _stage_p95(results: list[dict[str, Any]]) -> str:
    """p95 of each stage over the answered turns: where a voice-to-voice tail comes from."""
    metrics = [t["metrics"] for r in results for t in r["turns"] if not t["interrupted"]]
    return " ".join(
        f"{k.removesuffix('_ms')} {pct([m[k] for m in metrics if m.get(k) is not None], 95):.0f}"
        for k in STAGES
    )


def turn_figures(results: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Voice-to-voice and pipeline overhead (ms) of every answered, uninterrupted turn."""
    v2v, overhead = [], []
    for result in results:
        for turn in result["turns"]:
            m = turn["metrics"]
            stages = [m.get(k) for k in STAGES]
            if turn["interrupted"] or m.get("voice_to_voice_ms") is None or None in stages:
                continue
            v2v.append(m["voice_to_voice_ms"])
            overhead.append(m["voice_to_voice_ms"] - sum(stages))  # type: ignore[arg-type]
    return v2v, overhead


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 5, 10, 20, 25])
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--barge-in-calls", type=int, default=5)
    parser.add_argument("--worker-log-level", default="warning")
    parser.add_argument(
        "--processes", type=int, default=1,
        help="agent worker processes (voice-agent worker --processes N, pinned to CPUs 0..N-1)",
    )  # fmt: skip
    parser.add_argument(
        "--local", action="store_true",
        help="all-local models (Whisper, Piper, SmolLM2 demo LLM) instead of the scripted server",
    )  # fmt: skip
    args = parser.parse_args()
    if args.local and args.levels == parser.get_default("levels"):
        args.levels = [1]
    if args.processes > 1 and args.levels == parser.get_default("levels"):
        args.levels = [1, 10, 20, 30, 40]
    os.sched_setaffinity(0, {1})
    ffi_routing.install()  # the simulated callers share this process: see ffi_routing
    tmp = Path(tempfile.mkdtemp(prefix="voice-bench-"))
    key, secret = new_key_pair()
    lk = LiveKitEndpoint(port=free_port(), api_key=key, api_secret=secret)
    livekit = livekit_process(
        binary=find_livekit_server(), endpoint=lk, udp_range=free_udp_range(1000),
        log_file=tmp / "livekit.log",
    )  # fmt: skip
    livekit.argv = ["nice", "-n", str(SERVICE_NICENESS), *livekit.argv]
    await livekit.start()
    await livekit.wait_ready(60)
    worker: ManagedProcess | None = None
    llm: ManagedProcess | None = None
    try:
        if args.local:  # the demo LLM server shares CPU 1 with the callers
            llm_port = free_port()
            llm = local_llm_process(port=llm_port, log_file=tmp / "llm.log")
            await llm.start()
            await llm.wait_ready(120)
        async with _scripted_models(tmp) as models_url:
            model_env = (
                {
                    "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
                    "VOICE_AGENT_LLM_MODEL": MODEL_ALIAS,
                    "VOICE_AGENT_STT": "local", "VOICE_AGENT_TTS": "local",
                    "VOICE_AGENT_STT_LANGUAGE": "en",
                }
                if args.local
                else {
                    "OPENAI_BASE_URL": models_url,
                    "VOICE_AGENT_STT": "openai", "VOICE_AGENT_TTS": "openai",
                }
            )  # fmt: skip
            port = free_port()
            settings = Settings(
                _env_file=None,
                livekit_url=lk.ws_url, livekit_api_key=key, livekit_api_secret=secret,
                port=port, token_rate_limit="100000/minute", log_level="warning",
            )  # fmt: skip
            app = web.AppRunner(create_app(settings), access_log=None)
            await app.setup()
            await web.TCPSite(app, "127.0.0.1", port).start()
            metrics_port = _free_ports(args.processes)
            env = dict(os.environ) | {
                "LIVEKIT_URL": lk.ws_url, "LIVEKIT_API_KEY": key, "LIVEKIT_API_SECRET": secret,
                **model_env,
                "VOICE_AGENT_MAX_JOBS": "100",
                "VOICE_AGENT_DATA_DIR": str(tmp / "worker"),
                "VOICE_AGENT_LOG_LEVEL": args.worker_log_level,
                "VOICE_AGENT_WORKER_METRICS_PORT": str(metrics_port),
            }  # fmt: skip
            cores = "0" if args.processes == 1 else f"0-{args.processes - 1}"
            argv = ["taskset", "-c", cores, sys.executable, "-m", "voice_agent", "worker"]
            health = [f"http://127.0.0.1:{metrics_port + i}/healthz" for i in range(args.processes)]
            worker = ManagedProcess(
                name="worker",
                argv=[*argv, "--processes", str(args.processes)],
                env=env,
                ready=_all_ok(health),
                log_file=tmp / "worker.log",
            )
            await worker.start()
            await worker.wait_ready(60)
            assert worker.pid is not None
            pids = worker_pids(worker.pid, args.processes)
            utterance = await synthesize(QUESTION)
            url = f"http://127.0.0.1:{port}"
            rows = []
            base_rss = sum(rss_mb(p) for p in pids)
            lone_p95 = None
            for n in args.levels:
                peak = [base_rss]
                spread = [0] * args.processes
                sampler = asyncio.create_task(_sample(pids, peak, health, spread))
                started = time.monotonic()
                cpu_before = sum(cpu_seconds(p) for p in pids)
                ours_before, busy_before = tree_cpu_seconds(os.getpid()), machine_busy_seconds()
                results = await run_calls(
                    url, utterance, n, turns=args.turns, interrupt_after_ms=None
                )
                sampler.cancel()
                elapsed = time.monotonic() - started
                cpu_used = sum(cpu_seconds(p) for p in pids) - cpu_before
                cpu_share = cpu_used / elapsed
                # CPU that other programs took meanwhile: the machine is shared, so say how much.
                ours = tree_cpu_seconds(os.getpid()) - ours_before
                others = max(machine_busy_seconds() - busy_before - ours, 0.0) / elapsed
                v2v, overhead = turn_figures(results)
                failed = sum(not r["ok"] for r in results)
                print(f"  stage p95 ms: {_stage_p95(results)}", flush=True)
                for reason, count in Counter(r["error"] for r in results if not r["ok"]).items():
                    print(f"  {count} calls failed: {reason}", flush=True)
                p95 = pct(v2v, 95)
                lone_p95 = lone_p95 or p95
                rows.append(
                    {
                        "calls": n, "failed": failed, "turns": len(v2v),
                        "v2v_p50": pct(v2v, 50), "v2v_p95": p95,
                        "over_p50": pct(overhead, 50), "over_p95": pct(overhead, 95),
                        "peak_rss": max(peak), "within": p95 <= 1.2 * lone_p95,
                        "seconds": elapsed, "cpu": cpu_share, "cpu_per_call": cpu_used / n,
                        "spread": spread, "others": others,
                    }
                )  # fmt: skip
                r = rows[-1]
                print(
                    f"calls={n:3d} failed={failed} turns={len(v2v):3d} v2v p50 {r['v2v_p50']:.0f}"
                    f" p95 {p95:.0f} ms  overhead p50 {r['over_p50']:.1f} p95 {r['over_p95']:.1f}"
                    f" ms  worker peak RSS {r['peak_rss']:.0f} MB  worker CPU {cpu_share:.0%}"
                    f" ({r['cpu_per_call']:.2f} CPU-s per call)"
                    + (f"  peak calls per process {spread}" if args.processes > 1 else "")
                    + f"  other programs {others:.2f} cores",
                    flush=True,
                )  # fmt: skip
            if args.local:
                _write_local(results)
                await app.cleanup()
                return 0
            barge = await run_calls(
                url, utterance, args.barge_in_calls, turns=1, interrupt_after_ms=1200
            )
            await asyncio.sleep(2)  # the worker stores records as each call ends
            stops = _barge_in_figures(tmp / "worker" / "records")
            print(
                f"barge-in: {len(stops)} interruptions, onset to audio stopped p50 "
                f"{pct(stops, 50):.0f} ms p95 {pct(stops, 95):.0f} ms; "
                f"{sum(not r['ok'] for r in barge)} calls failed"
            )
            await app.cleanup()
    finally:
        if worker is not None:
            await worker.stop()
        if llm is not None:
            await llm.stop()
        await livekit.stop()
    _write(rows, stops, base_rss, args)
    return 0


@contextlib.asynccontextmanager
async def _scripted_models(tmp: Path) -> AsyncIterator[str]:
    """The scripted OpenAI-compatible server in its own process; its base URL."""
    url_file = tmp / "models.url"

    async def ready() -> bool:
        return url_file.exists() and await _http_ok(f"{url_file.read_text()}/models")()

    models = ManagedProcess(
        name="models",
        argv=[
            "nice", "-n", str(SERVICE_NICENESS), sys.executable,
            str(ROOT / "benchmarks" / "scripted_models.py"), str(url_file), QUESTION,
        ],
        env=dict(os.environ),
        ready=ready,
        log_file=tmp / "models.log",
    )  # fmt: skip
    await models.start()
    try:
        await models.wait_ready(30)
        yield url_file.read_text()
    finally:
        await models.stop()


def _http_ok(url: str) -> ReadyCheck:
    async def ready() -> bool:
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return resp.status == 200

    return ready


def _all_ok(urls: list[str]) -> ReadyCheck:
    async def ready() -> bool:
        return all([await _http_ok(url)() for url in urls])

    return ready


def _free_ports(count: int) -> int:
    """A port p with p .. p + count - 1 free (the pool serves child i's metrics on p + i)."""
    for _ in range(50):
        base, ok = free_port(), True
        for i in range(1, count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + i))
                except OSError:
                    ok = False
        if ok:
            return base
    raise RuntimeError(f"no {count} adjacent free ports")


async def _sample(pids: list[int], peak: list[float], health: list[str], spread: list[int]) -> None:
    """Every 0.5 s: the workers' summed RSS, and each process's most calls at once."""
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(OSError):  # a process that just ended
                peak.append(sum(rss_mb(p) for p in pids))
            if len(health) > 1:
                for i, url in enumerate(health):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(url) as resp:
                            spread[i] = max(spread[i], (await resp.json())["active_jobs"])
            await asyncio.sleep(0.5)


def _barge_in_figures(records: Path) -> list[float]:
    stops = []
    for path in records.glob("*.json"):
        for event in json.loads(path.read_text())["events"]:
            if event["event"] == "barge_in":
                stops.append(event["data"]["onset_to_stop_ms"])
    return stops


def _write_local(results: list[dict[str, Any]]) -> None:
    keys = (*STAGES, "voice_to_voice_ms")
    turns = [t["metrics"] for r in results for t in r["turns"] if not t["interrupted"]]
    medians = {k: statistics.median(m[k] for m in turns if m.get(k) is not None) for k in keys}
    line = ", ".join(f"{k.removesuffix('_ms')} {v:.0f} ms" for k, v in medians.items())
    print(f"all local, {len(turns)} turns, medians: {line}; load average {os.getloadavg()}")
    table = ["| stage | median ms |", "|---|---|"]
    table += [f"| {k.removesuffix('_ms')} | {v:.0f} |" for k, v in medians.items()]
    write_section(
        "Voice pipeline, all local",
        "`benchmarks/voice_pipeline.py --local`: one call on this 2-core machine with Whisper base "
        "(STT, `VOICE_AGENT_STT_LANGUAGE=en`, the shipped 10 s encoder window and one thread), "
        "the SmolLM2-135M demo LLM on llama.cpp (CPU 1, one thread) "
        "and Piper (TTS); worker on CPU 0; "
        "the caller asks the same 1.7 s espeak-ng question each turn. Voice-to-voice is end of "
        "the caller's speech to the agent's first audio frame, measured by the agent.",
        "\n".join(table),
    )


def _write(rows: list[dict[str, Any]], stops: list[float], base_rss: float, args: Any) -> None:
    many = args.processes > 1
    table = [
        "| calls | failed | turns | v2v p50 ms | v2v p95 ms | overhead p50 ms | overhead p95 ms "
        "| worker peak RSS MB | worker CPU (one core = 100 %) | worker CPU-s per call "
        + ("| peak calls per process " if many else "")
        + "| other programs' CPU (cores) | p95 within 20 % of one call |",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if many else "") + "---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['calls']} | {r['failed']} | {r['turns']} | {r['v2v_p50']:.0f} | "
            f"{r['v2v_p95']:.0f} | {r['over_p50']:.1f} | {r['over_p95']:.1f} | "
            f"{r['peak_rss']:.0f} | {r['cpu']:.0%} | {r['cpu_per_call']:.2f} | "
            + (f"{' + '.join(map(str, r['spread']))} | " if many else "")
            + f"{r['others']:.2f} | {'yes' if r['within'] else 'no'} |"
        )
    ok = [r for r in rows if r["within"] and not r["failed"]]
    density = max((r["calls"] for r in ok), default=0)
    one = next((r for r in rows if r["calls"] == 1), rows[0])
    top = max(rows, key=lambda r: r["calls"])
    per_call = (top["peak_rss"] - one["peak_rss"]) / max(top["calls"] - 1, 1)
    where = (
        f"{args.processes} worker processes (one per core of this machine)"
        if many
        else "one worker core"
    )
    summary = (
        f"- Density: {density} concurrent calls on {where} with voice-to-voice p95 within "
        f"20 % of a lone call (target at least 20 per core).\n"
        f"- Memory: workers idle {base_rss:.0f} MB; {per_call:.1f} MB resident per extra call "
        f"(peak at {top['calls']} calls vs one call; target at most 25 MB).\n"
        f"- Pipeline overhead p95: {one['over_p95']:.1f} ms on a lone call, "
        + ", ".join(f"{r['over_p95']:.1f} ms at {r['calls']} calls" for r in rows[1:])
        + " (target at most 30 ms).\n"
        f"- Barge-in, speech onset to agent audio stopped (agent side, {len(stops)} "
        f"interruptions): p50 {pct(stops, 50):.0f} ms, p95 {pct(stops, 95):.0f} ms "
        f"(target at most 150 ms)."
    )
    placement = (
        f"`voice-agent worker --processes {args.processes}` (children pinned to CPUs "
        f"0-{args.processes - 1}, LiveKit spreading calls by reported load); token service, "
        "scripted OpenAI-compatible server (answers at once; a tone for speech; its own process) "
        "and simulated callers on CPU 1, so the second worker process shares its core with the "
        "load generator"
        if many
        else "`voice-agent worker` pinned to CPU 0; token service, scripted OpenAI-compatible "
        "server (answers at once; a tone for speech; its own process) and simulated callers on "
        "CPU 1"
    )
    write_section(
        f"Voice pipeline, {args.processes} worker processes" if many else "Voice pipeline",
        f"`benchmarks/voice_pipeline.py{f' --processes {args.processes}' if many else ''}`: "
        f"real LiveKit server; {placement}; LiveKit and the models at a higher priority than the "
        f"callers (they stand for other machines). Each call is a greeting then {args.turns} "
        "spoken questions (espeak-ng, 1.7 s); the calls of a level join 100 ms apart and, once "
        "all are greeted, start talking spread over 4 s, so every measured turn runs with all "
        "of them connected. Overhead = voice-to-voice - (end-of-turn silence + STT + LLM first "
        "token + TTS first byte), measured by the agent per turn.",
        "\n".join(table) + "\n\n" + summary,
    )


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
