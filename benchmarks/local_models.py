"""Local speech models on this machine: Whisper base (STT) and Piper (TTS).

STT: real-time factor and latency by utterance length (speech made by Piper, transcribed with the
language given, 3 runs each, median). TTS: first-audio latency and real-time factor by text
length. Figures are printed and written to docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_section  # noqa: E402
from voice_agent.pipeline.resample import StreamResampler  # noqa: E402
from voice_agent.providers.base import PcmAudio  # noqa: E402
from voice_agent.providers.local_stt import LocalWhisperSTT  # noqa: E402
from voice_agent.providers.local_tts import PiperTTS  # noqa: E402
from voice_agent.settings import Settings  # noqa: E402

TEXTS = {
    "short": "Yes, please.",
    "sentence": "I would like to check the status of my order from last week.",
    "two sentences": (
        "My internet connection keeps dropping every evening. I already restarted the router "
        "twice and it did not help."
    ),
    "long": (
        "Hello, I am calling about the invoice you sent me on Monday. It charges me for two "
        "licences, but we only use one of them since March. Could you please correct the "
        "invoice and tell me when the refund will arrive on my card?"
    ),
}
RUNS = 3


async def main() -> int:
    settings = Settings(_env_file=None, data_dir=Path(tempfile.mkdtemp(prefix="local-bench-")))
    t0 = time.perf_counter()
    stt = LocalWhisperSTT.from_settings(settings)
    stt_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    tts = PiperTTS.from_settings(settings)
    tts_load = time.perf_counter() - t0
    tts_rows, stt_rows = [], []
    for label, text in TEXTS.items():
        firsts, totals, audio_s = [], [], 0.0
        pcm = b""
        for _ in range(RUNS):
            started = time.perf_counter()
            first = None
            chunks = []
            async for chunk in tts.synthesize(text):
                first = first or time.perf_counter() - started
                chunks.append(chunk)
            totals.append(time.perf_counter() - started)
            firsts.append(first or 0.0)
            pcm = b"".join(c.data for c in chunks)
            audio_s = len(pcm) / 2 / chunks[0].sample_rate
            rate = chunks[0].sample_rate
        tts_rows.append(
            (label, audio_s, statistics.median(firsts), statistics.median(totals) / audio_s)
        )
        resampler = StreamResampler(input_rate=rate, output_rate=16_000)
        speech = PcmAudio(resampler.push(pcm) + resampler.flush(), 16_000)
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            await stt.transcribe(speech, language="en")
            times.append(time.perf_counter() - started)
        latency = statistics.median(times)
        stt_rows.append((label, speech.duration_s, latency, latency / speech.duration_s))
        print(
            f"{label:14s} audio {audio_s:5.2f} s  TTS first audio {tts_rows[-1][2] * 1000:5.0f} ms"
            f" RTF {tts_rows[-1][3]:.3f}  STT {latency * 1000:5.0f} ms RTF {stt_rows[-1][3]:.3f}",
            flush=True,
        )
    await stt.aclose()
    await tts.aclose()
    stt_table = ["| utterance | audio s | STT latency ms | real-time factor |", "|---|---|---|---|"]
    stt_table += [f"| {r[0]} | {r[1]:.2f} | {r[2] * 1000:.0f} | {r[3]:.3f} |" for r in stt_rows]
    tts_table = ["| text | audio s | first audio ms | real-time factor |", "|---|---|---|---|"]
    tts_table += [f"| {r[0]} | {r[1]:.2f} | {r[2] * 1000:.0f} | {r[3]:.3f} |" for r in tts_rows]
    write_section(
        "Local speech models",
        "`benchmarks/local_models.py`: Whisper base through faster-whisper (int8, shipped "
        "settings: one thread, the 10 s window for turns that fit it, "
        "language given) and Piper (joe medium voice, 22.05 kHz) on this 2-core machine; the "
        f"speech Whisper hears is Piper's; median of {RUNS} runs. Model start-up: Whisper "
        f"{stt_load:.2f} s (assembly and hash checks included), Piper {tts_load:.2f} s.",
        "Speech to text:\n\n"
        + "\n".join(stt_table)
        + "\n\nText to speech:\n\n"
        + "\n".join(tts_table),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
