"""A whole deployment on loopback, every part twice: two LiveKit nodes in multi-node mode on one
Redis, two token services, two agent workers, two post-call workers, PostgreSQL for the store
and the tool ledger, and the scripted models in this process. The cluster test and the cluster
benchmark both run it.

Each of our parts is a real `voice-agent` process with its own data dir (as if on its own host)
and its own JSON log file, which the test reads to see which worker took a call. Part `x` of a
pair talks to LiveKit node `x`: token service `a` hands out node a's URL, worker `a` registers
through node a. Which node holds a room and which worker gets its job is LiveKit's choice:

- a room is placed when its first participant joins, by the node selector, whichever node the
  participant connected to; the other node relays that participant's signalling to it over
  Redis, and its media goes straight to the room's node (whose ICE candidates the client gets);
- the job goes to the node whose workers have the most spare load (each node answers with the
  sum of `target_load - load` of its available workers; psrpc takes the highest within 200 ms of
  the first answer), then to one of that node's workers at random, weighted by spare load.

The nodes select by room count (`NODE_SELECTOR`), so calls that overlap spread over them; with
LiveKit's default (`sort_by: random`) ten calls would split 3:7 or worse one run in nine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp

from tests.helpers import strip_project_env
from tests.postgres_cluster import INSTALL_HINT, PostgresCluster, find_postgres_bin
from voice_agent.caller.audio import Utterance
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller
from voice_agent.devstack.livekit_server import (
    LiveKitEndpoint,
    find_livekit_server,
    livekit_process,
    new_key_pair,
)
from voice_agent.devstack.processes import ManagedProcess, free_port, free_udp_range
from voice_agent.devstack.redis_server import redis_process
from voice_agent.postcall.queue import connect, worker_alive
from voice_agent.testing.openai_script import ChatReply, ChatScript
from voice_agent.testing.scripted_openai import ScriptedOpenAI

ROOT = Path(__file__).resolve().parents[1]
PAIR = ("a", "b")
STAFF_TOKEN = "cluster-staff-token-0123456789abcdef"
GREETING = "Hello."
# Rooms go to the node holding the fewest; with two nodes `twochoice` compares both.
NODE_SELECTOR = {"kind": "any", "sort_by": "rooms", "algorithm": "twochoice"}

# Short enough that the cluster runs in minutes, long enough to hold on a loaded 2-core machine.
CLUSTER_ENV = {
    "VOICE_AGENT_STT": "openai",
    "VOICE_AGENT_TTS": "openai",
    "VOICE_AGENT_GREETING": GREETING,
    "VOICE_AGENT_PROVIDER_TIMEOUT_S": "5",
    "VOICE_AGENT_USER_SILENCE_TIMEOUT_S": "30",
    "VOICE_AGENT_MAX_JOBS": "2",
    "VOICE_AGENT_DRAIN_TIMEOUT_S": "60",
    "VOICE_AGENT_JOURNAL_RECOVERY_INTERVAL_S": "2",
    "VOICE_AGENT_POSTCALL_MAX_TRIES": "3",
    "VOICE_AGENT_POSTCALL_RETRY_MAX_S": "1",
    "VOICE_AGENT_POSTCALL_ATTEMPT_TIMEOUT_S": "10",
    "VOICE_AGENT_REDIS_RETRY_MAX_S": "1",
    "VOICE_AGENT_TOKEN_RATE_LIMIT": "10/minute",
    # The token services stand behind a load balancer, which names the client.
    "VOICE_AGENT_TRUST_FORWARDED_FOR": "true",
    "VOICE_AGENT_STAFF_TOKEN": STAFF_TOKEN,
    "VOICE_AGENT_LOG_FORMAT": "json",
}

REPORT = {
    "summary": "The caller asked for the opening hours.",
    "action_items": [{"text": "Send the opening hours by email.", "owner": "support"}],
    "email_draft": {"subject": "Our opening hours", "body": "Hello,\n\nWe open at nine."},
    "resolution_status": "resolved",
    "sentiment": "neutral",
    "ticket": {
        "title": "Opening hours",
        "priority": "low",
        "category": "general",
        "description": "The caller asked when we open.",
    },
    "confidence": 0.9,
}


def _report_router(body: Mapping[str, Any]) -> ChatScript | None:
    """Post-call report requests get a valid report; the agent's turns the default echo."""
    return ChatReply(text=json.dumps(REPORT)) if body.get("response_format") else None


@dataclass
class Part:
    """One of our processes: its name, the LiveKit node it talks to, where it logs."""

    name: str
    process: ManagedProcess
    log_file: Path
    data_dir: Path
    port: int
    node: str | None = None

    def events(self, event: str) -> list[dict[str, Any]]:
        """Its JSON log events called `event`, oldest first."""
        return log_events(self.log_file, event)

    def calls_taken(self) -> set[str]:
        """The call ids whose jobs this worker accepted."""
        return {e["call_id"] for e in self.events("worker.job_offered") if e.get("accepted")}


