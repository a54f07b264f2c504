"""Judging one run of a conversation test: each expectation of each turn passes, fails or is
skipped (a judge prompt without a model key: said so, never counted as a pass)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from voice_agent.chat import ChatMessage
from voice_agent.providers.base import LLM
from voice_agent.textmode.conversations import ExpectedTool, Turn
from voice_agent.tooling.audit import ToolAuditEntry

CheckStatus = Literal["pass", "fail", "skip"]

_JUDGE_INSTRUCTIONS = (
    "You check a conversation between a caller and a voice agent against one criterion. "
    "Answer PASS or FAIL as the first word, then one short sentence saying why."
)


@dataclass(frozen=True)
class CheckResult:
    """One expectation of one turn, judged."""

    turn: int
    name: str
    status: CheckStatus
    detail: str = ""


@dataclass
class TurnRun:
    """What one turn produced: the agent's words and the tool requests it made."""

    user: str
    agent_text: str
    tool_audit: list[ToolAuditEntry] = field(default_factory=list)


def check_turn(number: int, turn: Turn, run: TurnRun) -> list[CheckResult]:
    """Every expectation of `turn` but the judge, against what it produced."""
    expect = turn.expect
    results: list[CheckResult] = []

    def add(name: str, ok: bool, detail: str = "") -> None:
        results.append(CheckResult(number, name, "pass" if ok else "fail", "" if ok else detail))

    audit = run.tool_audit
    made = ", ".join(f"{a.tool} ({a.outcome})" for a in audit) or "none"
    start = 0
    for expected in expect.tools:
        found = next((i for i in range(start, len(audit)) if _matches(expected, audit[i])), None)
        add(_describe(expected), found is not None, f"tool requests: {made}")
        if found is not None:
            start = found + 1
    if expect.no_tools:
        add("no tool requests", not audit, f"tool requests: {made}")
    for name in expect.refused:
        refused = any(_same_tool(name, a.tool) and a.outcome == "refused" for a in audit)
        add(f"tool {name} refused", refused, f"tool requests: {made}")
    text = run.agent_text
    quoted = f"reply: {text!r}"
    for part in expect.reply_contains:
        add(f"reply contains {part!r}", part.lower() in text.lower(), quoted)
    for pattern in expect.reply_matches:
        add(f"reply matches /{pattern}/", re.search(pattern, text) is not None, quoted)
    for part in expect.reply_excludes:
        add(f"reply excludes {part!r}", part.lower() not in text.lower(), quoted)
    return results


async def judge(
    number: int, criterion: str, transcript: Sequence[str], llm: LLM | None
) -> CheckResult:
    """Ask the model whether the conversation so far meets `criterion`; skipped without one."""
    name = f"judge: {criterion}"
    if llm is None:
        return CheckResult(number, name, "skip", "no model key: set OPENAI_API_KEY to judge")
    messages = [
        ChatMessage.system(_JUDGE_INSTRUCTIONS),
        ChatMessage.user("Conversation:\n" + "\n".join(transcript) + f"\n\nCriterion: {criterion}"),
    ]
    parts: list[str] = []
    async with contextlib.aclosing(llm.stream(messages)) as stream:
        async for delta in stream:
            parts.append(delta.text)
    verdict = "".join(parts).strip()
    first = verdict.split(maxsplit=1)[0].strip(".:,").upper() if verdict else ""
    if first == "PASS":
        return CheckResult(number, name, "pass")
    return CheckResult(number, name, "fail", f"the judge said: {verdict[:300]!r}")


def _matches(expected: ExpectedTool, entry: ToolAuditEntry) -> bool:
    if not _same_tool(expected.name, entry.tool):
        return False
    if expected.outcome is not None and entry.outcome != expected.outcome:
        return False
    return _subset(expected.arguments, entry.arguments)


def _subset(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    return all(key in actual and actual[key] == value for key, value in expected.items())


def _same_tool(expected: str, audited: str) -> bool:
    """An audit names a tool it does not know by the model's function name (`server__tool`)."""
    return audited in (expected, expected.replace(".", "__"))


def _describe(expected: ExpectedTool) -> str:
    words = f"tool {expected.name}"
    if expected.arguments:
        words += " " + ", ".join(f"{k}={v!r}" for k, v in expected.arguments.items())
    if expected.outcome:
        words += f" -> {expected.outcome}"
    return words
