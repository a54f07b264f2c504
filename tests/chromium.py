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
    """A headless Chromium driven by Playwright, closed (bounded) on the way out."""
    require_chromium()
    async with async_playwright() as driver:
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


def keep_screenshot(png: bytes, name: str) -> None:
    """Save docs/screenshots/`name` when it is missing or with UPDATE_SCREENSHOTS=1, so ordinary
    runs leave the tree clean (times and timers differ on every run)."""
    path = SCREENSHOTS / name
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not path.exists():
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
