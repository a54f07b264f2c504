"""The web client's pure modules (action validation, backoff) under node's own test runner."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).parent / "js"


async def test_client_action_validation_and_backoff_units() -> None:
    """`node --test` over tests/browser/js passes (each case is reported on failure)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: run scripts/setup.sh (Debian's nodejs package)")
    proc = await asyncio.create_subprocess_exec(
        node, "--test", *sorted(str(p) for p in JS_TESTS.glob("*.test.mjs")),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report
    assert "# fail 0" in report
