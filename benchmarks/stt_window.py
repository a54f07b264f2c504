"""Local STT: Whisper's encoder window and threads against time and word error.

Accuracy: every utterance of the turn-taking benchmark (complete questions, sentences with a pause
in the middle, numbers and lists read with pauses), the local-models texts, the spoken
conversation tests' caller lines and the voice benchmark's question, each spoken by Piper and by
espeak-ng, transcribed (language given) with each encoder window; word error rate against the text
(lowercase, punctuation dropped). Two long turns (22-64 s) check that speech longer
than the window is still transcribed whole.

Time: the voice benchmark's question (espeak-ng) and a sentence (Piper), median of several
runs per window, in child processes pinned as the all-local call pins its worker (CPU 0) with 1
and 2 threads, and unpinned on both cores with 2 threads. Printed and written to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.local_models import TEXTS  # noqa: E402
from benchmarks.report import write_section  # noqa: E402
from benchmarks.turn_taking import COMPLETE, NUMBERS, PAUSED, Voices, silence  # noqa: E402
from benchmarks.voice_pipeline import QUESTION  # noqa: E402
from voice_agent.providers.base import PcmAudio  # noqa: E402
from voice_agent.providers.local_stt import (  # noqa: E402
    SAMPLE_RATE,
    LocalWhisperSTT,
    WhisperBaseParts,
    prepare_model_dir,
)
from voice_agent.providers.local_tts import PiperTTS  # noqa: E402
from voice_agent.settings import Settings  # noqa: E402

WINDOWS = (30, 15, 10, 8)
TIMING_RUNS = 5
PINNINGS = (("0", 1), ("0", 2), ("0-1", 2))  # (CPUs, threads)
VOICES = ("piper", "espeak")


def conversation_lines() -> list[str]:
    """The caller's lines of the spoken conversation tests."""
    lines = []
    for path in sorted((ROOT / "tests" / "conversations").glob("*.toml")):
        turns = tomllib.loads(path.read_text()).get("turns", [])
        lines += [t["user"] for t in turns if t.get("user")]
    return lines


def texts() -> list[tuple[str, list[str], float]]:
    """(kind, parts, pause s between parts) of every utterance measured."""
    cases: list[tuple[str, list[str], float]] = [("question", [QUESTION], 0.0)]
    cases += [("complete", [t], 0.0) for t in COMPLETE]
    cases += [("paused", [a, b], pause) for a, b, pause in PAUSED]
    cases += [("numbers", parts, pause) for parts, pause in NUMBERS]
    cases += [("local models", [t], 0.0) for t in TEXTS.values()]
    cases += [("conversations", [t], 0.0) for t in conversation_lines()]
    every = list(TEXTS.values())
    cases.append(("long", every, 0.5))  # about 25 s: past every short window
    cases.append(("long", every + COMPLETE + [a + " " + b for a, b, _ in PAUSED], 0.4))
    return cases


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level edit distance (substitutions, insertions, deletions)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        prev, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ref != hyp))
    return row[-1]


async def speech(voices: Voices, voice: str, parts: list[str], pause: float) -> bytes:
    pcm = b""
    for i, part in enumerate(parts):
        pcm += (silence(pause) if i else b"") + await voices.say(voice, part)
    return pcm


async def child(args: argparse.Namespace) -> int:
    """Measure in this process (pinned by the parent): one JSON object on stdout."""
    tmp = Path(tempfile.mkdtemp(prefix="stt-window-"))
    model_dir = prepare_model_dir(WhisperBaseParts.installed(), tmp / "models")
    piper = PiperTTS.from_settings(Settings(_env_file=None, data_dir=tmp))
    voices = Voices(piper)
    models = {
        w: LocalWhisperSTT(model_dir=model_dir, cpu_threads=args.threads, window_s=w)
        for w in WINDOWS
    }
    out: dict[str, Any] = {"timing": {}, "accuracy": []}
    timed = {
        "question (espeak": await speech(voices, "espeak", [QUESTION], 0),
        "sentence (piper": await speech(voices, "piper", [TEXTS["sentence"]], 0),
    }
    for voice_label, pcm in timed.items():
        audio = PcmAudio(pcm, SAMPLE_RATE)
        label = f"{voice_label}, {audio.duration_s:.1f} s)"
        times: dict[int, list[float]] = {w: [] for w in WINDOWS}
        for _ in range(TIMING_RUNS):  # windows interleaved, so a load burst hits them alike
            for w, stt in models.items():
                started = time.perf_counter()
                await stt.transcribe(audio, language="en")
                times[w].append(time.perf_counter() - started)
        out["timing"][label] = {w: statistics.median(t) * 1000 for w, t in times.items()}
    if args.accuracy:
        for kind, parts, pause in texts():
            for voice in VOICES:
                audio = PcmAudio(await speech(voices, voice, parts, pause), SAMPLE_RATE)
                reference = words(" ".join(parts))
                row: dict[str, Any] = {
                    "kind": kind, "voice": voice, "audio_s": audio.duration_s,
                    "ref_words": len(reference), "errors": {}, "ms": {}, "text": {},
                }  # fmt: skip
                for w, stt in models.items():
                    started = time.perf_counter()
                    text = (await stt.transcribe(audio, language="en")).text
                    row["ms"][w] = (time.perf_counter() - started) * 1000
                    row["errors"][w] = word_errors(reference, words(text))
                    row["text"][w] = text
                out["accuracy"].append(row)
    for stt in models.values():
        await stt.aclose()
    await piper.aclose()
    print(json.dumps(out))
    return 0


