"""`voice-agent chat`: talk to the agent profile in the terminal.

Lines typed on standard input are the caller's words; the agent's answers, the tools it ran and
the client actions it sent are printed. A destructive tool asks in the terminal (y or n, within
`VOICE_AGENT_CONFIRM_TIMEOUT_S`; no answer in time is a no). `/quit` or end of input ends the
session; its record is written (or handed to the post-call queue) as the call's.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from voice_agent.agent.call_tools import ToolKit
from voice_agent.agent.options import session_options
from voice_agent.agent.text_session import TextReply, TextSession
from voice_agent.call_record import CallRecordSink
from voice_agent.profile import AgentProfile
from voice_agent.providers.factory import build_llm
from voice_agent.settings import Settings
from voice_agent.tooling import ConfirmationAnswer

_QUIT = frozenset({"/quit", "/exit", "/bye"})
_YES = frozenset({"y", "yes"})
_NO = frozenset({"n", "no"})


class TerminalLines:
    """Lines of a text stream, read by a daemon thread so that waiting for one can time out
    without losing it (a confirmation that timed out leaves the next line for the chat)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._eof = False
        threading.Thread(target=self._read, name="terminal-lines", daemon=True).start()

    def _read(self) -> None:
        for line in self._stream:
            self._loop.call_soon_threadsafe(self._lines.put_nowait, line.rstrip("\r\n"))
        self._loop.call_soon_threadsafe(self._lines.put_nowait, None)

    async def read(self) -> str | None:
        """The next line; None at the end of input."""
        if self._eof:
            return None
        line = await self._lines.get()
        self._eof = line is None
        return line


class TerminalConfirmations:
    """Asks the person at the terminal: y or n, within the timeout."""

    hint = "Please answer y or n."
    available = True

    def __init__(self, lines: TerminalLines, write: Callable[[str], None]) -> None:
        self._lines = lines
        self._write = write

    async def ask(self, *, prompt: str, tool: str, timeout_s: float) -> ConfirmationAnswer:
        """Ask until a y or n comes, or the time is up."""
        self._write(f"confirm {tool}: {prompt} [y/n, {timeout_s:g} s]")
        try:
            async with asyncio.timeout(timeout_s):
                while (line := await self._lines.read()) is not None:
                    answer = line.strip().lower()
                    if answer in _YES:
                        return "confirmed"
                    if answer in _NO:
                        return "declined"
                    self._write("please answer y or n")
        except TimeoutError:
            self._write("no answer in time: not confirmed")
            return "timeout"
        return "declined"  # the input ended


def _print_reply(write: Callable[[str], None], reply: TextReply) -> None:
    for entry in reply.tool_audit:
        extra = f", {entry.confirmation}" if entry.confirmation != "not_needed" else ""
        write(f"  [tool {entry.tool}: {entry.outcome}{extra}]")
    write(f"agent: {reply.text}")


def _print_action(write: Callable[[str], None], message: dict[str, Any]) -> None:
    write(f"  [app {message.get('action')}: {message.get('payload')}]")


async def run_chat(
    settings: Settings,
    profile: AgentProfile,
    *,
    sink: CallRecordSink,
    journal_dir: Path,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Chat until `/quit` or the end of input; 0 once the record is handed over."""
    out = stdout or sys.stdout

    def write(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    lines = TerminalLines(stdin or sys.stdin)
    llm = build_llm(settings)
    kit = await ToolKit.open(settings, profile)
    try:
        session = TextSession(
            options=session_options(settings, profile),
            profile=profile,
            llm=llm,
            kit=kit,
            sink=sink,
            journal_dir=journal_dir,
            confirmations=TerminalConfirmations(lines, write),
            user_id="terminal",
            on_action=lambda message: _print_action(write, message),
            on_reply=lambda reply: _print_reply(write, reply),
        )
        write(f"call {session.call_id} with profile {profile.name} (/quit to end)")
        write(f"agent: {session.greet()}")
        try:
            while session.ended is None and (line := await lines.read()) is not None:
                text = line.strip()
                if text in _QUIT:
                    break
                if text:
                    _print_reply(write, await session.send(text))
        except asyncio.CancelledError:  # Ctrl-C: the call is still recorded
            await session.close("interrupted")
            raise
        record = await session.close()
        write(f"call {record.call_id} ended ({record.end_reason}): {len(record.transcript)} turns")
    finally:
        await kit.aclose()
        await llm.aclose()
    return 0
