"""`voice-agent chat` as a user runs it: a real subprocess on the example profile and tools.

The model is the scripted OpenAI-compatible server; the profile's MCP server really starts; the
person at the terminal is the subprocess's standard input.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from tests.helpers import strip_project_env
from voice_agent.call_record import CallRecord
from voice_agent.testing.openai_script import ChatReply, ScriptedToolCall
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI
from voice_agent.tooling.tickets import TicketStore

ROOT = Path(__file__).resolve().parents[2]
TICKET = ScriptedToolCall(
    name="create_ticket",
    arguments=json.dumps(
        {"title": "VPN down", "description": "It fails since this morning.", "priority": "high"}
    ),
)


def _env(server: ScriptedOpenAI, data_dir: Path) -> dict[str, str]:
    return strip_project_env(dict(os.environ)) | {
        "OPENAI_API_KEY": "test",
        "OPENAI_BASE_URL": server.base_url,
        "VOICE_AGENT_PROFILE": str(ROOT / "deploy" / "profiles" / "support.toml"),
        "VOICE_AGENT_TOOLS_PATH": str(ROOT / "tools"),
        "VOICE_AGENT_DATA_DIR": str(data_dir),
    }


async def _start_chat(server: ScriptedOpenAI, data_dir: Path) -> asyncio.subprocess.Process:
    """`voice-agent chat` as a subprocess, its three streams piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voice_agent",
        "chat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(server, data_dir),
        cwd=ROOT,
    )


async def _chat(server: ScriptedOpenAI, data_dir: Path, typed: str) -> tuple[int, str]:
    """Run `voice-agent chat` with `typed` as its input; exit code and output."""
    process = await _start_chat(server, data_dir)
    out, err = await asyncio.wait_for(process.communicate(typed.encode()), 60)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


def _record(data_dir: Path) -> CallRecord:
    [path] = (data_dir / "chat" / "records").glob("*.json")
    return CallRecord.model_validate_json(path.read_text())


async def test_chat_runs_a_confirmed_tool_and_keeps_the_record(tmp_path: Path) -> None:
    """Typed words reach the model with the profile's tools; "y" confirms the ticket, which
    is created once; the record (typed turns, audit) is written under the data dir."""
    server = ScriptedOpenAI(
        chat=[
            ChatReply(text="I'll open a ticket.", tool_calls=[TICKET]),
            ChatReply(text="Your ticket is open."),
        ]
    )
    async with server:
        code, output = await _chat(server, tmp_path, "My VPN is down, open a ticket.\ny\n/quit\n")
    assert code == 0, output
    assert "confirm create_ticket: Open a high priority support ticket titled 'VPN down'?" in output
    assert "[tool create_ticket: ok, confirmed]" in output
    assert "agent: I'll open a ticket. Open a high priority" in output
    assert output.count("Your ticket is open.") == 1
    first = server.requests_to(CHAT_PATH)[0].json
    assert "accounts__get_account_status" in {t["function"]["name"] for t in first["tools"]}
    assert first["messages"][-1] == {"role": "user", "content": "My VPN is down, open a ticket."}
    assert [t.title for t in TicketStore.in_data_dir(tmp_path).tickets()] == ["VPN down"]
    record = _record(tmp_path)
    assert [(a.tool, a.outcome, a.confirmation) for a in record.tool_audit] == [
        ("create_ticket", "ok", "confirmed")
    ]
    assert [(t.speaker, t.typed) for t in record.transcript] == [
        ("agent", False),
        ("user", True),
        ("agent", False),
    ]
    assert record.end_reason == "user_left"
    assert record.usage.llm_requests == 2


async def test_chat_answer_no_declines_the_tool(tmp_path: Path) -> None:
    """Answering n at the terminal: nothing is created and the audit says declined."""
    server = ScriptedOpenAI(
        chat=[
            ChatReply(text="I'll open a ticket.", tool_calls=[TICKET]),
            ChatReply(text="Okay, I did not open it."),
        ]
    )
    async with server:
        code, output = await _chat(server, tmp_path, "Open a ticket.\nn\n")
    assert code == 0, output
    assert TicketStore.in_data_dir(tmp_path).tickets() == []
    assert [(a.outcome, a.confirmation) for a in _record(tmp_path).tool_audit] == [
        ("declined", "declined")
    ]


async def test_ctrl_c_ends_the_chat_and_still_records_the_call(tmp_path: Path) -> None:
    """SIGINT while waiting for input: exit 130, and the record says "interrupted"."""
    async with ScriptedOpenAI() as server:
        process = await _start_chat(server, tmp_path)
        assert process.stdout is not None
        async with asyncio.timeout(60):
            while b"agent: Hi, this is" not in await process.stdout.readline():
                pass
            process.send_signal(signal.SIGINT)
            code = await process.wait()
    assert code == 130
    assert _record(tmp_path).end_reason == "interrupted"
