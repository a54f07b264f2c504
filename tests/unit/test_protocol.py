"""The room contract's messages: the `agent_turns` summary as the app receives it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from voice_agent.protocol import PROTOCOL_VERSION, AgentTurnMessage, TurnKind


def test_turn_message_has_the_documented_fields() -> None:
    """type "turn", v 1, kind, both texts, interrupted, failed and the latency figures."""
    figures = {"eou_delay_ms": 512.0, "stt_ms": 120.5, "llm_ttft_ms": None}
    message = AgentTurnMessage(
        kind=TurnKind.REPLY,
        user_text="What are your hours?",
        agent_text="Nine to five.",
        metrics=figures,
    )
    assert json.loads(message.model_dump_json()) == {
        "type": "turn",
        "v": PROTOCOL_VERSION,
        "kind": "reply",
        "user_text": "What are your hours?",
        "agent_text": "Nine to five.",
        "interrupted": False,
        "failed": None,
        "metrics": figures,
    }


def test_goodbye_turn_carries_no_figures() -> None:
    """A goodbye is sent with empty metrics."""
    message = AgentTurnMessage(kind=TurnKind.GOODBYE, agent_text="Goodbye!")
    assert json.loads(message.model_dump_json())["metrics"] == {}


def test_turn_message_refuses_an_unknown_failed_stage() -> None:
    """`failed` names a pipeline stage (stt, llm, tts) or nothing."""
    with pytest.raises(ValidationError):
        AgentTurnMessage(kind=TurnKind.REPLY, failed="vad")