def run_child(cpus: str, threads: int, accuracy: bool) -> dict[str, Any]:
    argv = ["taskset", "-c", cpus, sys.executable, __file__, "--child", "--threads", str(threads)]
    done = subprocess.run(
        argv + (["--accuracy"] if accuracy else []),
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--accuracy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return asyncio.run(child(args))
    load = [os.getloadavg()[0]]
    results = {}
    for cpus, threads in PINNINGS:
        accuracy = (cpus, threads) == ("0", 2)  # the shipped threads, pinned as in the call
        results[(cpus, threads)] = run_child(cpus, threads, accuracy)
        load.append(os.getloadavg()[0])
        print(f"CPUs {cpus}, {threads} threads: {results[(cpus, threads)]['timing']}", flush=True)
    rows = results[("0", 2)]["accuracy"]
    accuracy_table = _accuracy_table(rows)
    for r in rows:
        wrong = {w: t for w, t in r["text"].items() if r["errors"][w] != r["errors"]["30"]}
        if wrong:
            print(f"  {r['kind']}/{r['voice']} {r['audio_s']:.1f} s differs: {wrong}")
    timing_table = [
        "| utterance | CPUs | threads | " + " | ".join(f"{w} s window ms" for w in WINDOWS) + " |",
        "|---|---|---|" + "---|" * len(WINDOWS),
    ]
    for (cpus, threads), result in results.items():
        for label, ms in result["timing"].items():
            cells = " | ".join(f"{ms[str(w)]:.0f}" for w in WINDOWS)
            timing_table.append(f"| {label} | {cpus} | {threads} | {cells} |")
    print("\n".join([*accuracy_table, "", *timing_table]))
    write_section(
        "Local STT window",
        "`benchmarks/stt_window.py`: Whisper base (faster-whisper, int8, greedy, language given) "
        "with its encoder on windows of 30, 15, 10 and 8 s (a turn that does not fit a window "
        "with 1 s to spare gets the full 30 s). Word error rate over the turn-taking "
        "benchmark's utterances, the local-models texts, the spoken conversation tests' caller "
        "lines and the voice benchmark's question, each spoken by Piper and by espeak-ng "
        "(CPU 0, 2 threads), cut to their voiced part; the long rows are turns of 22-64 s. "
        "Time: median of "
        f"{TIMING_RUNS} runs per window. Load average (1 min) during the run: "
        f"{min(load):.1f}-{max(load):.1f}.",
        "Word error rate (errors / reference words):\n\n"
        + "\n".join(accuracy_table)
        + "\n\nSTT time:\n\n"
        + "\n".join(timing_table),
    )
    return 0


def _accuracy_table(rows: list[dict[str, Any]]) -> list[str]:
    table = [
        "| utterances | voice | count | audio s | " + " | ".join(f"{w} s" for w in WINDOWS) + " |",
        "|---|---|---|---|" + "---|" * len(WINDOWS),
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["voice"]), []).append(r)
    for voice in VOICES:
        groups[("all but long", voice)] = [
            r for r in rows if r["voice"] == voice and r["kind"] != "long"
        ]
    for (kind, voice), group in groups.items():
        ref = sum(r["ref_words"] for r in group)
        cells = " | ".join(f"{sum(r['errors'][str(w)] for r in group) / ref:.1%}" for w in WINDOWS)
        span = f"{min(r['audio_s'] for r in group):.1f}-{max(r['audio_s'] for r in group):.1f}"
        table.append(f"| {kind} | {voice} | {len(group)} | {span} | {cells} |")
    return table


if __name__ == "__main__":
    raise SystemExit(main())
