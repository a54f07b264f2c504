"""Running conversation tests: in text mode (a `TextSession`) or through a real LiveKit call.

Each file runs in a fresh data directory (its tickets, ledger and records are its own). A file
that scripts the model runs against the scripted OpenAI-compatible server (`testing/`), fed the
file's completions in order (and, in voice mode, the turns' words as transcripts and a tone as
speech); otherwise, or with `model="settings"`, against the configured model. Voice mode starts
its own LiveKit server on loopback, the token service and an agent worker in this process, and
places the call with the simulated caller, which speaks each turn (espeak-ng, or the turn's
WAV). Judge prompts go to the configured model when `OPENAI_API_KEY` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from voice_agent.agent.call_tools import ToolKit
from voice_agent.agent.options import session_options
from voice_agent.agent.text_session import TextReply, TextSession
from voice_agent.call_record import CallRecord, FileRecordSink
from voice_agent.exceptions import VoiceAgentError
from voice_agent.profile import load_profile
from voice_agent.providers.base import LLM
from voice_agent.providers.factory import build_llm
from voice_agent.settings import LLMProviderKind, Settings, STTProviderKind, TTSProviderKind
from voice_agent.testing.openai_script import TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI
from voice_agent.textmode.checks import CheckResult, TurnRun, check_turn, judge
from voice_agent.textmode.conversations import ConversationFile, load_conversation
from voice_agent.tooling import ConfirmationAnswer

Mode = Literal["text", "voice"]
ModelChoice = Literal["auto", "settings"]


@dataclass
class FileReport:
    """One conversation file, run and judged."""

    path: Path
    title: str
    mode: Mode
    scripted: bool
    checks: list[CheckResult] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        """No check failed and the run itself did not fail."""
        return self.error is None and all(c.status != "fail" for c in self.checks)


class ScriptedAnswers:
    """Confirmations answered as the current turn says (no answer: as if none came in time)."""

    hint = "Please answer yes or no."
    available = True

    def __init__(self) -> None:
        self.answer: Literal["yes", "no"] | None = None

    async def ask(self, *, prompt: str, tool: str, timeout_s: float) -> ConfirmationAnswer:
        """The turn's answer, at once."""
        if self.answer is None:
            return "timeout"
        return "confirmed" if self.answer == "yes" else "declined"


async def run_file(
    path: Path,
    settings: Settings,
    *,
    mode: Mode = "text",
    model: ModelChoice = "auto",
    write: Callable[[str], None] | None = None,
) -> FileReport:
    """Run one conversation file and judge it (printing its report to `write`, if given)."""
    report = FileReport(path=path, title=path.stem, mode=mode, scripted=False)
    try:
        conversation = load_conversation(path)
        report.title = conversation.title
        report.scripted = conversation.scripted and model == "auto"
        with tempfile.TemporaryDirectory(prefix="voice-agent-conversation-") as tmp:
            run_settings = _settings_for(conversation, settings, Path(tmp))
            async with _models(conversation, run_settings, report.scripted, mode) as run_settings:
                if mode == "text":
                    runs = await _run_text(conversation, run_settings)
                else:
                    runs = await _run_voice(conversation, run_settings)
        await _judge(conversation, runs, settings, report)
    except (VoiceAgentError, OSError, TimeoutError) as e:
        report.error = f"{type(e).__name__}: {e}"
    if write is not None:
        print_report(report, write)
    return report


async def run_files(
    paths: list[Path],
    settings: Settings,
    *,
    mode: Mode = "text",
    model: ModelChoice = "auto",
    write: Callable[[str], None],
) -> list[FileReport]:
    """Run each file in turn, printing as it goes, then a summary line."""
    reports = [await run_file(p, settings, mode=mode, model=model, write=write) for p in paths]
    failed = sum(not r.passed for r in reports)
    noun = "conversation" if len(reports) == 1 else "conversations"
    write(f"{len(reports)} {noun}: {len(reports) - failed} passed, {failed} failed")
    return reports


def print_report(report: FileReport, write: Callable[[str], None]) -> None:
    """Each check's verdict; the transcript when something failed."""
    model = "scripted model" if report.scripted else "configured model"
    verdict = "PASS" if report.passed else "FAIL"
    write(f"{verdict} {report.path}: {report.title} ({report.mode}, {model})")
    for check in report.checks:
        line = f"  {check.status.upper():<4} turn {check.turn}: {check.name}"
        write(f"{line} ({check.detail})" if check.detail else line)
    if report.error is not None:
        write(f"  ERROR {report.error}")
    if not report.passed and report.transcript:
        write("  transcript:")
        for line in report.transcript:
            write(f"    {line}")


# The run's settings and models


