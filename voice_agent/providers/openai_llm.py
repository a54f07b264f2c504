"""LLM through an OpenAI-compatible `chat/completions` endpoint, streamed."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import openai
from openai.types.chat import (
    ChatCompletionMessageParam,
    ChatCompletionToolUnionParam,
)
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.exceptions import ProviderResponseError
from voice_agent.providers.base import LLM, LLMCapabilities, LLMDelta, Usage
from voice_agent.providers.openai_connection import OpenAIConnection, translate_errors
from voice_agent.settings import Settings

PROVIDER = "openai.llm"


class OpenAILLM(LLM):
    """Streams chat completions; text as it arrives, tool calls and usage in the last delta."""

    def __init__(self, *, connection: OpenAIConnection, model: str) -> None:
        self.capabilities = LLMCapabilities(tool_calls=True)
        self.model = model
        self._client = connection.client()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAILLM:
        """The LLM `VOICE_AGENT_LLM_MODEL` names, on the configured OpenAI connection."""
        return cls(connection=OpenAIConnection.from_settings(settings), model=settings.llm_model)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def stream(
        self, messages: Sequence[ChatMessage], *, tools: list[dict[str, Any]] | None = None
    ) -> AsyncGenerator[LLMDelta, None]:
        """Stream the answer: text deltas, then one delta with tool calls, usage and finish."""
        wire_messages = [wire_message(m) for m in messages]
        wire_tools = cast(list[ChatCompletionToolUnionParam], tools) if tools else openai.omit
        calls = _ToolCallAssembler()
        usage: Usage | None = None
        finish_reason: str | None = None
        with translate_errors(PROVIDER):
            chunks = await self._client.chat.completions.create(
                model=self.model,
                messages=wire_messages,
                tools=wire_tools,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with chunks:
                async for chunk in chunks:
                    if chunk.usage is not None:
                        usage = Usage(
                            prompt_tokens=chunk.usage.prompt_tokens,
                            completion_tokens=chunk.usage.completion_tokens,
                        )
                    for choice in chunk.choices:
                        if choice.index != 0:
                            continue
                        if choice.delta.tool_calls:
                            calls.add(choice.delta.tool_calls)
                        if choice.finish_reason is not None:
                            finish_reason = choice.finish_reason
                        if choice.delta.content:
                            yield LLMDelta(text=choice.delta.content)
        yield LLMDelta(tool_calls=calls.completed(), usage=usage, finish_reason=finish_reason)


def wire_message(message: ChatMessage) -> ChatCompletionMessageParam:
    """A message in the OpenAI chat wire format."""
    # Content is "" rather than null, also beside tool calls: llama.cpp's server answers 500 to
    # a null content.
    wire: dict[str, Any] = {"role": message.role.value, "content": message.content or ""}
    if message.tool_calls:
        wire["tool_calls"] = [wire_tool_call(call) for call in message.tool_calls]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return cast(ChatCompletionMessageParam, wire)  # the shape that TypedDict union describes


def wire_tool_call(call: ToolCall) -> dict[str, Any]:
    """A tool call in the OpenAI chat wire format (arguments stay the JSON text the model wrote)."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


@dataclass
class _PartialToolCall:
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


class _ToolCallAssembler:
    """Joins tool-call fragments that arrive spread over many chunks, keyed by their index."""

    def __init__(self) -> None:
        self._calls: dict[int, _PartialToolCall] = {}

    def add(self, fragments: Sequence[ChoiceDeltaToolCall]) -> None:
        for fragment in fragments:
            call = self._calls.setdefault(fragment.index, _PartialToolCall())
            if fragment.id:
                call.id = fragment.id
            if fragment.function is not None:
                # The name comes whole in one fragment; some servers repeat it in later ones.
                call.name = call.name or fragment.function.name
                if fragment.function.arguments:
                    call.arguments.append(fragment.function.arguments)

    def completed(self) -> tuple[ToolCall, ...]:
        result = []
        for index, call in sorted(self._calls.items()):
            if not call.name:
                raise ProviderResponseError(
                    f"{PROVIDER}: tool call {index} arrived without a name", provider=PROVIDER
                )
            result.append(
                ToolCall(
                    # Some OpenAI-compatible servers leave out ids; ours must be unique per turn.
                    id=call.id or f"call_{index}",
                    name=call.name,
                    # A call without arguments means "no arguments", which JSON spells {}.
                    arguments="".join(call.arguments) or "{}",
                )
            )
        return tuple(result)
