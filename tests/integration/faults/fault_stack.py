"""The stack the fault matrix breaks: `voice-agent dev` as users run it, with its Redis and model
endpoint held by the test so they can be stopped, and every timeout short.

The models are one scripted OpenAI-compatible server in the test process; a router answers the
post-call worker's report requests with a valid report and the agent's requests from per-call
scripts, keyed by what the caller said (the scripted STT hears `say`). The agent profile is the
example help desk with a short greeting, plus `slow_lookup`, a tool that marks when it starts
and then takes 20 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from arq.constants import retry_key_prefix as RETRY_KEY_PREFIX

from tests.integration.devstack_support import DevRun, events, run_dev
from tests.integration.postcall_support import ROOT, TOOLS, report_json, ticket_rows
from tests.integration.stack import speech
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller
from voice_agent.devstack.processes import ManagedProcess, free_port
from voice_agent.devstack.redis_server import redis_process
from voice_agent.postcall.queue import PostCallQueue, connect, job_id_for
from voice_agent.testing.openai_script import ChatReply, ChatScript
from voice_agent.testing.scripted_openai import CHAT_PATH, SPEECH_PATH, ScriptedOpenAI

SLOW_TOOL = '''
"""A lookup that takes its time: the fault matrix kills the agent while it runs."""

import asyncio
from typing import Any

from voice_agent.tooling import ToolContext, tool


@tool(timeout=30.0)
async def slow_lookup(ctx: ToolContext, *, topic: str) -> dict[str, Any]:
    """Look a topic up in the slow archive."""
    (ctx.data_dir / f"slow-lookup-{ctx.call_id}.started").touch()
    await asyncio.sleep(20)
    return {"topic": topic, "found": True}
'''

# Short enough that every row runs in seconds, long enough to hold on a loaded 2-core machine.
FAST_ENV = {
    "VOICE_AGENT_STT": "openai",
    "VOICE_AGENT_TTS": "openai",
    "VOICE_AGENT_PROVIDER_TIMEOUT_S": "2",
    "VOICE_AGENT_USER_SILENCE_TIMEOUT_S": "20",
    "VOICE_AGENT_DRAIN_TIMEOUT_S": "5",
    "VOICE_AGENT_POSTCALL_MAX_TRIES": "2",
    "VOICE_AGENT_POSTCALL_ATTEMPT_TIMEOUT_S": "3",
    "VOICE_AGENT_POSTCALL_RETRY_MAX_S": "1",
    "VOICE_AGENT_DATABASE_TIMEOUT_S": "1",
    "VOICE_AGENT_REDIS_RETRY_MAX_S": "1",
    "VOICE_AGENT_JOURNAL_RECOVERY_INTERVAL_S": "2",
    "VOICE_AGENT_TOKEN_RATE_LIMIT": "1000/minute",
    "VOICE_AGENT_STAFF_TOKEN": "fault-matrix-staff-token-0123456789",
}
STAFF_TOKEN = FAST_ENV["VOICE_AGENT_STAFF_TOKEN"]


class RestartableRedis:
    """A Redis the test can stop and start again on its port, with its append-only data."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._root = root
        self._server: ManagedProcess | None = None

    async def start(self) -> None:
        """Start it (again) and wait until it answers."""
        self._server = redis_process(
            port=self.port, data_dir=self._root / "redis", log_file=self._root / "redis.log"
        )
        await self._server.start()
        await self._server.wait_ready(30)

    async def stop(self) -> None:
        """Stop it (SIGTERM: it flushes its append-only file first)."""
        if self._server is not None:
            await self._server.stop()
            self._server = None

    @contextlib.asynccontextmanager
    async def stopped(self) -> AsyncIterator[None]:
        """Redis down for the block."""
        await self.stop()
        try:
            yield
        finally:
            await self.start()


