"""The record of one call, journaled as it happens and handed to a post-call sink at the end.

Every transcript turn, turn metric and notable event is appended (one JSON line, flushed) to the
call's journal file as soon as it happens, so an agent crash keeps what happened so far; the
post-call side can rebuild a partial `CallRecord` from the journal with `CallJournal.replay`.
The running call holds an exclusive `flock` on its journal (mode 0600), which the kernel drops
when the process dies: a journal nobody holds belongs to a call that is not live on this host.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from pydantic import BaseModel, Field, field_validator

from voice_agent.datadir import open_private, private_dir
from voice_agent.logging import get_logger
from voice_agent.protocol import TurnKind
from voice_agent.tooling.audit import ToolAuditEntry
from voice_agent.tracing import valid_traceparent

log = get_logger("agent.call_record")

Speaker = Literal["user", "agent"]


class TranscriptTurn(BaseModel):
    """One thing said on the call."""

    speaker: Speaker
    text: str
    started_at: float
    ended_at: float
    interrupted: bool = False
    kind: TurnKind = TurnKind.USER
    typed: bool = False  # the caller typed it (text chat) rather than said it


class TurnMetricsRecord(BaseModel):
    """Latency of one agent turn, in milliseconds (None where a stage did not run)."""

    turn: int
    eou_delay_ms: float | None = None
    stt_ms: float | None = None
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None
    voice_to_voice_ms: float | None = None
    tool_ms: float | None = None
    interrupted: bool = False


class CallEvent(BaseModel):
    """A notable moment: a state change, a failure, a fallback, the end."""

    at: float
    event: str
    data: dict[str, Any] = Field(default_factory=dict)


class ClientActionAuditEntry(BaseModel):
    """One data-channel message between agent and app, and what the receiving side did with it."""

    at: float
    direction: Literal["to_app", "from_app"]
    type: str  # client_action, user_confirmed, action_result, context, or "invalid"
    id: str | None = None
    action: str | None = None
    outcome: Literal["sent", "refused", "accepted", "dropped"]
    detail: str | None = None


class CallUsage(BaseModel):
    """What the call consumed from the model providers."""

    stt_audio_s: float = 0.0
    tts_audio_s: float = 0.0
    llm_requests: int = 0  # completions asked for; a retry is counted by its Prometheus metric
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    speculations: int = 0  # replies prepared at a pause before the turn was committed
    speculations_wasted: int = 0  # of those, discarded because the caller went on (their cost
    # is in the figures above: STT audio, LLM requests and tokens, TTS audio)


class CallRecord(BaseModel):
    """Everything the post-call pipeline needs about one call."""

    call_id: str
    room: str
    user_id: str | None = None
    started_at: float
    ended_at: float | None = None
    end_reason: str | None = None
    transcript: list[TranscriptTurn] = Field(default_factory=list)
    metrics: list[TurnMetricsRecord] = Field(default_factory=list)
    events: list[CallEvent] = Field(default_factory=list)
    tool_audit: list[ToolAuditEntry] = Field(default_factory=list)
    client_action_audit: list[ClientActionAuditEntry] = Field(default_factory=list)
    usage: CallUsage = Field(default_factory=CallUsage)
    complete: bool = False
    """False when rebuilt from a journal whose call never ended cleanly."""
    traceparent: str | None = None
    """The worker's call span (W3C), which the post-call job continues; None when untraced."""

    @field_validator("traceparent", mode="before")
    @classmethod
    def _valid_traceparent(cls, value: object) -> str | None:
        # Outside input (a journal, Redis): a malformed one is dropped, never the record.
        return valid_traceparent(value)


class CallRecordSink(Protocol):
    """Where finished call records go (the post-call queue plugs in here)."""

    async def submit(self, record: CallRecord) -> None:
        """Accept one finished call record; must not lose it once this returns."""


