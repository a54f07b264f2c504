"""Conversation test files as pytest tests: each `*.toml` under a `conversations/` directory.

Enable it with `pytest_plugins = ["voice_agent.textmode.pytest_plugin"]` in a `conftest.py` (or
`pytest -p voice_agent.textmode.pytest_plugin`). Each file runs in text mode, as
`voice-agent test` runs it, with the settings of the environment; a failed check fails the test
and its report (every check, then the transcript) is the failure's text.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest

from voice_agent.settings import load_settings
from voice_agent.textmode.runner import FileReport, print_report, run_file


class ConversationFailedError(Exception):
    """A conversation file with a failed check; its report is the message."""


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    """Collect `conversations/**/*.toml`."""
    if file_path.suffix == ".toml" and "conversations" in file_path.parent.parts:
        return ConversationFile.from_parent(parent, path=file_path)
    return None


class ConversationFile(pytest.File):
    """One conversation file: one test."""

    def collect(self) -> list[pytest.Item]:
        """The file's single test."""
        return [ConversationItem.from_parent(self, name=self.path.stem)]


class ConversationItem(pytest.Item):
    """Runs the file; fails with its report."""

    def runtest(self) -> None:
        """Run in a thread of its own, with its own event loop (pytest's may be in use)."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            report = pool.submit(asyncio.run, run_file(self.path, load_settings())).result()
        if not report.passed:
            raise ConversationFailedError(_text(report))

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        """The report, not a traceback."""
        if isinstance(excinfo.value, ConversationFailedError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int, str]:
        """Where the test comes from."""
        return self.path, 0, f"conversation {self.name}"


def _text(report: FileReport) -> str:
    lines: list[str] = []
    print_report(report, lines.append)
    return "\n".join(lines)
