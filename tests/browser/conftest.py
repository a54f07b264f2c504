"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, with fake media.

Chromium runs headless from `/usr/bin/chromium` (no Playwright browser download), with background
networking off and a WAV file as its microphone. Every browser a test launches is closed at the
end of the test, and the test fails if any Chromium process of ours is still alive after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Playwright, async_playwright

from tests.chromium import CHROMIUM, HEADLESS_ARGS, require_chromium
from tests.integration.stack import speech
from voice_agent.caller.audio import ROOM_RATE, write_wav

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
BASE_ARGS = [
    *HEADLESS_ARGS,
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
QUESTION = "What are your opening hours?"
QUESTION_LEAD_IN_S = 7.0  # the agent joins and says its greeting before the question starts

Launch = Callable[..., Awaitable[Browser]]


@pytest.fixture(scope="session")
def client_bundle() -> Path:
    """The built web client (scripts/setup.sh builds it); a clear failure when it is missing."""
    bundle = WEB_ROOT / "static" / "dist" / "app.js"
    if not bundle.is_file():
        pytest.fail("web/static/dist/app.js is missing: run scripts/setup.sh (npm ci + build)")
    return bundle


@pytest.fixture(scope="session")
async def playwright_driver() -> AsyncIterator[Playwright]:
    """One Playwright driver for the session (browsers are per test)."""
    require_chromium()
    async with async_playwright() as driver:
        yield driver


@pytest.fixture
async def launch_chromium(
    playwright_driver: Playwright, client_bundle: Path
) -> AsyncIterator[Launch]:
    """Launch Chromium with a WAV microphone; all of them closed, and checked gone, afterwards."""
    browsers: list[Browser] = []

    async def launch(*, microphone: Path, fake_ui: bool = True) -> Browser:
        args = [*BASE_ARGS, f"--use-file-for-fake-audio-capture={microphone}%noloop"]
        if fake_ui:
            args.append("--use-fake-ui-for-media-stream")
        browser = await playwright_driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=args, timeout=30_000
        )
        browsers.append(browser)
        return browser

    try:
        yield launch
    finally:
        for browser in browsers:
            await asyncio.wait_for(browser.close(), timeout=15)
        leftovers = await _wait_for_no_chromium(timeout_s=10)
        for pid in leftovers:  # only our own descendants, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"Chromium processes survived the test: {leftovers}"


@pytest.fixture(scope="session")
async def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The question spoken by espeak-ng after a lead-in of silence, as Chromium's microphone."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: run scripts/setup.sh")
    spoken = await speech(QUESTION)
    silence = b"\0\0" * int(ROOM_RATE * QUESTION_LEAD_IN_S)
    path = tmp_path_factory.mktemp("media") / "question.wav"
    write_wav(path, silence + spoken.pcm + b"\0\0" * ROOM_RATE * 3)
    return path


@pytest.fixture(scope="session")
def silence_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Thirty seconds of silence (Chromium's default fake microphone beeps: speech to a VAD)."""
    path = tmp_path_factory.mktemp("media") / "silence.wav"
    write_wav(path, b"\0\0" * ROOM_RATE * 30)
    return path


def _descendants(root: int) -> dict[int, str]:
    """pid -> command name of every process below `root`."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid_text = stat[stat.rindex(")") + 2 :].split()[:2]
        if state == "Z":  # exited, waiting to be reaped: not running
            continue
        ppid = int(ppid_text)
        parents[int(entry.name)] = ppid
        names[int(entry.name)] = name
    found: dict[int, str] = {}
    for pid in parents:
        cursor = parents.get(pid, 0)
        while cursor > 1:
            if cursor == root:
                found[pid] = names[pid]
                break
            cursor = parents.get(cursor, 0)
    return found


async def _wait_for_no_chromium(timeout_s: float) -> list[int]:
    """Chromium processes below this one, after waiting up to `timeout_s` for them to exit."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        alive = [pid for pid, name in _descendants(os.getpid()).items() if name.startswith("chrom")]
        if not alive or loop.time() > deadline:
            return alive
        await asyncio.sleep(0.1)