@dataclass
class FaultStack:
    """A running dev stack, its scripted models and Redis, and what the rows need of them."""

    dev: DevRun
    models: ScriptedOpenAI
    redis: RestartableRedis
    replies: dict[str, deque[ChatScript]] = field(default_factory=dict)
    report_replies: dict[str, deque[ChatScript]] = field(default_factory=dict)
    healthy_calls: set[str] = field(default_factory=set)  # made by `serves_a_new_call`

    @property
    def data_dir(self) -> Path:
        return self.dev.data_dir

    def script(self, say: str, *replies: ChatScript) -> None:
        """The agent's replies, in order, to a caller who says `say` (echo once they run out)."""
        self.replies[say] = deque(replies)

    def script_report(self, say: str, *replies: ChatScript) -> None:
        """The post-call model's answers, in order, for the call where the caller said `say`
        (a valid report once they run out)."""
        self.report_replies[say] = deque(replies)

    def route(self, body: Mapping[str, Any]) -> ChatScript | None:
        """The scripted server's router: reports for the post-call worker, scripts for calls."""
        said = _last_user_text(body)
        scripts = self.report_replies if body.get("response_format") else self.replies
        for key, queue in scripts.items():
            if key in said and queue:
                return queue.popleft()
        return ChatReply(text=report_json()) if body.get("response_format") else None

    async def call(
        self,
        say: str,
        *,
        before_first_turn: Callable[[], Awaitable[None]] | None = None,
        turn_timeout_s: float = 20.0,
    ) -> dict[str, Any]:
        """One simulated call through the token service: greeting, `say`, the answer."""
        self.models.default_transcript = say
        options = CallerOptions(
            url=self.dev.url,
            utterances=(await speech(say),),
            before_first_turn=before_first_turn,
            turn_timeout_s=turn_timeout_s,
        )
        return await SimulatedCaller(options=options).run()

    async def model_asked(self, say: str, *, report: bool = False, timeout_s: float = 60) -> None:
        """Wait until the agent (or, with `report`, the post-call worker) has asked the model
        about the call where the caller said `say`."""

        def asked() -> bool:
            return any(
                say in _last_user_text(r.json) and bool(r.json.get("response_format")) == report
                for r in self.models.requests_to(CHAT_PATH)
            )

        async with asyncio.timeout(timeout_s):
            while not asked():
                seen = len(self.models.requests_to(CHAT_PATH))
                await self.models.wait_for_requests(CHAT_PATH, seen + 1)

    async def stored(
        self, call_id: str, *, statuses: tuple[str, ...] = ("done", "dead"), timeout_s: float = 90
    ) -> dict[str, Any]:
        """The call as staff see it once its post-call status is one of `statuses`."""
        headers = {"Authorization": f"Bearer {STAFF_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http, asyncio.timeout(timeout_s):
            while True:
                async with http.get(f"{self.dev.url}/api/calls/{call_id}") as resp:
                    call = await resp.json() if resp.status == 200 else {}
                if call.get("status") in statuses:
                    return dict(call)
                await asyncio.sleep(0.25)

    async def calls_listed(self) -> list[str]:
        """Every call id the staff list shows."""
        headers = {"Authorization": f"Bearer {STAFF_TOKEN}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.get(f"{self.dev.url}/api/calls?limit=200") as resp,
        ):
            return [item["call_id"] for item in (await resp.json())["items"]]

    async def recorded_once(
        self, call_id: str, before: list[str], *, statuses: tuple[str, ...] = ("done", "dead")
    ) -> dict[str, Any]:
        """The call once its post-call status is final, checking it is the one record the
        store gained since `before` (the listing then)."""
        call = await self.stored(call_id, statuses=statuses)
        listed = await self.calls_listed()
        gained = [c for c in listed if c not in before and c not in self.healthy_calls]
        assert gained == [call_id], gained
        return call

    async def settle(
        self, call_id: str, before: list[str], *, statuses: tuple[str, ...] = ("done", "dead")
    ) -> dict[str, Any]:
        """The end of every row, once its fault is over: the faulted call recorded once
        (`recorded_once`), and meanwhile a new call served (`serves_a_new_call`)."""
        async with asyncio.TaskGroup() as checks:
            recorded = checks.create_task(self.recorded_once(call_id, before, statuses=statuses))
            checks.create_task(self.serves_a_new_call())
        return recorded.result()

    async def agent_said(self, text: str, *, timeout_s: float = 30) -> None:
        """Wait until the agent has asked the model to speak `text` (its reply is playing)."""
        async with asyncio.timeout(timeout_s):
            while not any(
                text in str((r.json or {}).get("input", ""))
                for r in self.models.requests_to(SPEECH_PATH)
            ):
                seen = len(self.models.requests_to(SPEECH_PATH))
                await self.models.wait_for_requests(SPEECH_PATH, seen + 1)

    async def job_tries(self, call_id: str) -> int:
        """How often arq has started the call's post-call job so far."""
        queue = PostCallQueue(redis=connect(self.redis.url))
        try:
            raw = await queue.redis.get(f"{RETRY_KEY_PREFIX}{job_id_for(call_id)}")
        finally:
            await queue.aclose()
        return int(raw or 0)

    def tickets(self, call_id: str) -> int:
        """Tickets the post-call worker filed for the call."""
        return ticket_rows(self.data_dir, call_id)

    @contextlib.contextmanager
    def store_locked(self) -> Iterator[None]:
        """The SQLite store locked by another writer (a held write transaction) for the block."""
        locker = sqlite3.connect(self.data_dir / "voice_agent.sqlite3", isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            yield
        finally:
            locker.rollback()
            locker.close()

    async def serves_a_new_call(self) -> None:
        """The check that ends every row: a fresh call is answered and reaches its report."""
        result = await self.call("Are you still there?")
        assert result["ok"], result
        self.healthy_calls.add(result["call_id"])
        assert result["turns"][0]["agent_text"] == "You said: Are you still there?"
        call = await self.stored(result["call_id"])
        assert call["status"] == "done", call.get("last_error")
        assert call["record"]["complete"]
        assert not call["report"]["needs_review"]

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """dev's and its children's log events called `name`."""
        return events(self.dev, name)


def _last_user_text(body: Mapping[str, Any] | None) -> str:
    for message in reversed((body or {}).get("messages", [])):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


def _fault_profile(root: Path) -> tuple[Path, Path]:
    """The example tools plus `slow_lookup`, and the support profile allowing it too."""
    tools = root / "tools"
    shutil.copytree(TOOLS, tools)
    (tools / "slow.py").write_text(SLOW_TOOL)
    # Where the example profile lives, so its MCP server's relative command finds root/tools/mcp.
    profile = root / "deploy" / "profiles" / "support.toml"
    profile.parent.mkdir(parents=True)
    support = (ROOT / "deploy" / "profiles" / "support.toml").read_text()
    tools_allowed = "[tools]\nallowed = ["
    assert tools_allowed in support, "the support profile's tool allowlist moved"
    support = support.replace(tools_allowed, tools_allowed + '"slow_lookup", ', 1)
    # A short greeting: every call waits for it (the scripted voice lasts as long as the text).
    greeting = next(line for line in support.splitlines() if line.startswith("greeting = "))
    profile.write_text(support.replace(greeting, 'greeting = "Help desk, hello."', 1))
    return tools, profile


@contextlib.asynccontextmanager
async def fault_stack(root: Path, **extra_env: str) -> AsyncIterator[FaultStack]:
    """The dev stack with a test-held Redis and scripted models, ready for a fault."""
    redis = RestartableRedis(root)
    await redis.start()
    tools, profile = _fault_profile(root)
    models = ScriptedOpenAI()
    try:
        async with models:
            env = {
                **FAST_ENV,
                "OPENAI_BASE_URL": models.base_url,
                "REDIS_URL": redis.url,
                "VOICE_AGENT_TOOLS_PATH": str(tools),
                "VOICE_AGENT_PROFILE": str(profile),
                **extra_env,
            }
            async with run_dev(root, **env) as dev:
                stack = FaultStack(dev=dev, models=models, redis=redis)
                models.chat_router = stack.route
                yield stack
    finally:
        await redis.stop()
