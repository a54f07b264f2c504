"""Conversation tests judge what they claim: a failing check fails, a judge without a model key
is skipped and said so, a judge with one decides, and the command's exit code follows."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import make_settings, strip_project_env
from voice_agent.testing.openai_script import ChatReply
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI
from voice_agent.textmode.runner import FileReport, print_report, run_file

ROOT = Path(__file__).resolve().parents[2]
HEADER = f"""
profile = "{ROOT / "deploy" / "profiles" / "support.toml"}"
tools_path = "{ROOT / "tools"}"
"""
INCIDENT_TURN = """
[[turns]]
user = "What is the status of incident 1042?"
[[turns.model]]
tool_calls = [{ name = "get_incident_status", arguments = { incident_id = "INC-1042" } }]
[[turns.model]]
text = "Incident 1042 is being investigated."
"""


def write(tmp_path: Path, expect: str, name: str = "conversation.toml") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + INCIDENT_TURN + "[turns.expect]\n" + expect, encoding="utf-8")
    return path


def printed(report: FileReport) -> str:
    lines: list[str] = []
    print_report(report, lines.append)
    return "\n".join(lines)


async def test_a_reply_check_that_does_not_hold_fails_and_shows_the_transcript(
    tmp_path: Path,
) -> None:
    """A substring the reply lacks fails the file; the report shows the transcript."""
    path = write(tmp_path, 'reply_contains = ["resolved"]\nreply_matches = ["1042"]\n')
    report = await run_file(path, make_settings())
    assert not report.passed
    assert [(c.name, c.status) for c in report.checks] == [
        ("reply contains 'resolved'", "fail"),
        ("reply matches /1042/", "pass"),
    ]
    text = printed(report)
    assert text.startswith(f"FAIL {path}")
    assert "  transcript:" in text
    assert "    agent: Incident 1042 is being investigated." in text
    assert "    user: What is the status of incident 1042?" in text


async def test_an_expected_tool_call_that_was_not_made_fails(tmp_path: Path) -> None:
    """Expecting a tool the agent did not call (or other arguments) fails."""
    path = write(
        tmp_path,
        'tools = [{ name = "get_incident_status", arguments = { incident_id = "INC-9" } },'
        ' { name = "create_ticket" }]\n',
    )
    report = await run_file(path, make_settings())
    assert [c.status for c in report.checks] == ["fail", "fail"]
    assert "get_incident_status (ok)" in report.checks[0].detail


async def test_a_judge_without_a_model_key_is_skipped_and_said_so(tmp_path: Path) -> None:
    """No key: the judge is a skip with the reason, never a pass; other checks still count."""
    path = write(tmp_path, 'judge = "The agent gives the status."\n')
    report = await run_file(path, make_settings(openai_api_key=None))
    [check] = report.checks
    assert check.status == "skip"
    assert "OPENAI_API_KEY" in check.detail
    assert "  SKIP turn 1: judge: The agent gives the status." in printed(report)


@pytest.mark.parametrize(("verdict", "status"), [("PASS. It does.", "pass"), ("FAIL: no", "fail")])
async def test_a_judge_with_a_model_key_decides_the_check(
    tmp_path: Path, verdict: str, status: str
) -> None:
    """With a key, the configured model reads the transcript and its first word decides."""
    path = write(tmp_path, 'judge = "The agent gives the status."\n')
    async with ScriptedOpenAI(chat=[ChatReply(text=verdict)]) as judge:
        settings = make_settings(openai_api_key="test", openai_base_url=judge.base_url)
        report = await run_file(path, settings)
        [asked] = judge.requests_to(CHAT_PATH)
    [check] = report.checks
    assert check.status == status
    question = asked.json["messages"][-1]["content"]
    assert "agent: Incident 1042 is being investigated." in question
    assert "Criterion: The agent gives the status." in question


async def test_an_invalid_file_is_an_error_naming_the_problem(tmp_path: Path) -> None:
    """A file the format does not allow fails with a message saying where."""
    path = write(tmp_path, 'reply_contians = ["x"]\n')
    report = await run_file(path, make_settings())
    assert not report.passed
    assert report.error is not None
    assert "turns.0.expect.reply_contians" in report.error


async def _voice_agent_test(*paths: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voice_agent",
        "test",
        *map(str, paths),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=strip_project_env(dict(os.environ)),
        cwd=ROOT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_command_exits_non_zero_when_a_check_fails(tmp_path: Path) -> None:
    """`voice-agent test` exits 1 when any file fails, and prints each file's verdict."""
    good = write(tmp_path, 'reply_contains = ["investigated"]\n', name="good.toml")
    bad = write(tmp_path, 'reply_contains = ["resolved"]\n', name="bad.toml")
    code, output = await _voice_agent_test(good, bad)
    assert code == 1, output
    assert f"PASS {good}" in output
    assert f"FAIL {bad}" in output
    assert "2 conversations: 1 passed, 1 failed" in output
    code, output = await _voice_agent_test(good)
    assert code == 0, output
