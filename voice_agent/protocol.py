"""Names shared by the agent and its clients inside a LiveKit room.

LiveKit's own agent conventions (so LiveKit's client components work with our agent) and this
project's data-channel topics. Changing a value here changes a public contract.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


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

# This project's data-channel topics (JSON messages with "v": 1, at most 8 KiB each)
TOPIC_CLIENT_ACTIONS: Final = "client_actions"  # agent -> app
TOPIC_CLIENT_EVENTS: Final = "client_events"  # app -> agent
TOPIC_AGENT_TURNS: Final = "agent_turns"  # agent -> app: one summary per finished turn
MAX_MESSAGE_BYTES: Final = 8 * 1024
PROTOCOL_VERSION: Final = 1