class CallJournal:
    """An append-only JSON-lines journal of one call, flushed line by line."""

    def __init__(
        self,
        *,
        directory: Path,
        call_id: str,
        room: str,
        user_id: str | None,
        traceparent: str | None = None,
    ) -> None:
        private_dir(directory)
        self.path = directory / f"{call_id}.jsonl"
        self.record = CallRecord(
            call_id=call_id,
            room=room,
            user_id=user_id,
            started_at=time.time(),
            traceparent=traceparent,
        )
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until `finish` or death
        except BlockingIOError:  # another live session of this call holds it: live all the same
            log.warning("call_record.journal_shared", call_id=call_id, path=str(self.path))
        self._file: IO[str] | None = os.fdopen(fd, "a", encoding="utf-8")
        header = {"call_id", "room", "user_id", "started_at", "traceparent"}
        self._append("call", self.record.model_dump(include=header))

    def add_turn(self, turn: TranscriptTurn) -> None:
        """Append a transcript turn."""
        self.record.transcript.append(turn)
        self._append("turn", turn.model_dump())

    def add_metrics(self, metrics: TurnMetricsRecord) -> None:
        """Append one agent turn's latency figures."""
        self.record.metrics.append(metrics)
        self._append("metrics", metrics.model_dump())

    def add_event(self, event: str, **data: Any) -> None:
        """Append a notable event."""
        entry = CallEvent(at=time.time(), event=event, data=data)
        self.record.events.append(entry)
        self._append("event", entry.model_dump())

    def add_tool_audit(self, entry: ToolAuditEntry) -> None:
        """Append the audit record of one tool request."""
        self.record.tool_audit.append(entry)
        self._append("tool", entry.model_dump(mode="json"))

    def add_client_audit(self, entry: ClientActionAuditEntry) -> None:
        """Append the audit record of one client-action message."""
        self.record.client_action_audit.append(entry)
        self._append("client", entry.model_dump(mode="json"))

    def set_usage(self, usage: CallUsage) -> None:
        """Record the provider usage so far (the latest entry wins on replay)."""
        self.record.usage = usage.model_copy()
        self._append("usage", usage.model_dump())

    def finish(self, reason: str) -> CallRecord:
        """Close the journal; the complete record."""
        self.record.ended_at = time.time()
        self.record.end_reason = reason
        self.record.complete = True
        self._append("end", {"ended_at": self.record.ended_at, "end_reason": reason})
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.record

    def _append(self, kind: str, data: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps({"k": kind, "d": data}, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as e:  # a full disk must not end the call; the log says what was lost
            log.error("call_record.journal_write_failed", path=str(self.path), error=str(e))

    @staticmethod
    def replay(path: Path) -> CallRecord:
        """Rebuild a record from a journal (complete or cut short by a crash)."""
        record: CallRecord | None = None
        for entry in _lines(path):
            kind, data = entry.get("k"), entry.get("d", {})
            if kind == "call":
                record = CallRecord(**data)
            elif record is None:
                continue
            elif kind == "turn":
                record.transcript.append(TranscriptTurn(**data))
            elif kind == "metrics":
                record.metrics.append(TurnMetricsRecord(**data))
            elif kind == "event":
                record.events.append(CallEvent(**data))
            elif kind == "tool":
                record.tool_audit.append(ToolAuditEntry(**data))
            elif kind == "client":
                record.client_action_audit.append(ClientActionAuditEntry(**data))
            elif kind == "usage":
                record.usage = CallUsage(**data)
            elif kind == "end":
                record.ended_at = data["ended_at"]
                record.end_reason = data["end_reason"]
                record.complete = True
        if record is None:
            raise ValueError(f"{path} holds no call")
        return record


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:  # the last line of a crashed writer may be cut short
                continue


class FileRecordSink:
    """Writes each finished record as JSON under a directory (used when there is no queue)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    async def submit(self, record: CallRecord) -> None:
        """Write `<call_id>.json` atomically (mode 0600)."""
        private_dir(self._directory)
        final = self._directory / f"{record.call_id}.json"
        tmp = final.with_suffix(".json.tmp")
        fd = open_private(tmp, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(record.model_dump_json(indent=2))
        os.replace(tmp, final)
        log.info("call_record.stored", call_id=record.call_id, path=str(final))
