"""Keep docs/benchmarks.md current: each benchmark owns one section and rewrites only it."""

from __future__ import annotations

import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nFigures from the scripts in `benchmarks/`, each section rewritten by its own "
    "script. The machines are shared and noisy: compare runs on the same machine, not across "
    "machines.\n"
)


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        if m := re.search(r"Model name:\s+(.+)", out):
            cpu = m.group(1).strip()
    except OSError:
        pass
    return f"{cpu}, Python {platform.python_version()}"


def write_section(title: str, method: str, body: str) -> None:
    """Replace (or add) the section `## title` in docs/benchmarks.md."""
    DOC.parent.mkdir(exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"## {title}\n\n{method}\n\nMeasured {stamp} on {_machine()}.\n\n{body}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text)
