"""ConversationContext: the history stays within budget, keeps what matters and stays valid."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice_agent.chat import ChatMessage, Role, ToolCall
from voice_agent.pipeline.context import ConversationContext, estimate_tokens

SYSTEM = "You are a helpful voice assistant for a restaurant."


def _call(call_id: str, name: str = "lookup", arguments: dict[str, Any] | None = None) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=json.dumps(arguments or {}))


def _words(n: int) -> str:
    return " ".join(["word"] * n)


def _history(ctx: ConversationContext) -> list[ChatMessage]:
    return ctx.messages()[1:]


def test_system_prompt_comes_first_and_short_history_is_kept_whole() -> None:
    """Under budget, messages() is the system prompt followed by everything, in order."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=1000)
    ctx.add_user("Hi, can I book a table?")
    ctx.add_assistant("Of course. For how many people?")
    ctx.add_user("Two, tonight at seven.")
    assert ctx.messages() == [
        ChatMessage.system(SYSTEM),
        ChatMessage.user("Hi, can I book a table?"),
        ChatMessage.assistant("Of course. For how many people?"),
        ChatMessage.user("Two, tonight at seven."),
    ]
    assert ctx.dropped_count == 0
    assert len(ctx) == 3
    assert not ctx.over_budget


def test_oldest_turns_are_dropped_first_to_fit_the_budget() -> None:
    """Past the budget, whole turns leave from the oldest; the latest turns and prompt stay."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=200, summarize_dropped=False)
    for i in range(10):
        ctx.add_user(f"question {i} " + _words(40))
        ctx.add_assistant(f"answer {i} " + _words(40))
    history = _history(ctx)
    assert ctx.token_count <= 200
    assert ctx.messages()[0] == ChatMessage.system(SYSTEM)
    assert (history[-1].content or "").startswith("answer 9 ")
    assert history[0].role is Role.USER
    assert ctx.dropped_count + len(ctx) == 20
    assert ctx.dropped_count > 0


def test_dropped_turns_become_a_one_line_note() -> None:
    """The system message gains one line saying how much was dropped and what the caller said."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=150)
    ctx.add_user('I want to book a table for "four" people on Friday ' + _words(30))
    ctx.add_assistant("Sure. " + _words(60))
    ctx.add_user("What time is it open until?")
    ctx.add_assistant("Until eleven.")
    system = ctx.messages()[0].content or ""
    assert system.startswith(SYSTEM + "\n\n")
    note = system.removeprefix(SYSTEM + "\n\n")
    assert "\n" not in note
    assert note.startswith("Earlier in the call (2 older messages omitted), the caller said:")
    assert "I want to book a table for 'four' people" in note
    assert ctx.token_count <= 150


def test_the_note_stays_within_its_length_keeping_the_latest_quotes() -> None:
    """With many dropped turns, the note quotes the most recent ones and stays short."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=120, note_max_chars=160)
    for i in range(30):
        ctx.add_user(f"request number {i}")
        ctx.add_assistant(_words(30))
    note = (ctx.messages()[0].content or "").removeprefix(SYSTEM + "\n\n")
    assert len(note) <= 160
    assert '"request number 28"' in note
    assert '"request number 0"' not in note


def test_a_tool_call_and_its_results_are_never_separated() -> None:
    """A turn with tool calls leaves whole: no kept tool result lacks its assistant message."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=260, summarize_dropped=False)
    for i in range(6):
        ctx.add_user(f"check table {i}")
        ctx.add_assistant("", tool_calls=[_call(f"a{i}"), _call(f"b{i}")])
        ctx.add_tool_result(tool_call_id=f"a{i}", content=_words(30))
        ctx.add_tool_result(tool_call_id=f"b{i}", content=_words(30))
        ctx.add_assistant(f"table {i} is free")
    history = _history(ctx)
    calls = {c.id for m in history for c in m.tool_calls}
    results = {m.tool_call_id for m in history if m.role is Role.TOOL}
    assert calls == results
    assert history[0].role is Role.USER
    assert ctx.dropped_count > 0


def test_a_result_arriving_after_the_next_user_message_keeps_its_call() -> None:
    """No cut falls between a call and a late result, even across a user message."""
    old = ChatMessage.user("old " + _words(40))
    call = ChatMessage.assistant("", tool_calls=[_call("slow")])
    nudge = ChatMessage.user("are you still there?")
    result = ChatMessage.tool("slow", _words(40))
    system = estimate_tokens(ChatMessage.system(SYSTEM))
    budget = system + sum(estimate_tokens(m) for m in (old, call, nudge)) + 5
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=budget, summarize_dropped=False)
    for message in (old, call, nudge):
        ctx.add(message)
    assert ctx.dropped_count == 0
    ctx.add(result)
    # The call belongs to the first turn, which now reaches the result: one unit, kept whole.
    assert _history(ctx) == [old, call, nudge, result]
    assert ctx.over_budget
    ctx.add_user("thanks")
    assert _history(ctx) == [ChatMessage.user("thanks")]


