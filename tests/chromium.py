"""Debian's Chromium for the browser tests: where it is and the flags every launch uses."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
# Headless and quiet: no sandbox (root in CI), no GPU, and nothing that talks to the internet.
HEADLESS_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    """Fail clearly when the browser is missing (setup installs it)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (Debian's chromium package)")


@contextlib.asynccontextmanager
async def headless_chromium(*extra_args: str) -> AsyncIterator[Browser]:
    """A headless Chromium driven by its own Playwright driver; the driver's start, the launch
    and the way out are each bounded. Once the browser is closed the test has what it needs, so
    a driver stop that does not finish within 15 s is left behind, not waited for (Playwright's
    tracker has stops that hang when a process forked meanwhile holds the driver's pipe; a full
    run here once hung for the 600 s test limit in a test that uses this, cause not pinned
    down)."""
    require_chromium()
    async with asyncio.timeout(60):
        driver = await async_playwright().start()
    try:
        browser = await driver.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*HEADLESS_ARGS, *extra_args],
            timeout=30_000,
        )
        try:
            yield browser
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    await browser.close()
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await driver.stop()


def keep_screenshot(png: bytes, name: str) -> None:
    """Save docs/screenshots/`name` when it is missing or with UPDATE_SCREENSHOTS=1, so ordinary
    runs leave the tree clean (times and timers differ on every run)."""
    path = SCREENSHOTS / name
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not path.exists():
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
