"""`voice-agent dev`: the whole stack on one machine, supervised as one process tree.

Start order is LiveKit server, Redis, token service; each must be ready before the next starts.
If any child exits, the supervisor says so loudly and stops everything rather than limping on.
SIGINT/SIGTERM stop the children in reverse order; a child that does not stop in time is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from urllib.parse import urlsplit

import aiohttp

from voice_agent.devstack.livekit_server import (
    LiveKitEndpoint,
    find_livekit_server,
    livekit_process,
    new_key_pair,
)
from voice_agent.devstack.local_llm import MODEL_ALIAS, local_llm_process
from voice_agent.devstack.processes import ManagedProcess, ReadyCheck, free_port
from voice_agent.devstack.redis_server import redis_process
from voice_agent.exceptions import ConfigError, DevStackError
from voice_agent.logging import get_logger
from voice_agent.settings import Settings, child_environment

log = get_logger("devstack")

READY_TIMEOUT_S = 60.0


def _port_of(url: str, default: int) -> int:
    return urlsplit(url).port or default


class DevStack:
    """The supervised children of one `voice-agent dev` run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.children: list[ManagedProcess] = []
        self.log_dir = settings.data_dir / "logs"
        self.warnings: list[str] = []

    def _service_env(self, endpoint: LiveKitEndpoint, redis_url: str) -> dict[str, str]:
        return child_environment(
            {
                "LIVEKIT_URL": endpoint.ws_url,
                "LIVEKIT_API_KEY": endpoint.api_key,
                "LIVEKIT_API_SECRET": endpoint.api_secret,
                "REDIS_URL": redis_url,
                "VOICE_AGENT_HOST": self.settings.host,
                "VOICE_AGENT_PORT": str(self.settings.port),
                "VOICE_AGENT_LOG_FORMAT": self.settings.log_format.value,
                "VOICE_AGENT_DATA_DIR": str(self.settings.data_dir),
            }
        )

    async def _start(self, child: ManagedProcess) -> None:
        self.children.append(child)
        await child.start()
        await child.wait_ready(READY_TIMEOUT_S)

    async def start(self) -> str:
        """Start every component in order; the URL to open."""
        s = self.settings
        if s.livekit_api_key and s.livekit_api_secret is not None:
            key, secret = s.livekit_api_key, s.livekit_api_secret.get_secret_value()
        else:
            key, secret = new_key_pair()
        endpoint = LiveKitEndpoint(
            port=_port_of(s.livekit_url, 7880), api_key=key, api_secret=secret
        )
        await self._start(
            livekit_process(
                binary=find_livekit_server(s.livekit_server_bin),
                endpoint=endpoint,
                tcp_port=endpoint.port + 1,
                log_file=self.log_dir / "livekit.log",
            )
        )
        redis_url = s.redis_url
        if redis_url is None:
            port = free_port()
            await self._start(
                redis_process(
                    port=port, data_dir=s.data_dir / "redis", log_file=self.log_dir / "redis.log"
                )
            )
            redis_url = f"redis://127.0.0.1:{port}/0"
        service_url = f"http://{s.host}:{s.port}"
        await self._start(
            ManagedProcess(
                name="token-service",
                argv=[sys.executable, "-m", "voice_agent", "serve"],
                env=self._service_env(endpoint, redis_url),
                ready=_http_ok(f"{service_url}/readyz"),
            )
        )
        env = self._service_env(endpoint, redis_url)
        if s.openai_api_key is None and s.openai_base_url is None:
            # No model endpoint: the offline demo LLM (speech is local by default then too).
            llm_port = free_port()
            try:
                llm = local_llm_process(port=llm_port, log_file=self.log_dir / "local-llm.log")
            except ConfigError as e:
                log.warning("dev.worker_skipped", reason=str(e))
                self.warnings.append(f"agent worker not started: {e}")
                return f"{service_url}/"
            await self._start(llm)
            env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{llm_port}/v1"
            env["VOICE_AGENT_LLM_MODEL"] = MODEL_ALIAS
            self.warnings.append(
                "the LLM is the offline demo model SmolLM2-135M: weak, for trying the voice "
                "pipeline only; set OPENAI_API_KEY or OPENAI_BASE_URL for a real assistant"
            )
        worker_port = free_port()
        env["VOICE_AGENT_WORKER_METRICS_PORT"] = str(worker_port)
        await self._start(
            ManagedProcess(
                name="agent-worker",
                argv=[sys.executable, "-m", "voice_agent", "worker"],
                env=env,
                ready=_http_ok(f"http://{s.host}:{worker_port}/healthz"),
            )
        )
        return f"{service_url}/"

    async def wait_for_exit(self) -> ManagedProcess:
        """Block until any child exits; that child."""
        waits = {asyncio.ensure_future(c.wait()): c for c in self.children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()
        return waits[next(iter(done))]

    async def stop(self) -> None:
        """Stop the children in reverse start order."""
        for child in reversed(self.children):
            await child.stop()


def _http_ok(url: str) -> ReadyCheck:
    async def ready() -> bool:
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            return resp.status == 200

    return ready


async def run_dev(settings: Settings) -> int:
    """Run the stack until a signal or a crash; the process exit code."""
    stack = DevStack(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        try:
            url = await stack.start()
        except DevStackError as e:
            log.error("dev.start_failed", error=str(e))
            return 1
        log.info("dev.ready", url=url, logs=str(stack.log_dir))
        notes = "".join(f"  Note: {w}\n" for w in stack.warnings)
        print(f"\n  Voice agent ready: open {url}\n{notes}  Ctrl-C stops everything.\n", flush=True)
        stop_wait = asyncio.ensure_future(stop.wait())
        crash_wait = asyncio.ensure_future(stack.wait_for_exit())
        done, _ = await asyncio.wait({stop_wait, crash_wait}, return_when=asyncio.FIRST_COMPLETED)
        if crash_wait in done:
            child = crash_wait.result()
            log.error(
                "dev.child_crashed",
                child=child.name,
                pid=child.pid,
                returncode=child.returncode,
                action="stopping the whole stack",
            )
            code = 1
        for fut in (stop_wait, crash_wait):
            fut.cancel()
    finally:
        log.info("dev.stopping")
        with contextlib.suppress(Exception):
            await stack.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("dev.stopped", returncode=code)
    return code