@dataclass
class Node:
    """One LiveKit node of the cluster."""

    name: str
    endpoint: LiveKitEndpoint
    process: ManagedProcess
    log_file: Path


@dataclass(frozen=True)
class NodeState:
    """What a LiveKit node publishes about itself in Redis (`nodes` hash, a `livekit.Node`)."""

    node_id: str
    region: str
    state: int  # NodeState: 1 serving, 2 shutting down
    num_rooms: int

    @classmethod
    def parse(cls, data: bytes) -> NodeState:
        """Decode the fields we read (livekit-protocol's Python package lacks `Node`)."""
        node = _proto_fields(data)
        stats = _proto_fields(_field_bytes(node, 4))
        return cls(
            node_id=_field_bytes(node, 1).decode(),
            region=_field_bytes(node, 7).decode(),
            state=_field_int(node, 6),
            num_rooms=_field_int(stats, 3),
        )


def _field_bytes(fields: dict[int, int | bytes], number: int) -> bytes:
    value = fields.get(number, b"")
    return value if isinstance(value, bytes) else b""


def _field_int(fields: dict[int, int | bytes], number: int) -> int:
    value = fields.get(number, 0)
    return value if isinstance(value, int) else 0


def _proto_fields(data: bytes) -> dict[int, int | bytes]:
    """A protobuf message's fields by number (last one wins): varints and length-delimited."""
    fields: dict[int, int | bytes] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields[number] = varint()
        elif wire == 2:
            size = varint()
            fields[number] = data[i : i + size]
            i += size
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return fields


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def log_events(path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log events called `event` in the file at `path`, oldest first."""
    found = []
    for line in _lines(path):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == event:
                found.append(entry)
    return found


@dataclass
class Cluster:
    """The running cluster and what tests and the benchmark need of it."""

    root: Path
    models: ScriptedOpenAI
    redis_url: str
    database_url: str
    api_key: str
    api_secret: str
    env: dict[str, str] = field(default_factory=dict)  # over CLUSTER_ENV, for every part
    engine_pids: dict[str, int] = field(default_factory=dict)  # redis, postgres
    nodes: dict[str, Node] = field(default_factory=dict)
    tokens: dict[str, Part] = field(default_factory=dict)
    workers: dict[str, Part] = field(default_factory=dict)
    postcall: dict[str, Part] = field(default_factory=dict)
    _clients: Iterator[int] = field(default_factory=lambda: iter(range(1, 1 << 30)))

    # Starting and stopping parts

    def _env(self, name: str, node: str | None, **extra: str) -> dict[str, str]:
        env = strip_project_env(dict(os.environ))
        env.update(CLUSTER_ENV)
        env.update(self.env)
        env.update(
            LIVEKIT_API_KEY=self.api_key,
            LIVEKIT_API_SECRET=self.api_secret,
            REDIS_URL=self.redis_url,
            OPENAI_BASE_URL=self.models.base_url,
            OPENAI_API_KEY="sk-cluster-test",
            VOICE_AGENT_DATABASE_URL=self.database_url,
            VOICE_AGENT_DATA_DIR=str(self.root / name / "data"),
            VOICE_AGENT_TOOLS_PATH=str(self.root / "no-tools"),
        )
        if node is not None:
            env["LIVEKIT_URL"] = self.nodes[node].endpoint.ws_url
        env.update(extra)
        return env

    def _part(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        ready: Callable[[], Awaitable[bool]],
        *,
        port: int,
        node: str | None,
    ) -> Part:
        log_file = self.root / name / "log.jsonl"
        process = ManagedProcess(
            name=name,
            argv=[sys.executable, "-m", "voice_agent", *argv],
            env=env,
            cwd=ROOT,
            ready=ready,
            log_file=log_file,
            ready_probe_timeout_s=3.0,
        )
        return Part(
            name=name,
            process=process,
            log_file=log_file,
            data_dir=self.root / name / "data",
            port=port,
            node=node,
        )

    async def start_node(self, name: str, webhook_url: str) -> Node:
        """LiveKit node `name` in multi-node mode on the cluster's Redis."""
        endpoint = LiveKitEndpoint(
            port=free_port(), api_key=self.api_key, api_secret=self.api_secret
        )
        log_file = self.root / f"livekit-{name}.log"
        process = livekit_process(
            binary=find_livekit_server(),
            endpoint=endpoint,
            udp_range=free_udp_range(),  # each node its own: both advertise 127.0.0.1
            webhook_url=webhook_url,
            log_file=log_file,
            name=f"livekit-{name}",
            overrides={
                "redis": {"address": self.redis_url.removeprefix("redis://").split("/")[0]},
                "region": f"node-{name}",
                "node_selector": NODE_SELECTOR,
                # A room closes 1 s after its last participant leaves (the dev config: 10 s).
                "room": {"auto_create": True, "empty_timeout": 60, "departure_timeout": 1},
            },
        )
        node = Node(name=name, endpoint=endpoint, process=process, log_file=log_file)
        self.nodes[name] = node
        await process.start()
        await process.wait_ready(60)
        return node

    def token_service(self, name: str, node: str, port: int) -> Part:
        """Token service `name` (`voice-agent serve`), handing out node `node`'s URL."""
        env = self._env(f"token-{name}", node, VOICE_AGENT_PORT=str(port))

        async def ready() -> bool:
            return await _http_ok(f"http://127.0.0.1:{port}/readyz")

        part = self._part(f"token-{name}", ["serve"], env, ready, port=port, node=node)
        self.tokens[name] = part
        return part

    def worker(self, name: str, node: str) -> Part:
        """Agent worker `name` (`voice-agent worker`), registering through node `node`."""
        port = free_port()
        env = self._env(f"worker-{name}", node, VOICE_AGENT_WORKER_METRICS_PORT=str(port))

        async def ready() -> bool:  # 200 once registered with LiveKit
            return await _http_ok(f"http://127.0.0.1:{port}/healthz")

        part = self._part(f"worker-{name}", ["worker"], env, ready, port=port, node=node)
        self.workers[name] = part
        return part

    def postcall_worker(self, name: str) -> Part:
        """Post-call worker `name` (`voice-agent postcall`)."""
        env = self._env(f"postcall-{name}", None)
        holder: list[Part] = []

        async def ready() -> bool:  # it refreshes its health key in Redis while it polls
            pid = holder[0].process.pid
            return pid is not None and await worker_alive(self.redis_url, pid)

        part = self._part(f"postcall-{name}", ["postcall"], env, ready, port=0, node=None)
        holder.append(part)
        self.postcall[name] = part
        return part

    async def start_parts(self, parts: list[Part]) -> None:
        """Start `parts` together and wait until each is ready."""
        for part in parts:
            await part.process.start()
        await asyncio.gather(*(p.process.wait_ready(120) for p in parts))

    async def worker_health(self, name: str) -> dict[str, Any]:
        """Worker `name`'s `/healthz` body ({} when it does not answer)."""
        url = f"http://127.0.0.1:{self.workers[name].port}/healthz"
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
                http.get(url) as resp,
            ):
                return dict(await resp.json())
        return {}

    def signal_worker(self, name: str, sig: signal.Signals) -> None:
        """Send `sig` to worker `name` (the process itself, as an orchestrator would)."""
        pid = self.workers[name].process.pid
        assert pid is not None, f"worker {name} is not running"
        os.kill(pid, sig)

    # Calls

    async def token(self, via: str, *, client: str | None = None) -> tuple[int, dict[str, Any]]:
        """Ask token service `via` for a voice token as client `client` (X-Forwarded-For, as the
        load balancer names it; a fresh one each call by default); status and body."""
        address = client or f"198.51.100.{next(self._clients) % 250 + 1}"
        url = f"http://127.0.0.1:{self.tokens[via].port}/api/voice-token"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.post(
                url, json={"display_name": "cluster caller"}, headers={"X-Forwarded-For": address}
            ) as resp,
        ):
            return resp.status, dict(await resp.json(content_type=None))

    async def call(
        self,
        via: str,
        utterance: Utterance,
        *more: Utterance,
        before_first_turn: Callable[[], Awaitable[None]] | None = None,
        turn_timeout_s: float = 20.0,
        grant: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One call: a token from token service `via` (unless `grant` is one), then the
        greeting, and for `utterance` and each of `more` the agent's answer."""
        if grant is None:
            status, grant = await self.token(via)
            assert status == 200, grant
        options = CallerOptions(
            url=f"http://127.0.0.1:{self.tokens[via].port}",
            utterances=(utterance, *more),
            grant=grant,
            before_first_turn=before_first_turn,
            turn_timeout_s=turn_timeout_s,
            listen_audio=True,
        )
        return await SimulatedCaller(options=options).run()

    # Where calls went

    async def node_states(self) -> dict[str, NodeState]:
        """Each node's state as LiveKit shares it in Redis (its last stats, every 2 s)."""
        redis = connect(self.redis_url)
        try:
            raw = await cast("Awaitable[list[bytes]]", redis.hvals("nodes"))
        finally:
            await redis.aclose()
        states = [NodeState.parse(value) for value in raw]
        return {s.region.removeprefix("node-"): s for s in states}

    async def node_of_room(self, room: str) -> str | None:
        """The name of the node LiveKit placed `room` on (None when no node holds it)."""
        redis = connect(self.redis_url)
        try:
            node_id = await cast("Awaitable[bytes | None]", redis.hget("room_node_map", room))
        finally:
            await redis.aclose()
        if node_id is None:
            return None
        wanted = node_id.decode()
        states = await self.node_states()
        return next((name for name, s in states.items() if s.node_id == wanted), None)

    async def wait_for_rooms(self, total: int, *, timeout_s: float = 30) -> dict[str, int]:
        """Wait until the nodes' shared stats count `total` rooms in all; rooms per node."""
        deadline = time.monotonic() + timeout_s
        while True:
            rooms = {name: s.num_rooms for name, s in (await self.node_states()).items()}
            if sum(rooms.values()) == total:
                return rooms
            if time.monotonic() > deadline:
                raise AssertionError(f"the nodes never counted {total} rooms: {rooms}")
            await asyncio.sleep(0.1)

    def node_that_held(self, room: str) -> str | None:
        """The node that ran `room`'s sessions (from the nodes' logs: it outlives the room)."""
        for name, node in self.nodes.items():
            for line in _lines(node.log_file):
                if '"msg":"starting RTC session"' in line and f'"room":"{room}"' in line:
                    return name
        return None

    def worker_of_call(self, call_id: str) -> str | None:
        """The worker that accepted the call's job (from the workers' logs)."""
        return next((n for n, w in self.workers.items() if call_id in w.calls_taken()), None)

    async def stored(
        self, call_id: str, *, via: str | None = None, timeout_s: float = 90
    ) -> dict[str, Any]:
        """The call as staff see it once its post-call status is done or dead."""
        port = self.tokens[via or next(iter(self.tokens))].port
        headers = {"Authorization": f"Bearer {STAFF_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http, asyncio.timeout(timeout_s):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/api/calls/{call_id}") as resp:
                        call = await resp.json() if resp.status == 200 else {}
                    if call.get("status") in ("done", "dead"):
                        return dict(call)
                await asyncio.sleep(0.25)

    async def calls_listed(self, *, via: str | None = None) -> list[str]:
        """Every call id in the store, one entry per record."""
        port = self.tokens[via or next(iter(self.tokens))].port
        headers = {"Authorization": f"Bearer {STAFF_TOKEN}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.get(f"http://127.0.0.1:{port}/api/calls?limit=200") as resp,
        ):
            return [item["call_id"] for item in (await resp.json())["items"]]

    async def stop(self) -> None:
        """Stop every part (ours first, then LiveKit)."""
        ours = [*self.tokens.values(), *self.workers.values(), *self.postcall.values()]
        await asyncio.gather(*(p.process.stop(grace_s=5) for p in ours))
        await asyncio.gather(*(n.process.stop(grace_s=5) for n in self.nodes.values()))


async def _http_ok(url: str) -> bool:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
        http.get(url) as resp,
    ):
        return resp.status == 200


