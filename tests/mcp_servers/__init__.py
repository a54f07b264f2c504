"""Real MCP servers for the tests, and what a test needs to drive them.

`orders_mcp.py` runs as a subprocess, over stdio (started by the code under test, from a profile
entry `orders_stdio` makes) or over streamable HTTP (`HttpOrdersServer`, started by the test on a
free loopback port, so the test can kill it and bring it back). Both write a `Journal`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from voice_agent.devstack.processes import free_port
from voice_agent.profile import McpServerConfig

ORDERS_MCP = Path(__file__).with_name("orders_mcp.py")
TOKEN_ENV = "TEST_ORDERS_MCP_TOKEN"  # what the profile's headers_env names in these tests


class Journal:
    """The JSON lines a test server appends: starts, calls and refunds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """The events named `event` (all when None) whose fields equal `match`."""
        if not self.path.is_file():
            return []
        entries = [json.loads(line) for line in self.path.read_text().splitlines()]
        return [
            e
            for e in entries
            if (event is None or e["event"] == event)
            and all(e.get(k) == v for k, v in match.items())
        ]

    def calls(self, tool: str, **match: Any) -> list[dict[str, Any]]:
        """The calls of one tool that reached the server (with fields equal to `match`)."""
        return self.events("call", tool=tool, **match)

    async def wait_for(
        self, predicate: Callable[[Journal], bool], *, timeout_s: float = 15.0
    ) -> None:
        """Poll the file until `predicate` holds (the server is another process)."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self):  # noqa: ASYNC110 - another process writes the file
                await asyncio.sleep(0.02)

    def pids(self) -> list[int]:
        """The process ids of every server start, in order."""
        return [e["pid"] for e in self.events("started")]


def orders_stdio(journal: Journal, *, name: str = "orders", **config: Any) -> McpServerConfig:
    """A profile entry that starts the orders server over stdio."""
    command = ("python", str(ORDERS_MCP), "--journal", str(journal.path))
    return McpServerConfig(name=name, command=command, **config)


class HttpOrdersServer:
    """The orders server over streamable HTTP on a loopback port, started and killed here."""

    def __init__(self, journal: Journal, *, token: str | None = None) -> None:
        self.journal = journal
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._token = token
        self._process: asyncio.subprocess.Process | None = None

    def config(self, *, name: str = "orders", **config: Any) -> McpServerConfig:
        """A profile entry for this server (the bearer token through TOKEN_ENV when set)."""
        headers = {"Authorization": TOKEN_ENV} if self._token else {}
        return McpServerConfig(name=name, url=self.url, headers_env=headers, **config)

    async def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        env = dict(os.environ)
        if self._token:
            env["ORDERS_MCP_EXPECTED_TOKEN"] = self._token
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ORDERS_MCP),
            "--journal",
            str(self.journal.path),
            "--http",
            str(self.port),
            env=env,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(30):
            while True:
                if self._process.returncode is not None:
                    raise RuntimeError(f"orders_mcp.py exited with {self._process.returncode}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def kill(self) -> None:
        """SIGKILL the server and reap it."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)
            await self._process.wait()
        self._process = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.kill()


def kill_pid(pid: int) -> None:
    """SIGKILL a server the code under test started (its pid from the journal)."""
    os.kill(pid, signal.SIGKILL)
