"""LiveKit's own client components, from npm, drive our agent unchanged in real Chromium.

The page (`lk_components/`) is built only from `@livekit/components-react` 2.9 and
`livekit-client` 2.23, pinned in its `package-lock.json` and bundled with esbuild when the tests
start, and served from the test's own HTTP server. It records what the components expose:
`useAgent`'s state and failures, `useVoiceAssistant().agentTranscriptions` (legacy transcription
packets) and `useTranscriptions()` (`lk.transcription` streams).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from livekit.protocol import models as lk_models

from tests.browser.conftest import QUESTION, Launch
from tests.integration.stack import voice_stack
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.devstack.processes import free_port
from voice_agent.testing.openai_script import ChatReply, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PAGE = Path(__file__).resolve().parent / "lk_components"
GREETING = "Hello! How can I help you today?"
ANSWER = "We are open from nine to five, Monday to Friday."
GOODBYE = "Thanks for calling. Goodbye!"
_BUILD_TIMEOUT_S = 300


async def _run(*command: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=PAGE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=_BUILD_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed in {PAGE}:\n{out.decode()[-3000:]}")


@pytest.fixture(scope="session")
async def components_bundle() -> Path:
    """The page's bundle: `npm ci` (skipped while the lock file is unchanged), then esbuild."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: run scripts/setup.sh")
    lock = hashlib.sha256((PAGE / "package-lock.json").read_bytes()).hexdigest()[:16]
    stamp = PAGE / "node_modules" / f".installed-{lock}"
    if not stamp.is_file():
        await _run(npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error")
        stamp.touch()
    await _run(npm, "run", "--silent", "build")
    return PAGE / "dist" / "app.js"


@pytest.fixture
async def components_url(components_bundle: Path) -> AsyncIterator[str]:
    """The page on its own loopback HTTP server."""

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE / "index.html")

    async def script(_: web.Request) -> web.FileResponse:
        return web.FileResponse(components_bundle, headers={"Content-Type": "text/javascript"})

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/app.js", script)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def _grant(url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.post(f"{url}/api/voice-token", json={}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def test_livekit_components_follow_a_whole_call_to_a_clean_end(
    livekit_server: LiveKitEndpoint,
    tmp_path: Path,
    launch_chromium: Launch,
    question_wav: Path,
    components_url: str,
) -> None:
    """useAgent's states, both transcription hooks, then the agent's hang-up as a clean end."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text=ANSWER)], transcriptions=[TranscriptionReply(text=QUESTION)]
    )
    async with (
        models,
        voice_stack(livekit_server, tmp_path, models=models, user_silence_timeout_s=8.0) as stack,
    ):
        grant = await _grant(stack.url)
        browser = await launch_chromium(microphone=question_wav)
        page = await browser.new_page()
        await page.goto(components_url)
        await page.evaluate("(grant) => window.startCall(grant)", grant)
        await page.wait_for_function(
            "() => window.__lk.states.includes('connecting')"
            " && ['disconnected', 'failed'].includes(window.__lk.states.at(-1))",
            timeout=90_000,
        )
        seen: dict[str, Any] = await page.evaluate("() => window.__lk")
        [record] = stack.sink.records.values()

    # The microphone's pre-connect buffer (Opus in WebM from MediaRecorder) was decoded and heard.
    [buffered] = [e for e in record.events if e.event == "pre_connect_audio"]
    assert buffered.data["seconds"] > 0
    states = seen["states"]
    assert seen["failureReasons"] == [], seen
    assert "failed" not in states, states
    # Connecting (and buffering the microphone), at most a glimpse of initializing, then ready.
    before = set(states[: states.index("listening")])
    assert before <= {"disconnected", "connecting", "pre-connect-buffering", "initializing"}, states
    answered = states[states.index("thinking") - 1 :]
    assert answered[:3] == ["listening", "thinking", "speaking"], states
    assert states[-1] == "disconnected", states
    # The agent hung up (the caller stayed silent), with its reason, as LiveKit's agents do.
    assert seen["endReason"] == "user_silent"
    closed = {lk_models.DisconnectReason.Value(n) for n in ("PARTICIPANT_REMOVED", "ROOM_DELETED")}
    assert seen["disconnectReason"] in closed, seen["disconnectReason"]

    legacy = {(s["text"], s["final"]) for s in seen["agentTranscriptions"].values()}
    assert {(GREETING, True), (ANSWER, True)} <= legacy, legacy

    streams = list(seen["transcriptions"].values())
    finals = {(s["identity"], s["text"]) for s in streams if s["final"]}
    assert (grant["identity"], QUESTION) in finals, streams
    agent = {s["identity"] for s in streams} - {grant["identity"]}
    assert len(agent) == 1, streams
    [agent_identity] = agent
    assert {
        (agent_identity, GREETING),
        (agent_identity, ANSWER),
        (agent_identity, GOODBYE),
    } <= finals
    segments = {(s["identity"], s["segment"]) for s in streams}
    assert segments == {(s["identity"], s["segment"]) for s in streams if s["final"]}, streams
