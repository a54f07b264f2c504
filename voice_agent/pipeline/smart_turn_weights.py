"""Smart Turn's weights on disk: fetched once from PyPI, checked, kept in the user's cache.

The ONNX file ships inside the `pipecat-ai` wheel (BSD-2-Clause, Daily). `fetch_turn_model`
downloads that one wheel with pip (no dependencies, nothing installed), checks the wheel's and
the model's sha256 against the pins below, and extracts only the model into
`<cache>/voice-agent/models/`. A model already there with the pinned checksum is kept, so it is
idempotent; at run time the agent only reads the file (no network).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from voice_agent.exceptions import TurnModelError
from voice_agent.settings import Settings

__all__ = [
    "MODEL_FILE",
    "MODEL_SHA256",
    "PIPECAT_VERSION",
    "WHEEL_SHA256",
    "default_model_path",
    "fetch_turn_model",
    "model_path",
    "pip_download",
    "sha256_of",
]

PIPECAT_VERSION = "1.14.0"
"""The pipecat-ai release whose wheel carries Smart Turn v3.2."""
WHEEL_FILE = f"pipecat_ai-{PIPECAT_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44"
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
MODEL_MEMBER = f"pipecat/audio/turn/smart_turn/data/{MODEL_FILE}"
MODEL_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
_DOWNLOAD_TIMEOUT_S = 600.0

Download = Callable[[Path], None]
"""Puts the pinned wheel into the given directory (raises `TurnModelError` when it cannot)."""


def default_model_path(cache_home: Path | None) -> Path:
    """Where the model is kept: `$XDG_CACHE_HOME/voice-agent/models/` (default ~/.cache)."""
    base = cache_home if cache_home is not None else Path.home() / ".cache"
    return base / "voice-agent" / "models" / MODEL_FILE


def model_path(settings: Settings) -> Path:
    """The model file the settings name: `smart_turn_model`, else the cache's."""
    return settings.smart_turn_model or default_model_path(settings.xdg_cache_home)


def sha256_of(path: Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_download(directory: Path) -> None:
    """`pip download --no-deps pipecat-ai==<pinned>` into `directory` (bounded in time)."""
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    argv += ["--disable-pip-version-check", "-q", "-d", str(directory)]
    argv.append(f"pipecat-ai=={PIPECAT_VERSION}")
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TurnModelError(f"pip download of pipecat-ai {PIPECAT_VERSION} failed: {e}") from e
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise TurnModelError(
            f"pip download of pipecat-ai {PIPECAT_VERSION} failed: " + " / ".join(tail)
        )


def fetch_turn_model(
    target: Path,
    *,
    download: Download = pip_download,
    wheel_sha256: str = WHEEL_SHA256,
    model_sha256: str = MODEL_SHA256,
) -> bool:
    """Make sure `target` holds the pinned model; True when it was fetched now, False when it
    was already there. Raises `TurnModelError` (nothing written) on a failed download or a
    checksum that does not match."""
    if target.is_file() and sha256_of(target) == model_sha256:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="turn-model-", dir=target.parent) as tmp:
        directory = Path(tmp)
        download(directory)
        wheel = directory / WHEEL_FILE
        if not wheel.is_file():
            raise TurnModelError(f"the download did not produce {WHEEL_FILE}")
        found = sha256_of(wheel)
        if found != wheel_sha256:
            raise TurnModelError(
                f"{WHEEL_FILE}: sha256 {found} is not the pinned {wheel_sha256}; not using it"
            )
        extracted = directory / MODEL_FILE
        try:
            with zipfile.ZipFile(wheel) as archive, archive.open(MODEL_MEMBER) as member:
                extracted.write_bytes(member.read())
        except (KeyError, zipfile.BadZipFile) as e:
            raise TurnModelError(f"{WHEEL_FILE} holds no {MODEL_MEMBER}: {e}") from e
        found = sha256_of(extracted)
        if found != model_sha256:
            raise TurnModelError(
                f"{MODEL_FILE}: sha256 {found} is not the pinned {model_sha256}; not using it"
            )
        os.replace(extracted, target)  # atomic: a reader sees the old file or the whole new one
    return True
