"""`voice-agent dev`: the whole stack on one machine, supervised as one process tree.

Start order is LiveKit server (its webhooks aimed at the token service), Redis, token service,
the offline LLM when no model endpoint is set, post-call worker, agent worker; each must be ready
before the next starts. A child that exits is restarted on its own port with backoff while the
others keep running (`supervision.py`); one that keeps exiting (a crash loop) stops the whole
stack, loudly, with exit code 1. SIGINT/SIGTERM stop the children in reverse order, each within
its own grace: the agent worker drains its calls first (`VOICE_AGENT_DRAIN_TIMEOUT_S`); a second
signal cuts every grace short.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
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
from voice_agent.devstack.supervision import CrashLoopError, RestartPolicy, Supervisor
from voice_agent.exceptions import ConfigError, DevStackError
from voice_agent.logging import get_logger
from voice_agent.postcall.queue import worker_alive
from voice_agent.postcall.worker import PostCallOptions
from voice_agent.settings import AuthMode, Settings, child_environment

log = get_logger("devstack")

READY_TIMEOUT_S = 60.0
# How long each child may take to stop after SIGTERM before it is killed. The agent worker's is
# its drain timeout plus this margin (cancelled calls still save their records); the post-call
# worker's its job grace plus it.
SHORT_GRACE_S = 5.0
TOKEN_SERVICE_GRACE_S = 10.0
STOP_MARGIN_S = 20.0


REPO_ROOT = Path(__file__).resolve().parents[2]
# `voice-agent dev` runs the example help-desk agent with the example tools by default.
DEV_PROFILE = REPO_ROOT / "deploy" / "profiles" / "support.toml"

T = TypeVar("T")


def _port_of(url: str, default: int) -> int:
    return urlsplit(url).port or default


class DevStack:
    """The supervised children of one `voice-agent dev` run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._supervisor: Supervisor | None = None
        self.log_dir = settings.data_dir / "logs"
        self.warnings: list[str] = []
        # Staff read reports with a Bearer token; in anonymous mode without one, make one up.
        self.generated_staff_token = (
            secrets.token_urlsafe(24)
            if settings.auth_mode is AuthMode.ANONYMOUS and settings.staff_token is None
            else None
        )

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
                **self._profile_env(),
            }
        )

    def _profile_env(self) -> dict[str, str]:
        """The example support profile and tools, unless the settings name others."""
        if self.settings.profile is not None:
            return {"VOICE_AGENT_PROFILE": str(self.settings.profile.resolve())}
        if not DEV_PROFILE.is_file():
            return {}
        tools = self.settings.tools_path
        if not tools.is_dir() and (REPO_ROOT / tools).is_dir():
            tools = REPO_ROOT / tools
        return {"VOICE_AGENT_PROFILE": str(DEV_PROFILE), "VOICE_AGENT_TOOLS_PATH": str(tools)}

    def _staff_env(self) -> dict[str, str]:
        """The generated staff token, for the token service only."""
        if self.generated_staff_token is None:
            return {}
        return {"VOICE_AGENT_STAFF_TOKEN": self.generated_staff_token}

    def reports_banner(self, url: str) -> str:
        """Where staff read reports and how they sign in (printed, never logged)."""
        reports = f"{url.rstrip('/')}/reports"
        if self.generated_staff_token is not None:
            how = f"staff token {self.generated_staff_token} (generated for this run)"
        elif self.settings.auth_mode is AuthMode.JWT:
            how = "a host JWT whose roles include 'staff'"
        else:
            how = "the VOICE_AGENT_STAFF_TOKEN you set"
        return f"  Call reports: {reports}\n  Sign in with {how}.\n"

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor of this run's children (made on first use, inside the event loop)."""
        if self._supervisor is None:
            self._supervisor = Supervisor(policy=RestartPolicy.from_settings(self.settings))
        return self._supervisor

    async def _start(self, child: ManagedProcess, *, stop_grace_s: float = SHORT_GRACE_S) -> None:
        await self.supervisor.start(
            child, ready_timeout_s=READY_TIMEOUT_S, stop_grace_s=stop_grace_s
        )

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
                # room_finished reaches the token service: the post-call safety net
                webhook_url=f"http://{_reachable(s.host)}:{s.port}/webhooks/livekit",
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
                env=self._service_env(endpoint, redis_url) | self._staff_env(),
                ready=_http_ok(f"{service_url}/readyz"),
            ),
            stop_grace_s=TOKEN_SERVICE_GRACE_S,
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
                await self._start_postcall(env, redis_url)  # reports then use the fallback
                return f"{service_url}/"
            await self._start(llm)
            env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{llm_port}/v1"
            env["VOICE_AGENT_LLM_MODEL"] = MODEL_ALIAS
            self.warnings.append(
                "the LLM is the offline demo model SmolLM2-135M: weak, for trying the voice "
                "pipeline only; set OPENAI_API_KEY or OPENAI_BASE_URL for a real assistant"
            )
        await self._start_postcall(env, redis_url)
        worker_port = free_port()
        env["VOICE_AGENT_WORKER_METRICS_PORT"] = str(worker_port)
        await self._start(
            ManagedProcess(
                name="agent-worker",
                argv=[sys.executable, "-m", "voice_agent", "worker"],
                env=env,
                ready=_http_ok(f"http://{s.host}:{worker_port}/healthz"),
            ),
            stop_grace_s=s.drain_timeout_s + STOP_MARGIN_S,
        )
        return f"{service_url}/"

    async def _start_postcall(self, env: dict[str, str], redis_url: str) -> None:
        """`voice-agent postcall`, with the agent's model; ready once its health key is fresh."""

        async def ready() -> bool:
            return child.pid is not None and await worker_alive(redis_url, child.pid)

        child = ManagedProcess(
            name="postcall-worker",
            argv=[sys.executable, "-m", "voice_agent", "postcall"],
            env=env,
            ready=ready,
        )
        await self._start(child, stop_grace_s=PostCallOptions().shutdown_grace_s + STOP_MARGIN_S)

    async def wait_failed(self) -> DevStackError:
        """Block until a child is given up on (a crash loop); why."""
        return await self.supervisor.wait_failed()

    async def stop(self, *, hurry: asyncio.Event | None = None) -> None:
        """Stop the children in reverse start order, each within its own grace."""
        if self._supervisor is not None:
            await self._supervisor.stop(hurry=hurry)


