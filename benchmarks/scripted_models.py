"""The scripted OpenAI-compatible server in a process of its own, for the voice benchmark.

`python benchmarks/scripted_models.py URL_FILE TRANSCRIPT` serves until terminated and writes its
base URL to URL_FILE once listening. The benchmark runs it at a raised priority beside the
simulated callers: it stands for model providers on other machines, whose answers should not
wait behind the load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voice_agent.testing.scripted_openai import ScriptedOpenAI  # noqa: E402


async def main(url_file: Path, transcript: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ScriptedOpenAI(default_transcript=transcript) as models:
        await asyncio.to_thread(url_file.write_text, models.base_url)
        while not stop.is_set():
            models.requests.clear()  # a long benchmark would otherwise keep every request
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
