"""Side by side: our agent, LiveKit Agents 1.8 and Pipecat, in one run on this machine.

One real LiveKit server and the scripted OpenAI-compatible models (their own process; fixed
delays, the same for everyone: STT 120 ms, first token 150 ms, TTS first byte 60 ms) serve all
three systems. Each system under test runs pinned to CPU 0 (ours: `voice-agent worker`; LiveKit
Agents: its worker and job processes, its default turn handling, preemptive generation on;
Pipecat: a dispatcher that starts one bot process per room on LiveKit's `room_started` webhook,
its default Smart Turn end of turn). LiveKit, the models (at a higher priority: they stand for
other machines), our token service and the simulated callers run on CPU 1. The same
`SimulatedCaller` speaks the same espeak-ng question to every system, in turn-batches that
alternate A B C A B C so drift on a shared machine hits all alike, and reads each turn from the
agent's audio: voice-to-voice is the end of the caller's voiced speech to the first audible
agent audio, as the caller hears it. Competitor packages install on demand into their own venvs
under `.cache/bench-venvs/` (pinned); none downloads model weights at run time.

Prints per system voice-to-voice p50/p95, worker memory (summed over the system's processes),
and the most concurrent calls that hold p95 within 20 % of a lone call (a density sweep; skip it
with --no-density, or run --quick: a few turns, no sweep), then ours over the faster competitor.
A full run writes its section of docs/benchmarks.md. Target (issue 14): p50 and p95 at most
0.8x the faster competitor; memory and density at least matched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from benchmarks.compare import systems as sut  # noqa: E402
from benchmarks.compare.figures import (  # noqa: E402
    DENSITY_TOLERANCE,
    MIN_LEVEL_TURNS,
    alternating_batches,
    density,
    holds,
    level_turns,
    percentile,
    ratio,
)
from benchmarks.compare.processes import TreeMemory, tree_memory  # noqa: E402
from benchmarks.compare.venvs import LIVEKIT_AGENTS, PIPECAT  # noqa: E402
from benchmarks.report import write_section  # noqa: E402
from voice_agent.agent import ffi_routing  # noqa: E402
from voice_agent.caller.audio import ROOM_RATE, Utterance, resample, synthesize  # noqa: E402
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller  # noqa: E402
from voice_agent.devstack.livekit_server import (  # noqa: E402
    LiveKitEndpoint,
    find_livekit_server,
    livekit_process,
    new_key_pair,
)
from voice_agent.devstack.processes import ManagedProcess, free_port, free_udp_range  # noqa: E402
from voice_agent.providers.local_tts import PiperTTS, packaged_voice  # noqa: E402
from voice_agent.server.app import create_app  # noqa: E402
from voice_agent.settings import Settings  # noqa: E402

QUESTION = "What are your opening hours?"
VOICES = {
    "piper": "Piper's packaged `joe` voice, 1.4 s of speech",
    "espeak": "espeak-ng, 1.4 s of speech; the competitors' acoustic end-of-turn models take "
    "its flat prosody for an unfinished turn and wait out their maximum delay",
}
SERVICE_NICENESS = -5  # LiveKit and the models run ahead of the callers on CPU 1
# A turn is over once the agent's audio has been quiet this long; the caller then speaks again.
TURN_QUIET_S = 1.0
TURN_SPREAD_S = 4.0  # density: callers start talking spread over this long once all are greeted
# Below the agents' own silent-caller timeouts (ours hangs up after 60 s of silence).
LINE_UP_TIMEOUT_S = 45.0
AGENT_JOIN_TIMEOUT_S = 120.0  # a Pipecat bot is a fresh process per room: give it time to start
MEMORY_SAMPLE_S = 0.5
SECTION = "Side by side: ours, LiveKit Agents, Pipecat"


@dataclass
class Figures:
    """What one system measured over the run."""

    v2v: list[float] = field(default_factory=list)
    failed_calls: int = 0
    missed_turns: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    idle: TreeMemory | None = None
    lone_peak: TreeMemory | None = None
    levels: list[dict[str, Any]] = field(default_factory=list)

    @property
    def density(self) -> int:
        return density([(lv["calls"], lv["held"]) for lv in self.levels])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--systems", nargs="+", default=[sut.OURS, sut.LIVEKIT, sut.PIPECAT_NAME],
        choices=[sut.OURS, sut.LIVEKIT, sut.PIPECAT_NAME, sut.LIVEKIT_VAD],
        help="systems to run (livekit-agents-vad: LiveKit Agents with VAD-only end of turn, "
        "a variant outside the target's ratio)")  # fmt: skip
    add("--turns", type=int, default=30, help="measured turns per system (default 30)")
    add("--batch-turns", type=int, default=5, help="turns per call, one call per A/B/C slot")
    add("--levels", type=int, nargs="+", default=[2, 4, 8, 12, 16], help="density sweep levels")
    add(
        "--density-turns",
        type=int,
        default=2,
        help="turns per call at each density level (more at low levels: see MIN_LEVEL_TURNS)",
    )
    add("--no-density", action="store_true", help="skip the density sweep")
    add("--quick", action="store_true", help="4 turns per system, no density sweep, no docs")
    add(
        "--voice",
        choices=["piper", "espeak"],
        default="piper",
        help="the caller's voice: Piper (natural; default) or espeak-ng (robotic)",
    )
    add("--stt-ms", type=float, default=120.0)
    add("--first-token-ms", type=float, default=150.0)
    add("--tts-first-byte-ms", type=float, default=60.0)
    add("--log-level", default="warning", help="our worker's log level")
    args = parser.parse_args()
    if args.quick:
        args.turns, args.batch_turns, args.no_density = min(args.turns, 4), 2, True
    return args


async def main() -> int:
    args = parse_args()
    os.sched_setaffinity(0, {1})  # the callers; the systems under test get CPU 0
    ffi_routing.install()  # the simulated callers share this process: see ffi_routing
    if {sut.LIVEKIT, sut.LIVEKIT_VAD} & set(args.systems):
        LIVEKIT_AGENTS.ensure()
    if sut.PIPECAT_NAME in args.systems:
        PIPECAT.ensure()
    logs = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    print(f"logs in {logs}", flush=True)
    key, secret = new_key_pair()
    lk = LiveKitEndpoint(port=free_port(), api_key=key, api_secret=secret)
    dispatcher_port = free_port()
    livekit = livekit_process(
        binary=find_livekit_server(), endpoint=lk, udp_range=free_udp_range(1000),
        webhook_url=f"http://127.0.0.1:{dispatcher_port}/webhook", log_file=logs / "livekit.log",
    )  # fmt: skip
    livekit.argv = ["nice", "-n", str(SERVICE_NICENESS), *livekit.argv]
    await livekit.start()
    started: list[sut.System] = []
    try:
        await livekit.wait_ready(60)
        async with (
            _scripted_models(logs, args) as models_url,
            _token_service(lk, logs) as token_url,
        ):
            builders = {
                sut.OURS: lambda: sut.ours(lk, models_url, token_url, logs, args.log_level),
                sut.LIVEKIT: lambda: sut.livekit_agents(lk, models_url, logs),
                sut.LIVEKIT_VAD: lambda: sut.livekit_agents(lk, models_url, logs, vad_turns=True),
                sut.PIPECAT_NAME: lambda: sut.pipecat(lk, models_url, dispatcher_port, logs),
            }
            for name in args.systems:
                system = builders[name]()
                await system.process.start()
                started.append(system)
            for system in started:
                await system.process.wait_ready(180)
            figures = await _measure(started, args)
    finally:
        for system in started:
            await system.process.stop(grace_s=15)
        await livekit.stop()
    speculation = _speculation(logs) if sut.OURS in args.systems else None
    _print(started, figures, args)
    if speculation:
        print(speculation)
    if not args.quick:
        _write(started, figures, args, speculation)
    return 0


def _speculation(logs: Path) -> str | None:
    """Ours: speculative replies per answered turn, and what the wasted ones cost (from the
    call records' usage: LLM requests beyond one per answered turn)."""
    turns = made = wasted = requests = 0
    for path in (logs / "ours-data" / "records").glob("*.json"):
        record = json.loads(path.read_text())
        usage = record.get("usage", {})
        turns += sum(1 for t in record.get("transcript", []) if t.get("speaker") == "user")
        made += usage.get("speculations", 0)
        wasted += usage.get("speculations_wasted", 0)
        requests += usage.get("llm_requests", 0)
    if not turns:
        return None
    return (
        f"ours: {made / turns:.2f} speculations per turn, {wasted / turns:.2f} wasted per turn; "
        f"{(requests - turns) / turns:.2f} extra LLM requests per turn ({turns} turns)"
    )


async def _measure(systems: list[sut.System], args: argparse.Namespace) -> dict[str, Figures]:
    utterance = await _question(args.voice)
    figures = {s.name: Figures() for s in systems}
    print("warm-up: one unmeasured call per system", flush=True)
    for system in systems:
        result = await _call(system, utterance, 1)
        if not result["ok"]:
            print(f"  {system.name} warm-up call failed: {result['error']}", flush=True)
    await asyncio.sleep(2)  # let job processes of the warm-up calls wind down
    for system in systems:
        figures[system.name].idle = await asyncio.to_thread(_memory, system)
    by_name = {s.name: s for s in systems}
    batches = alternating_batches([s.name for s in systems], args.turns, args.batch_turns)
    for i, batch in enumerate(batches, 1):
        system, fig = by_name[batch.system], figures[batch.system]
        async with _peak_memory(system) as peak:
            result = await _call(system, utterance, batch.turns)
        fig.lone_peak = _larger(fig.lone_peak, peak[0])
        _tally(fig, [result], batch.turns)
        heard = [t["caller_voice_to_voice_ms"] for t in result["turns"]]
        print(f"  [{i}/{len(batches)}] {batch.system}: {heard}"
              + ("" if result["ok"] else f" FAILED {result['error']}"), flush=True)  # fmt: skip
    if not args.no_density:
        await _density_sweep(systems, figures, utterance, args)
    return figures


async def _density_sweep(
    systems: list[sut.System], figures: dict[str, Figures], utterance: Utterance, args: Any
) -> None:
    active = list(systems)
    for n in args.levels:
        for system in list(active):
            fig = figures[system.name]
            async with _peak_memory(system) as peak:
                turns = level_turns(n, args.density_turns)
                results = await _concurrent_calls(system, utterance, n, turns)
            level = Figures()
            _tally(level, results, turns)
            p95, lone = percentile(level.v2v, 95), percentile(fig.v2v, 95)
            held = holds(p95, lone, level.failed_calls)
            fig.levels.append(
                {
                    "calls": n, "failed": level.failed_calls, "turns": len(level.v2v),
                    "p50": percentile(level.v2v, 50), "p95": p95, "held": held,
                    "memory": peak[0],
                }
            )  # fmt: skip
            reasons = "; ".join(f"{c}x {e}" for e, c in level.errors.items())
            print(f"  density {system.name} calls={n}: p95 {p95:.0f} ms (lone {lone:.0f}), "
                  f"{level.failed_calls} failed{': ' + reasons if reasons else ''}, "
                  f"peak RSS {peak[0].rss_mb:.0f} MB -> {'holds' if held else 'does not hold'}",
                  flush=True)  # fmt: skip
            if not held:
                active.remove(system)  # a sweep stops at a system's first level that fails
            await asyncio.sleep(3)  # calls' processes wind down before the next system's level
        if not active:
            break


async def _question(voice: str) -> Utterance:
    """The caller's question, spoken by Piper's packaged `joe` voice or by espeak-ng."""
    if voice == "espeak":
        return await synthesize(QUESTION)
    tts = PiperTTS(model_path=packaged_voice())
    try:
        pcm = b"".join([chunk.data async for chunk in tts.synthesize(QUESTION)])
    finally:
        await tts.aclose()
    return Utterance(label=QUESTION, pcm=resample(pcm, tts.capabilities.sample_rate, ROOM_RATE))


def _caller_options(system: sut.System, utterance: Utterance, turns: int, **more: Any) -> Any:
    return CallerOptions(
        url=system.token_service_url or "http://127.0.0.1:1",
        grant=system.grant(),
        utterances=(utterance,) * turns,
        turns_from_audio=True,
        turn_quiet_s=TURN_QUIET_S,
        turn_timeout_s=30,
        agent_join_timeout_s=AGENT_JOIN_TIMEOUT_S,
        **more,
    )


async def _call(system: sut.System, utterance: Utterance, turns: int) -> dict[str, Any]:
    return await SimulatedCaller(options=_caller_options(system, utterance, turns)).run()


async def _concurrent_calls(
    system: sut.System, utterance: Utterance, n: int, turns: int
) -> list[dict[str, Any]]:
    """`n` calls joined 100 ms apart; once all are greeted they start talking spread over
    `TURN_SPREAD_S`, so every measured turn runs with all `n` connected."""
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
        opts = _caller_options(system, utterance, turns, before_first_turn=lined_up)
        result = await SimulatedCaller(options=opts).run()
        # A call that ended before lining up (it failed) releases the others now, not after
        # LINE_UP_TIMEOUT_S while the agents time out their silent callers. Once everyone has
        # passed, breaking the barrier changes nothing.
        await barrier.abort()
        return result

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _tally(fig: Figures, results: list[dict[str, Any]], turns_each: int) -> None:
    for result in results:
        heard = [t["caller_voice_to_voice_ms"] for t in result["turns"]]
        fig.v2v += [v for v in heard if v is not None]
        fig.missed_turns += turns_each - sum(v is not None for v in heard)
        if not result["ok"]:
            fig.failed_calls += 1
            fig.errors[str(result["error"])] += 1


def _memory(system: sut.System) -> TreeMemory:
    assert system.process.pid is not None
    return tree_memory(system.process.pid)


def _larger(a: TreeMemory | None, b: TreeMemory) -> TreeMemory:
    return b if a is None or b.rss_mb > a.rss_mb else a


@contextlib.asynccontextmanager
async def _peak_memory(system: sut.System) -> AsyncIterator[list[TreeMemory]]:
    """Sample the system's process-tree memory while the block runs; [peak] afterwards."""
    peak = [await asyncio.to_thread(_memory, system)]

    async def sample() -> None:
        while True:
            await asyncio.sleep(MEMORY_SAMPLE_S)
            peak[0] = _larger(peak[0], await asyncio.to_thread(_memory, system))

    sampler = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


@contextlib.asynccontextmanager
async def _scripted_models(logs: Path, args: argparse.Namespace) -> AsyncIterator[str]:
    """The scripted models in their own process with this run's delays; their base URL."""
    url_file = logs / "models.url"

    async def ready() -> bool:
        if not url_file.exists():
            return False
        async with aiohttp.ClientSession() as http, http.get(f"{url_file.read_text()}/models") as r:
            return r.status == 200

    models = ManagedProcess(
        name="models",
        argv=[
            "nice", "-n", str(SERVICE_NICENESS), sys.executable,
            str(ROOT / "benchmarks" / "scripted_models.py"), str(url_file), QUESTION,
            "--stt-ms", str(args.stt_ms), "--first-token-ms", str(args.first_token_ms),
            "--tts-first-byte-ms", str(args.tts_first_byte_ms),
        ],
        env=dict(os.environ),
        ready=ready,
        log_file=logs / "models.log",
    )  # fmt: skip
    await models.start()
    try:
        await models.wait_ready(30)
        yield url_file.read_text()
    finally:
        await models.stop()


@contextlib.asynccontextmanager
async def _token_service(lk: LiveKitEndpoint, logs: Path) -> AsyncIterator[str]:
    """Our token service in this process (CPU 1), as the browser would reach it; its URL."""
    port = free_port()
    settings = Settings(
        _env_file=None,
        livekit_url=lk.ws_url, livekit_api_key=lk.api_key, livekit_api_secret=lk.api_secret,
        port=port, token_rate_limit="100000/minute", log_level="warning",
        data_dir=logs / "token-service",
    )  # fmt: skip
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _ratios(systems: list[sut.System], figures: dict[str, Figures]) -> list[str]:
    """Ours over the best as-shipped competitor per figure (the target's ratios), then over
    each variant."""
    ours = figures.get(sut.OURS)
    if ours is None:
        return []
    shipped = {s.name: figures[s.name] for s in systems if s.name != sut.OURS and s.as_shipped}
    variants = {s.name: figures[s.name] for s in systems if not s.as_shipped}
    lines = _ratio_lines(ours, shipped, "the faster competitor")
    for name, fig in variants.items():
        lines += _ratio_lines(ours, {name: fig}, "a variant, not the target")
    return lines


def _ratio_lines(ours: Figures, rivals: dict[str, Figures], what: str) -> list[str]:
    lines = []
    for q in (50, 95):
        known = [(n, percentile(f.v2v, q)) for n, f in rivals.items()]
        known = [(n, v) for n, v in known if not math.isnan(v)]
        if known:
            name, theirs = min(known, key=lambda nv: nv[1])
            r = ratio(percentile(ours.v2v, q), theirs)
            lines.append(
                f"voice-to-voice p{q}: ours / {name} ({what}) = {r:.2f}x (target at most 0.8x)"
            )
    for kind in ("rss_mb", "pss_mb"):
        mem = [(n, getattr(f.lone_peak, kind)) for n, f in rivals.items() if f.lone_peak]
        if ours.lone_peak and mem:
            name, theirs = min(mem, key=lambda nv: nv[1])
            r = ratio(getattr(ours.lone_peak, kind), theirs)
            lines.append(
                f"memory in a lone call ({kind.removesuffix('_mb').upper()}): ours / {name} = "
                f"{r:.2f}x (target at most 1x)"
            )
    swept = [(n, f.density) for n, f in rivals.items() if f.levels]
    if ours.levels and swept:
        name, theirs_d = max(swept, key=lambda nd: nd[1])
        lines.append(
            f"density: ours {ours.density} / {name} {theirs_d} = "
            f"{ratio(ours.density, theirs_d):.2f}x (target at least 1x)"
        )
    return lines


def _print(systems: list[sut.System], figures: dict[str, Figures], args: Any) -> None:
    print()
    for system in systems:
        f = figures[system.name]
        idle, lone = f.idle, f.lone_peak
        print(
            f"{system.label:38s} turns {len(f.v2v):3d} (missed {f.missed_turns}, failed calls "
            f"{f.failed_calls})  v2v p50 {percentile(f.v2v, 50):5.0f} ms  p95 "
            f"{percentile(f.v2v, 95):5.0f} ms  RSS idle {idle.rss_mb if idle else math.nan:.0f} MB,"
            f" lone call {lone.rss_mb if lone else math.nan:.0f} MB (PSS "
            f"{lone.pss_mb if lone else math.nan:.0f} MB, {lone.processes if lone else 0} procs)"
            + ("" if args.no_density else f"  density {f.density} calls")
        )
        for error, count in f.errors.items():
            print(f"    {count} calls failed: {error}")
    for line in _ratios(systems, figures):
        print(line)
    print("Figures are noisy on a shared 2-core machine; compare runs, not single numbers.")


def _write(
    systems: list[sut.System], figures: dict[str, Figures], args: Any, speculation: str | None
) -> None:
    table = [
        "| system | turns | v2v p50 ms | v2v p95 ms | RSS idle MB | RSS lone call MB "
        "| PSS lone call MB | processes | density (calls) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system in systems:
        f = figures[system.name]
        idle, lone = f.idle, f.lone_peak
        table.append(
            f"| {system.label} | {len(f.v2v)} | {percentile(f.v2v, 50):.0f} | "
            f"{percentile(f.v2v, 95):.0f} | {idle.rss_mb if idle else math.nan:.0f} | "
            f"{lone.rss_mb if lone else math.nan:.0f} | {lone.pss_mb if lone else math.nan:.0f} | "
            f"{lone.processes if lone else 0} | {'-' if args.no_density else f.density} |"
        )
    sweep = ["", "| system | calls | failed | turns | p50 ms | p95 ms | holds | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for system in systems:
        for lv in figures[system.name].levels:
            sweep.append(
                f"| {system.label} | {lv['calls']} | {lv['failed']} | {lv['turns']} | "
                f"{lv['p50']:.0f} | {lv['p95']:.0f} | {'yes' if lv['held'] else 'no'} | "
                f"{lv['memory'].rss_mb:.0f} |"
            )
    lines = [*_ratios(systems, figures), *([speculation] if speculation else [])]
    ratios = "\n".join(f"- {line}" for line in lines)
    variant = any(not system.as_shipped for system in systems)
    method = (
        "`benchmarks/compare_frameworks.py`: one real LiveKit server; the scripted "
        f"OpenAI-compatible models in their own process with STT {args.stt_ms:.0f} ms, first "
        f"token {args.first_token_ms:.0f} ms and TTS first byte {args.tts_first_byte_ms:.0f} ms "
        "for every system. Each system runs on CPU 0: ours (`voice-agent worker`); LiveKit "
        "Agents 1.8.9 as it ships (its worker and warm-pool job processes; Silero VAD, OpenAI "
        "plugins, default turn handling: `turn-detector-v1-mini` then a 0.5 s minimum "
        "endpointing delay; preemptive generation on); Pipecat 1.14.0 as it ships (one bot "
        "process per room, started by a small dispatcher on LiveKit's `room_started` webhook; "
        "Silero VAD, OpenAI services, default Smart Turn v3 end of turn)"
        + ("; and, as a variant outside the target, LiveKit Agents with the VAD alone ending "
           "turns" if variant else "")
        + ". LiveKit, the models, our token service and the callers run on CPU 1. The same "
        f"simulated caller speaks the same question to each ({VOICES[args.voice]}); "
        "voice-to-voice is the end of its voiced speech to the first audible agent audio, as "
        f"the caller hears it. Calls of {args.batch_turns} turns alternate between the systems "
        "(A B C A B C) after one unmeasured warm-up call each. Memory is summed over each "
        "system's processes (RSS counts shared pages in every process, PSS splits them). "
        f"Density: the most concurrent calls (at least {args.density_turns} turns each and "
        f"{MIN_LEVEL_TURNS} a level, talking spread "
        f"over 4 s once all are greeted) whose p95 stays within {DENSITY_TOLERANCE:g}x of the "
        "lone-call p95 with no failed call; levels " + ", ".join(map(str, args.levels))
        + ". Measured on a shared machine while other work ran: the figures are noisy and "
        "will be re-measured."
    )  # fmt: skip
    body = "\n".join(table)
    if not args.no_density:
        body += "\n\n" + "\n".join(sweep[1:])
    body += "\n\n" + ratios
    write_section(SECTION, method, body)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
