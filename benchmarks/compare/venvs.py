"""The competitors' own virtual environments under `.cache/bench-venvs/`, installed on demand
from PyPI with pinned versions, apart from ours so neither's dependencies bend the other's."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".cache" / "bench-venvs"


@dataclass(frozen=True)
class Venv:
    """A named venv and the pinned requirements it must hold."""

    name: str
    requirements: tuple[str, ...]

    @property
    def path(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def _stamp(self) -> Path:
        return self.path / "installed.txt"

    def ensure(self) -> Path:
        """Create and install the venv unless it already holds exactly these requirements;
        its Python. A `pip freeze` of what got installed is kept beside it."""
        wanted = "\n".join(self.requirements) + "\n"
        if self.python.exists() and self._stamp.exists() and self._stamp.read_text() == wanted:
            return self.python
        print(f"installing {' '.join(self.requirements)} into {self.path} ...", flush=True)
        if not self.python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True)
        pip = [str(self.python), "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "install", *self.requirements], check=True)
        frozen = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True)
        (self.path / "freeze.txt").write_text(frozen.stdout)
        self._stamp.write_text(wanted)
        return self.python


# Pinned as verified here. Pipecat's extras are checked against its metadata: `livekit` (the
# transport: livekit, livekit-api), `openai` and `silero` (Silero's onnx ships in the wheel;
# onnxruntime is a core dependency, as is the Smart Turn v3 model its default turn stop uses).
LIVEKIT_AGENTS = Venv("livekit-agents", ("livekit-agents[openai,silero]==1.8.9",))
PIPECAT = Venv("pipecat", ("pipecat-ai[livekit,openai,silero]==1.14.0",))
