"""The conversation's messages: one type from the context to the provider.

`ChatMessage` is what the call's conversation holds, what a reply adds to it and what an `LLM`
receives; each provider turns it into its own wire format at its boundary (`openai_llm.py`).
`ToolCall` is a completed call the model asked for, as the tool runtime receives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """Who says a chat message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A completed tool call from the model; `arguments` is a JSON string, not yet validated."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # on tool results: which call this answers

    def __post_init__(self) -> None:
        if self.tool_calls and self.role is not Role.ASSISTANT:
            raise ValueError("only assistant messages carry tool calls")
        if (self.role is Role.TOOL) != (self.tool_call_id is not None):
            raise ValueError("tool messages, and only they, need a tool_call_id")

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        """Instructions for the model."""
        return cls(role=Role.SYSTEM, content=content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        """What the caller said."""
        return cls(role=Role.USER, content=content)

    @classmethod
    def assistant(
        cls, content: str | None = None, *, tool_calls: Sequence[ToolCall] = ()
    ) -> ChatMessage:
        """What the agent said, and the tools it called."""
        return cls(role=Role.ASSISTANT, content=content, tool_calls=tuple(tool_calls))

    @classmethod
    def tool(cls, tool_call_id: str, content: str) -> ChatMessage:
        """A tool's result, answering one call."""
        return cls(role=Role.TOOL, content=content, tool_call_id=tool_call_id)
