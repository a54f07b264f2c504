"""`voice-agent worker --processes 2` on the real LiveKit server: two registered workers under
one command, calls spread over both by their load, both drained by one SIGTERM, a killed one
replaced."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import make_settings, strip_project_env
from tests.integration.stack import speech
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.devstack.processes import free_port
from voice_agent.server.app import create_app
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration

STEP_S = 60.0  # the bound on any awaited state; each normally takes a few seconds
QUESTION = "What are your opening hours?"
MAX_JOBS = 2  # per process: the third call cannot go to a worker that has two


def two_free_ports() -> int:
    """A port p with p and p + 1 both free on loopback (the pool's metrics scheme)."""
    for _ in range(50):
        base = free_port()
        with contextlib.suppress(OSError), socket.socket() as s:
            s.bind(("127.0.0.1", base + 1))
            return base
    raise RuntimeError("no two adjacent free ports")


@dataclass
class Pool:
    """A running `voice-agent worker --processes 2` and what it has logged."""

    proc: asyncio.subprocess.Process
    metrics_port: int
    url: str  # the token service
    logs: list[dict[str, Any]] = field(default_factory=list)

    async def health(self, index: int) -> dict[str, Any] | None:
        """Child `index`'s `/healthz` body while it answers 200, else None."""
        url = f"http://127.0.0.1:{self.metrics_port + index}/healthz"
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
                return await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def until(self, check: Any, what: str) -> list[dict[str, Any]]:
        """Poll both children's health until `check(bodies)` holds; the bodies."""
        try:
            async with asyncio.timeout(STEP_S):
                while True:
                    bodies = [await self.health(0), await self.health(1)]
                    if all(b is not None for b in bodies) and check(bodies):
                        return bodies  # type: ignore[return-value]
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; last: {bodies}") from None

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == name]


@contextlib.asynccontextmanager
async def worker_pool(livekit: LiveKitEndpoint, tmp_path: Path) -> AsyncIterator[Pool]:
    """The token service here, the scripted models here, the pool as a real subprocess."""
    agent_name = f"pool-agent-{secrets.token_hex(4)}"
    async with ScriptedOpenAI() as models:
        port = free_port()
        settings = make_settings(
            livekit_url=livekit.ws_url,
            livekit_api_key=livekit.api_key,
            livekit_api_secret=livekit.api_secret,
            agent_name=agent_name,
            port=port,
            token_rate_limit="1000/minute",
            data_dir=tmp_path / "service",
        )
        app = web.AppRunner(create_app(settings))
        await app.setup()
        await web.TCPSite(app, "127.0.0.1", port).start()
        metrics_port = two_free_ports()
        env = strip_project_env(dict(os.environ)) | {
            "LIVEKIT_URL": livekit.ws_url,
            "LIVEKIT_API_KEY": livekit.api_key,
            "LIVEKIT_API_SECRET": livekit.api_secret,
            "OPENAI_BASE_URL": models.base_url,
            "VOICE_AGENT_STT": "openai",
            "VOICE_AGENT_TTS": "openai",
            "VOICE_AGENT_AGENT_NAME": agent_name,
            "VOICE_AGENT_MAX_JOBS": str(MAX_JOBS),
            "VOICE_AGENT_WORKER_METRICS_PORT": str(metrics_port),
            "VOICE_AGENT_DATA_DIR": str(tmp_path / "workers"),
            "VOICE_AGENT_DRAIN_TIMEOUT_S": str(STEP_S),
            "VOICE_AGENT_LOG_FORMAT": "json",
        }
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "voice_agent", "worker", "--processes", "2"),
            env=env,
            cwd=tmp_path,  # no .env file there
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        pool = Pool(proc=proc, metrics_port=metrics_port, url=f"http://127.0.0.1:{port}")
        reader = asyncio.create_task(_collect(proc, pool.logs))
        try:
            await pool.until(lambda b: all(x["status"] == "ok" for x in b), "both registered")
            yield pool
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            await reader
            await app.cleanup()


async def _collect(proc: asyncio.subprocess.Process, logs: list[dict[str, Any]]) -> None:
    """Keep the pool's output (JSON log lines of the pool and its children)."""
    assert proc.stdout is not None
    async for line in proc.stdout:
        with contextlib.suppress(ValueError):
            logs.append(json.loads(line))


async def held_call(url: str, go: asyncio.Event) -> dict[str, Any]:
    """A caller that is greeted, waits for `go`, asks one question and hangs up."""

    async def wait_for_go() -> None:
        await go.wait()

    options = CallerOptions(
        url=url,
        utterances=(await speech(QUESTION),),
        listen_audio=False,
        agent_join_timeout_s=STEP_S,
        before_first_turn=wait_for_go,
    )
    return await SimulatedCaller(options=options).run()


async def test_calls_spread_over_both_processes_and_one_sigterm_drains_both(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """Four calls land two per process; SIGTERM drains both, the calls finish, the pool exits 0."""
    async with worker_pool(livekit_server, tmp_path) as pool:
        go = asyncio.Event()
        calls = [asyncio.create_task(held_call(pool.url, go)) for _ in range(4)]
        try:
            bodies = await pool.until(
                lambda b: sum(x["active_jobs"] for x in b) == 4, "four calls running"
            )
            # A process with MAX_JOBS calls reports itself full: LiveKit offers the next elsewhere.
            assert [b["active_jobs"] for b in bodies] == [MAX_JOBS, MAX_JOBS]
            assert bodies[0]["pid"] != bodies[1]["pid"]
            pool.proc.send_signal(signal.SIGTERM)
            await pool.until(lambda b: all(x["draining"] for x in b), "both draining")
        finally:
            go.set()
        async with asyncio.timeout(STEP_S):
            results = await asyncio.gather(*calls)
            returncode = await pool.proc.wait()
    assert all(r["ok"] for r in results), [r.get("error") for r in results]
    assert all(len(r["turns"]) == 1 and r["turns"][0]["agent_text"] for r in results)
    assert returncode == 0
    assert len(pool.events("worker.drained")) == 2
    assert not pool.events("worker.child_killed")
    assert not pool.events("worker.drain_timeout")


async def test_a_killed_worker_process_is_replaced_and_registers_again(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """SIGKILL of one child: the pool starts another, which registers and takes calls."""
    async with worker_pool(livekit_server, tmp_path) as pool:
        before = await pool.until(lambda b: True, "health")
        os.kill(before[0]["pid"], signal.SIGKILL)
        after = await pool.until(
            lambda b: b[0]["pid"] != before[0]["pid"] and b[0]["status"] == "ok",
            "a new registered child 0",
        )
        assert after[1]["pid"] == before[1]["pid"]  # its sibling was left alone
        assert after[0]["worker_id"] != before[0]["worker_id"]
        go = asyncio.Event()
        calls = [asyncio.create_task(held_call(pool.url, go)) for _ in range(3)]
        try:
            # Three calls at once do not fit in the surviving process (two slots).
            bodies = await pool.until(
                lambda b: sum(x["active_jobs"] for x in b) == 3, "three calls running"
            )
            assert bodies[0]["active_jobs"] >= 1
        finally:
            go.set()
        async with asyncio.timeout(STEP_S):
            results = await asyncio.gather(*calls)
        assert all(r["ok"] for r in results), [r.get("error") for r in results]
        pool.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STEP_S):
            assert await pool.proc.wait() == 0
    assert [e["index"] for e in pool.events("worker.child_restarting")] == [0]