@contextlib.asynccontextmanager
async def running_cluster(
    root: Path, *, postcall_workers: int = 2, env: Mapping[str, str] | None = None
) -> AsyncIterator[Cluster]:
    """The whole cluster, started and ready (`env` over `CLUSTER_ENV`); stopped at the end."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise RuntimeError(INSTALL_HINT)
    (root / "no-tools").mkdir(parents=True, exist_ok=True)
    redis_port = free_port()
    redis = redis_process(port=redis_port, data_dir=None, log_file=root / "redis.log")
    postgres = PostgresCluster(bin_dir, root / "postgres.log")
    await redis.start()
    try:
        await redis.wait_ready(30)
        await asyncio.to_thread(postgres.init)
        await asyncio.to_thread(postgres.start)
        async with ScriptedOpenAI(chat_router=_report_router) as models:
            key, secret = new_key_pair()
            cluster = Cluster(
                root=root,
                models=models,
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
                database_url=postgres.url,
                api_key=key,
                api_secret=secret,
                env=dict(env or {}),
            )
            assert redis.pid is not None
            assert postgres.proc is not None
            cluster.engine_pids = {"redis": redis.pid, "postgres": postgres.proc.pid}
            try:
                token_ports = {name: free_port() for name in PAIR}
                for name in PAIR:
                    hook = f"http://127.0.0.1:{token_ports[name]}/webhooks/livekit"
                    await cluster.start_node(name, hook)
                parts = [cluster.token_service(n, n, token_ports[n]) for n in PAIR]
                parts += [cluster.worker(n, n) for n in PAIR]
                parts += [cluster.postcall_worker(str(i + 1)) for i in range(postcall_workers)]
                await cluster.start_parts(parts)
                yield cluster
            finally:
                await cluster.stop()
    finally:
        await asyncio.to_thread(postgres.remove)
        await redis.stop()