def test_a_result_for_a_dropped_call_is_dropped_too() -> None:
    """A tool result whose call already left the history is not kept alone."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=60, summarize_dropped=False)
    ctx.add_user("first")
    ctx.add_assistant("", tool_calls=[_call("gone")])
    ctx.add_user("second " + _words(150))
    dropped = ctx.dropped_count
    assert dropped == 2
    ctx.add_tool_result(tool_call_id="gone", content="late")
    assert ctx.dropped_count == dropped + 1
    assert all(m.role is not Role.TOOL for m in _history(ctx))


def test_the_latest_turn_is_kept_even_when_it_alone_exceeds_the_budget() -> None:
    """A huge latest turn is still sent, and over_budget says so."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=50)
    ctx.add_user("short")
    ctx.add_user(_words(200))
    assert [m.content for m in _history(ctx)] == [_words(200)]
    assert ctx.over_budget


def test_changing_the_system_prompt_trims_again() -> None:
    """A longer system prompt pushes old turns out."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=200, summarize_dropped=False)
    for i in range(3):
        ctx.add_user(f"q{i} " + _words(20))
    assert ctx.dropped_count == 0
    ctx.system_prompt = SYSTEM + " " + _words(120)
    assert ctx.dropped_count > 0
    assert ctx.token_count <= 200
    assert ctx.system_prompt.startswith(SYSTEM)


def test_kept_messages_cannot_be_changed() -> None:
    """What add() got and messages() returns is immutable, so the history cannot change behind
    the context's back."""
    ctx = ConversationContext(system_prompt=SYSTEM)
    ctx.add(ChatMessage.assistant("", tool_calls=[_call("x")]))
    kept = ctx.messages()[1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        kept.tool_calls = (_call("y"),)  # type: ignore[misc]  # the point: it is frozen
    assert _history(ctx)[0].tool_calls == (_call("x"),)


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: ChatMessage.system("no"), ValueError),
        (lambda: ChatMessage(role=Role("narrator"), content="no"), ValueError),
        (lambda: ChatMessage(content="no role"), TypeError),  # type: ignore[call-arg]
        (lambda: ChatMessage(role=Role.TOOL, content="no id"), ValueError),
        (lambda: ChatMessage(role=Role.ASSISTANT, content=None), ValueError),
    ],
    ids=["system", "unknown-role", "no-role", "tool-without-id", "empty-assistant"],
)
def test_invalid_messages_are_rejected(
    build: Callable[[], ChatMessage], error: type[Exception]
) -> None:
    """System, unknown or missing roles, tool results without an id and empty assistants are
    refused (by the message type or by the context)."""
    ctx = ConversationContext(system_prompt=SYSTEM)
    with pytest.raises(error):
        ctx.add(build())


def test_token_estimate_is_about_four_characters_a_token() -> None:
    """Text counts ~chars/4 plus a small overhead; tool call arguments count too."""
    assert estimate_tokens(ChatMessage.user("x" * 400)) == 104
    plain = estimate_tokens(ChatMessage.assistant(""))
    with_call = estimate_tokens(
        ChatMessage.assistant("", tool_calls=[_call("c", arguments={"q": "x" * 400})])
    )
    assert with_call - plain > 100


def test_a_custom_estimator_is_used() -> None:
    """token_estimator replaces the built-in estimate."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=3, token_estimator=lambda m: 1)
    for i in range(5):
        ctx.add_user(str(i))
    assert [m.content for m in _history(ctx)] == ["3", "4"]


# --- property: any conversation, any budget -----------------------------------------------------


@st.composite
def _conversations(draw: st.DrawFn) -> list[ChatMessage]:
    """Turns of user text, assistant text and assistant tool calls with their results."""
    messages: list[ChatMessage] = []
    for turn in range(draw(st.integers(1, 12))):
        messages.append(ChatMessage.user(_words(draw(st.integers(0, 60)))))
        for step in range(draw(st.integers(0, 3))):
            if draw(st.booleans()):
                ids = [f"t{turn}s{step}c{k}" for k in range(draw(st.integers(1, 3)))]
                messages.append(ChatMessage.assistant("", tool_calls=[_call(i) for i in ids]))
                messages += [ChatMessage.tool(i, _words(draw(st.integers(0, 80)))) for i in ids]
            else:
                messages.append(ChatMessage.assistant(_words(draw(st.integers(0, 60)))))
    return messages


@settings(max_examples=300, deadline=None)
@given(
    conversation=_conversations(),
    budget=st.integers(20, 1500),
    summarize=st.booleans(),
)
def test_any_conversation_stays_valid_and_within_budget(
    conversation: list[ChatMessage], budget: int, summarize: bool
) -> None:
    """After every add: system first, a suffix of the turns, calls with all results, in budget."""
    ctx = ConversationContext(system_prompt=SYSTEM, max_tokens=budget, summarize_dropped=summarize)
    for n, message in enumerate(conversation, start=1):
        ctx.add(message)
        rendered = ctx.messages()
        history = rendered[1:]
        assert rendered[0].role is Role.SYSTEM
        assert (rendered[0].content or "").startswith(SYSTEM)
        assert history == conversation[n - len(history) : n]
        assert ctx.dropped_count + len(history) == n
        calls = {c.id for m in history for c in m.tool_calls}
        results = {m.tool_call_id for m in history if m.role is Role.TOOL}
        assert results <= calls
        if history and history[0].role is not Role.USER:
            assert n - len(history) == 0  # only the very first turn may start otherwise
        if ctx.token_count > budget:
            # Over budget only when no turn boundary is left to cut at.
            assert all(m.role is not Role.USER for m in history[1:])
