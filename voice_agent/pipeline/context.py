"""The conversation sent to the LLM: chat history bounded by a token budget.

Messages are `ChatMessage`s (immutable), the same type a reply produces and an LLM receives; the
provider turns them into its wire format. The system prompt is always kept; the oldest turns go
first when the history passes its budget, and a one-line note in the system message says what the
caller had said in them. A turn starts at a user message; no cut falls between an assistant
message's tool calls and any of their results, so a call and its results leave together.

Tokens are estimated as characters / 4 plus a small per-message overhead: cheap, offline, and
close enough for English to keep a budget (real tokenizers vary by model anyway).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

from voice_agent.chat import ChatMessage, Role, ToolCall

__all__ = ["ConversationContext", "TokenEstimator", "estimate_tokens"]

TokenEstimator = Callable[[ChatMessage], int]

_MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, as OpenAI's chat formats spend about that
_TOOL_CALL_OVERHEAD_CHARS = 70  # a call's JSON on the wire besides its id, name and arguments
_CHARS_PER_TOKEN = 4
_HISTORY_ROLES = frozenset({Role.USER, Role.ASSISTANT, Role.TOOL})
_QUOTE_CHARS = 48  # how much of each dropped user message the note quotes


def estimate_tokens(message: ChatMessage) -> int:
    """Approximate tokens of one message: its text and tool calls at ~4 characters a token."""
    chars = len(message.content or "") + len(message.tool_call_id or "")
    for call in message.tool_calls:
        chars += _TOOL_CALL_OVERHEAD_CHARS + len(call.id) + len(call.name) + len(call.arguments)
    return _MESSAGE_OVERHEAD_TOKENS + math.ceil(chars / _CHARS_PER_TOKEN)


class ConversationContext:
    """Chat history for one call, trimmed from the oldest turn to fit `max_tokens`."""

    def __init__(
        self,
        *,
        system_prompt: str,
        max_tokens: int = 8_000,
        summarize_dropped: bool = True,
        note_max_chars: int = 300,
        token_estimator: TokenEstimator = estimate_tokens,
    ) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be positive")
        self._system_prompt = system_prompt
        self._max_tokens = max_tokens
        self._summarize = summarize_dropped
        self._note_max_chars = note_max_chars
        self._estimate = token_estimator
        self._history: list[tuple[ChatMessage, int]] = []  # kept messages and their token estimates
        self._dropped_count = 0
        self._dropped_quotes: list[str] = []
        self._dropped_call_ids: set[str] = set()

    @property
    def system_prompt(self) -> str:
        """The system prompt, always the first message."""
        return self._system_prompt

    @system_prompt.setter
    def system_prompt(self, value: str) -> None:
        self._system_prompt = value
        self._trim()

    @property
    def max_tokens(self) -> int:
        """The budget the rendered messages are kept under (unless the latest turn exceeds it)."""
        return self._max_tokens

    @property
    def dropped_count(self) -> int:
        """How many history messages were dropped to stay within the budget."""
        return self._dropped_count

    @property
    def token_count(self) -> int:
        """Estimated tokens of `messages()`."""
        return self._estimate(self._system_message()) + sum(t for _, t in self._history)

    @property
    def over_budget(self) -> bool:
        """True when even the system prompt and the latest turn exceed the budget."""
        return self.token_count > self._max_tokens

    def __len__(self) -> int:
        """Messages kept besides the system prompt."""
        return len(self._history)

    def add(self, message: ChatMessage) -> None:
        """Append a user, assistant or tool message, then trim to the budget.

        A tool result whose call was already dropped is dropped too: sent alone it is invalid.
        """
        _check(message)
        if message.role is Role.TOOL and message.tool_call_id in self._dropped_call_ids:
            self._dropped_count += 1
            return
        self._history.append((message, self._estimate(message)))
        self._trim()

    def add_user(self, text: str) -> None:
        """Append what the caller said."""
        self.add(ChatMessage.user(text))

    def add_assistant(self, text: str, *, tool_calls: Sequence[ToolCall] = ()) -> None:
        """Append the agent's reply, with the tool calls it made, if any."""
        self.add(ChatMessage.assistant(text, tool_calls=tool_calls))

    def add_tool_result(self, *, tool_call_id: str, content: str) -> None:
        """Append the result of the tool call with this id."""
        self.add(ChatMessage.tool(tool_call_id, content))

    def messages(self) -> list[ChatMessage]:
        """The messages to send: the system message first, then the kept history."""
        return [self._system_message(), *(m for m, _ in self._history)]

    def _system_message(self) -> ChatMessage:
        note = self._note()
        return ChatMessage.system(
            f"{self._system_prompt}\n\n{note}" if note else self._system_prompt
        )

    def _note(self) -> str:
        if not self._summarize or self._dropped_count == 0:
            return ""
        head = f"Earlier in the call ({self._dropped_count} older messages omitted)"
        quotes = list(self._dropped_quotes)
        while True:  # the latest dropped words matter most: shed the oldest quotes to fit
            said = "; ".join(f'"{q}"' for q in quotes)
            note = f"{head}, the caller said: {said}." if quotes else f"{head}."
            if len(note) <= self._note_max_chars or not quotes:
                return note[: self._note_max_chars]
            quotes.pop(0)

    def _trim(self) -> None:
        while self.token_count > self._max_tokens:
            units = _turn_lengths([m for m, _ in self._history])
            if len(units) <= 1:
                return  # the latest turn is kept whatever its size
            dropped = self._history[: units[0]]
            del self._history[: units[0]]
            self._dropped_count += len(dropped)
            self._dropped_quotes.extend(_quote(m) for m, _ in dropped if m.role is Role.USER)
            self._dropped_call_ids.update(_call_ids(m for m, _ in dropped))
            # Only what fits in a note is ever shown; keep the list bounded on long calls.
            del self._dropped_quotes[: -max(1, self._note_max_chars // 8)]


def _check(message: ChatMessage) -> None:
    if message.role not in _HISTORY_ROLES:
        raise ValueError(f"role must be one of {sorted(_HISTORY_ROLES)}, not {message.role!r}")
    if message.role is Role.ASSISTANT and message.content is None and not message.tool_calls:
        raise ValueError("an assistant message needs content or tool_calls")


def _turn_lengths(history: Sequence[ChatMessage]) -> list[int]:
    """Sizes of the droppable units: cut before a user message unless a tool call spans it."""
    call_index: dict[str, int] = {}
    last_result: dict[int, int] = {}  # assistant index -> index of its last tool result
    for i, message in enumerate(history):
        if message.role is Role.ASSISTANT:
            call_index.update((call.id, i) for call in message.tool_calls)
        elif (
            message.role is Role.TOOL
            and (a := call_index.get(message.tool_call_id or "")) is not None
        ):
            last_result[a] = i
    lengths: list[int] = []
    start, reach = 0, -1  # reach: the furthest result of any call made before i
    for i, message in enumerate(history):
        if message.role is Role.USER and i > start and reach < i:
            lengths.append(i - start)
            start = i
        reach = max(reach, last_result.get(i, -1))
    if len(history) > start:
        lengths.append(len(history) - start)
    return lengths


def _call_ids(messages: Iterable[ChatMessage]) -> Iterator[str]:
    for message in messages:
        for call in message.tool_calls:
            yield call.id


def _quote(message: ChatMessage) -> str:
    text = " ".join((message.content or "").split()).replace('"', "'")
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1].rstrip() + "\u2026"
