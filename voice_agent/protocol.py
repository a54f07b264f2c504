"""Names shared by the agent and its clients inside a LiveKit room.

LiveKit's own agent conventions (so LiveKit's client components work with our agent) and this
project's data-channel topics. Changing a value here changes a public contract.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field


class AgentState(StrEnum):
    """Values of the agent participant attribute `lk.agent.state`."""

    INITIALIZING = "initializing"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


# LiveKit agent conventions
ATTR_AGENT_STATE: Final = "lk.agent.state"
TOPIC_TRANSCRIPTION: Final = "lk.transcription"
ATTR_TRANSCRIPTION_FINAL: Final = "lk.transcription_final"
ATTR_TRANSCRIPTION_SEGMENT_ID: Final = "lk.segment_id"
ATTR_TRANSCRIBED_TRACK_ID: Final = "lk.transcribed_track_id"
# Typed chat as LiveKit's client components send it: a text stream on `lk.chat`, and (from
# components-core 0.12) the same message as JSON {"id","timestamp","message","ignoreLegacy"}
# in a data packet on the legacy topic, which a server with data streams is told to ignore.
TOPIC_CHAT: Final = "lk.chat"
TOPIC_LEGACY_CHAT: Final = "lk-chat-topic"

TOPIC_PRE_CONNECT_AUDIO: Final = "lk.agent.pre-connect-audio-buffer"  # byte stream, user -> agent

# This project's agent attribute: why the agent ended the call, set just before it closes the room
# (`max_duration`, `user_silent`, `repeated_failures`), so a client tells a hang-up from a failure.
ATTR_END_REASON: Final = "end_reason"

# This project's data-channel topics (JSON messages with "v": 1, at most 8 KiB each)
TOPIC_CLIENT_ACTIONS: Final = "client_actions"  # agent -> app
TOPIC_CLIENT_EVENTS: Final = "client_events"  # app -> agent
TOPIC_AGENT_TURNS: Final = "agent_turns"  # agent -> app: one summary per finished turn
MAX_MESSAGE_BYTES: Final = 8 * 1024

ProtocolVersion = Literal[1]
"""The `"v"` of every data-channel message."""
PROTOCOL_VERSION: Final[ProtocolVersion] = 1


class TurnKind(StrEnum):
    """What an utterance on the call was (the call record's transcript, the `agent_turns` kind)."""

    USER = "user"  # the caller's words
    GREETING = "greeting"  # the agent's first words
    REPLY = "reply"  # the agent's answer to a turn (or the rest of an interrupted one)
    FALLBACK = "fallback"  # the fixed line said when a stage failed
    GOODBYE = "goodbye"  # a fixed goodbye before the agent hangs up


Stage = Literal["stt", "llm", "tts"]
"""A model stage of the pipeline (in failure reports, metrics labels and retries)."""


class AgentTurnMessage(BaseModel):
    """The summary of one finished agent turn, sent on topic `agent_turns`.

    `metrics` holds the turn's latency figures in milliseconds (`eou_delay_ms`, `stt_ms`,
    `llm_ttft_ms`, `tts_ttfb_ms`, `voice_to_voice_ms`, `tool_ms`; null where a stage did not
    run), empty for a goodbye; `failed` names the stage whose failure the turn reports.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["turn"] = "turn"
    v: ProtocolVersion = PROTOCOL_VERSION
    kind: TurnKind
    user_text: str = ""
    agent_text: str = ""
    interrupted: bool = False
    failed: Stage | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