def _reachable(host: str) -> str:
    """An address to reach a service bound to `host` from this machine."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104


def _http_ok(url: str) -> ReadyCheck:
    async def ready() -> bool:
        timeout = aiohttp.ClientTimeout(total=3)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            return resp.status == 200

    return ready


async def run_dev(settings: Settings) -> int:
    """Run the stack until a signal or a crash loop; the process exit code."""
    stack = DevStack(settings)
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("dev.hurry", signal=sig.name, action="stopping without waiting")
            hurry.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    code = 0
    try:
        url = await _until_stopped(stack.start(), stop)
        if url is None:
            return code
        log.info("dev.ready", url=url, logs=str(stack.log_dir))
        notes = "".join(f"  Note: {w}\n" for w in stack.warnings)
        print(
            f"\n  Voice agent ready: open {url}\n{stack.reports_banner(url)}{notes}"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        failure = await _until_stopped(stack.wait_failed(), stop)
        if failure is not None:
            raise failure
    except DevStackError as e:
        code = 1
        _report_failure(e)
    finally:
        log.info("dev.stopping")
        await stack.stop(hurry=hurry)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("dev.stopped", returncode=code)
    return code


async def _until_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None when `stop` is set first (then `work` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()


def _report_failure(error: DevStackError) -> None:
    """Say loudly why the stack stops: a structured event, and a line for the person."""
    if isinstance(error, CrashLoopError):
        log.error(
            "dev.crash_loop",
            child=error.child,
            returncodes=error.returncodes,
            window_s=error.window_s,
            action="stopping the whole stack",
        )
    else:
        log.error("dev.start_failed", error=str(error))
    print(f"\n  voice-agent dev is stopping: {error}\n", file=sys.stderr, flush=True)
