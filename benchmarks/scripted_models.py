"""The scripted OpenAI-compatible server in a process of its own, for the voice benchmarks.

`python benchmarks/scripted_models.py URL_FILE TRANSCRIPT [--stt-ms MS] [--first-token-ms MS]
[--tts-first-byte-ms MS]` serves until terminated and writes its base URL to URL_FILE once
listening. The delays are fixed per endpoint (none by default), the same for every system a
benchmark drives. The benchmarks run it at a raised priority beside the simulated callers: it
stands for model providers on other machines, whose answers should not wait behind the load
generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voice_agent.testing.openai_script import DefaultPacing  # noqa: E402
from voice_agent.testing.scripted_openai import ScriptedOpenAI  # noqa: E402


async def main(url_file: Path, transcript: str, pacing: DefaultPacing) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ScriptedOpenAI(default_transcript=transcript, default_pacing=pacing) as models:
        await asyncio.to_thread(url_file.write_text, models.base_url)
        while not stop.is_set():
            models.requests.clear()  # a long benchmark would otherwise keep every request
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url_file", type=Path)
    parser.add_argument("transcript")
    parser.add_argument("--stt-ms", type=float, default=0.0)
    parser.add_argument("--first-token-ms", type=float, default=0.0)
    parser.add_argument("--tts-first-byte-ms", type=float, default=0.0)
    args = parser.parse_args()
    delays = DefaultPacing.from_ms(
        stt_ms=args.stt_ms,
        first_token_ms=args.first_token_ms,
        tts_first_byte_ms=args.tts_first_byte_ms,
    )
    asyncio.run(main(args.url_file, args.transcript, delays))