def _settings_for(conversation: ConversationFile, settings: Settings, data_dir: Path) -> Settings:
    update: dict[str, Any] = {"data_dir": data_dir, "redis_url": None, "database_url": None}
    if conversation.profile is not None:
        update["profile"] = conversation.profile
    if conversation.tools_path is not None:
        update["tools_path"] = conversation.tools_path
    return settings.model_copy(update=update)


@contextlib.asynccontextmanager
async def _models(
    conversation: ConversationFile, settings: Settings, scripted: bool, mode: Mode
) -> AsyncIterator[Settings]:
    """The settings the run's model is reached with: the scripted server's, or as given."""
    if not scripted:
        yield settings
        return
    transcripts = [TranscriptionReply(text=t.user) for t in conversation.turns]
    server = ScriptedOpenAI(
        chat=conversation.chat_replies(),
        transcriptions=transcripts if mode == "voice" else (),
        transcripts_per_turn=True,  # a turn heard at a pause and again at its end is one turn
    )
    async with server:
        yield settings.model_copy(
            update={
                "openai_api_key": SecretStr("scripted"),
                "openai_base_url": server.base_url,
                "llm": LLMProviderKind.OPENAI,
                "llm_fallback": None,
                "stt": STTProviderKind.OPENAI,
                "stt_fallback": None,
                "tts": TTSProviderKind.OPENAI,
                "tts_fallback": None,
            }
        )


# Text mode


async def _run_text(conversation: ConversationFile, settings: Settings) -> list[TurnRun]:
    profile = load_profile(settings)
    llm = build_llm(settings)
    kit = await ToolKit.open(settings, profile)
    answers = ScriptedAnswers()
    told: list[TextReply] = []
    runs: list[TurnRun] = []
    try:
        session = TextSession(
            options=session_options(settings, profile),
            profile=profile,
            llm=llm,
            kit=kit,
            sink=FileRecordSink(settings.data_dir / "records"),
            journal_dir=settings.data_dir / "calls",
            confirmations=answers,
            user_id="conversation-test",
            on_reply=told.append,
        )
        session.greet()
        for turn in conversation.turns:
            answers.answer = turn.confirm
            audited = len(session.journal.record.tool_audit)
            reply = await session.send(turn.user)
            await asyncio.wait_for(session.wait_background(), settings.tool_timeout_s * 4)
            texts = [reply.text, *(r.text for r in told)]
            told.clear()
            runs.append(
                TurnRun(
                    user=turn.user,
                    agent_text=" ".join(t for t in texts if t),
                    tool_audit=session.journal.record.tool_audit[audited:],
                )
            )
        await session.close()
    finally:
        await kit.aclose()
        await llm.aclose()
    return runs


# Voice mode


class _KeptRecords(FileRecordSink):
    """Stores records as files and hands them to the runner."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.records: asyncio.Queue[CallRecord] = asyncio.Queue()

    async def submit(self, record: CallRecord) -> None:
        await super().submit(record)
        self.records.put_nowait(record)


async def _run_voice(conversation: ConversationFile, settings: Settings) -> list[TurnRun]:
    from voice_agent.textmode.voice import voice_call

    answers = {t.confirm for t in conversation.turns if t.confirm is not None}
    if len(answers) > 1:
        raise VoiceAgentError(
            "in voice mode the caller answers every confirmation of a call alike: "
            "split the yes and the no into two files"
        )
    confirm = None if not answers else answers.pop() == "yes"
    sink = _KeptRecords(settings.data_dir / "records")
    result, record = await voice_call(conversation, settings, sink=sink, confirm=confirm)
    if not result["ok"]:
        raise VoiceAgentError(f"the call failed: {result['error']}")
    runs = []
    for number, (turn, heard) in enumerate(zip(conversation.turns, result["turns"], strict=False)):
        runs.append(
            TurnRun(
                user=heard.get("user_text") or turn.user,
                agent_text=heard.get("agent_text", ""),
                tool_audit=[a for a in record.tool_audit if a.turn == number + 1],
            )
        )
    return runs


# Judging


async def _judge(
    conversation: ConversationFile, runs: list[TurnRun], settings: Settings, report: FileReport
) -> None:
    llm: LLM | None = build_llm(settings) if settings.openai_api_key is not None else None
    try:
        for number, (turn, run) in enumerate(zip(conversation.turns, runs, strict=False), 1):
            report.transcript.append(f"user: {run.user}")
            for entry in run.tool_audit:
                report.transcript.append(f"  [tool {entry.tool}: {entry.outcome}]")
            report.transcript.append(f"agent: {run.agent_text}")
            report.checks += check_turn(number, turn, run)
            if turn.expect.judge is not None:
                report.checks.append(await judge(number, turn.expect.judge, report.transcript, llm))
        if len(runs) < len(conversation.turns):
            report.error = f"only {len(runs)} of {len(conversation.turns)} turns were answered"
    finally:
        if llm is not None:
            await llm.aclose()
