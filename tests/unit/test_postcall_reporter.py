"""The report writer against the scripted OpenAI-compatible server: validation, retry, fallback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.postcall_support import report_json
from tests.report_samples import sample_record
from voice_agent.exceptions import ProviderResponseError
from voice_agent.postcall.reporter import (
    ModelAttempt,
    OutputMode,
    ReportWriter,
    call_prompt,
    strict_schema,
)
from voice_agent.providers.openai_connection import OpenAIConnection
from voice_agent.testing.openai_script import ChatReply, ChatScript, ErrorReply
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI


def _writer(server: ScriptedOpenAI, **options: Any) -> ReportWriter:
    client = OpenAIConnection(api_key="test", base_url=server.base_url, timeout_s=5).client()
    return ReportWriter(client=client, model="gpt-4o-mini", review_confidence=0.6, **options)


@contextlib.asynccontextmanager
async def _serving(*replies: ChatScript) -> AsyncIterator[tuple[ScriptedOpenAI, ReportWriter]]:
    """The scripted server answering `replies`, and a writer talking to it."""
    async with ScriptedOpenAI(chat=replies) as server:
        writer = _writer(server)
        try:
            yield server, writer
        finally:
            await writer.aclose()


async def _write(*replies: ChatScript, complete: bool = True) -> tuple[Any, ScriptedOpenAI]:
    async with _serving(*replies) as (server, writer):
        outcome = await writer.write(sample_record("r1", complete=complete))
    return outcome, server


async def test_valid_answer_is_the_report() -> None:
    """A valid answer is kept as the model's report, not flagged, with its token usage."""
    outcome, _ = await _write(ChatReply(text=report_json(), prompt_tokens=321))
    stored = outcome.stored
    assert stored.report.ticket.category == "billing"
    assert not stored.needs_review
    assert stored.review_reasons == []
    assert stored.model == "gpt-4o-mini"
    assert stored.attempts == 1
    assert outcome.prompt_tokens == 321
    assert outcome.completion_tokens > 0


async def test_request_asks_for_strict_structured_output() -> None:
    """The request carries `response_format` json_schema, strict, with the strict schema."""
    _, server = await _write(ChatReply(text=report_json()))
    body = server.requests_to(CHAT_PATH)[0].json
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "post_call_report", "schema": strict_schema(), "strict": True},
    }
    assert body["messages"][0]["role"] == "system"
    assert "<transcript>" in body["messages"][1]["content"]


async def test_invalid_twice_gives_the_fallback_flagged_for_review() -> None:
    """Two answers that fail validation: the deterministic report, `needs_review` "fallback"."""
    outcome, server = await _write(ChatReply(text="not json"), ChatReply(text="{}"))
    stored = outcome.stored
    assert stored.needs_review
    assert stored.review_reasons == ["fallback"]
    assert stored.model is None
    assert stored.report.confidence == 0.0
    assert [a.ok for a in outcome.attempts] == [False, False]
    assert len(server.requests_to(CHAT_PATH)) == 2


async def test_retry_quotes_the_validation_errors() -> None:
    """The second request shows the model its answer and what was wrong with it."""
    bad = json.loads(report_json())
    bad["sentiment"] = "furious"
    outcome, server = await _write(ChatReply(text=json.dumps(bad)), ChatReply(text=report_json()))
    retry = server.requests_to(CHAT_PATH)[1].json["messages"]
    assert retry[-2]["role"] == "assistant"
    assert "sentiment" in retry[-1]["content"]
    assert outcome.stored.attempts == 2
    assert not outcome.stored.needs_review


async def test_low_confidence_is_flagged() -> None:
    """Confidence under the threshold: kept, flagged `low_confidence`."""
    outcome, _ = await _write(ChatReply(text=report_json(confidence=0.59)))
    assert outcome.stored.needs_review
    assert outcome.stored.review_reasons == ["low_confidence"]


async def test_partial_record_is_flagged() -> None:
    """A report written from a partial record (the agent died) is flagged for review."""
    outcome, _ = await _write(ChatReply(text=report_json()), complete=False)
    assert outcome.stored.review_reasons == ["partial_record"]


async def test_server_without_json_schema_gets_json_object_with_the_schema() -> None:
    """A 400 to `json_schema` switches to `json_object` + schema (llama-cpp-python), once."""
    async with _serving(ErrorReply(400, "response_format"), ChatReply(text=report_json())) as (
        server,
        writer,
    ):
        outcome = await writer.write(sample_record("r2"))
    second = server.requests_to(CHAT_PATH)[1].json["response_format"]
    assert second == {"type": "json_object", "schema": strict_schema()}
    assert writer.mode is OutputMode.JSON_OBJECT
    assert outcome.stored.attempts == 1


async def test_grammar_failure_500_also_switches_to_json_object() -> None:
    """A local server's 500 about the schema's grammar is the request, not an outage: it
    switches too, and the report is written on the same job attempt."""
    grammar = ErrorReply(500, "Failed to parse grammar built from the JSON schema")
    async with _serving(grammar, ChatReply(text=report_json())) as (server, writer):
        outcome = await writer.write(sample_record("r3"))
    assert writer.mode is OutputMode.JSON_OBJECT
    assert server.requests_to(CHAT_PATH)[1].json["response_format"]["type"] == "json_object"
    assert not outcome.stored.needs_review


async def test_other_server_errors_do_not_switch_the_output_mode() -> None:
    """A 500 about something else is an outage, raised as it is; the mode stays `json_schema`."""
    async with _serving(ErrorReply(500, "model overloaded")) as (server, writer):
        with pytest.raises(ProviderResponseError) as caught:
            await writer.write(sample_record("r4"))
    assert caught.value.status == 500
    assert writer.mode is OutputMode.JSON_SCHEMA
    assert len(server.requests_to(CHAT_PATH)) == 1


async def test_provider_error_is_raised_for_the_job_to_decide() -> None:
    """A 5xx is not a validation failure: it is raised, retryable, and no fallback is made."""
    with pytest.raises(ProviderResponseError) as caught:
        await _write(ErrorReply(503))
    assert caught.value.retryable


async def test_each_attempt_is_reported_to_the_hook() -> None:
    """The hook sees every model attempt with its outcome."""
    seen: list[ModelAttempt] = []

    async def hook(attempt: ModelAttempt) -> None:
        seen.append(attempt)

    async with _serving(ChatReply(text="{"), ChatReply(text=report_json())) as (_, writer):
        await writer.write(sample_record("r3"), on_attempt=hook)
    assert [(a.attempt, a.ok) for a in seen] == [(1, False), (2, True)]
    assert seen[0].error


def test_strict_schema_requires_every_property_and_has_no_length_keywords() -> None:
    """Strict mode: all properties required, no additional ones, limits moved to descriptions."""
    schema = strict_schema()
    text = json.dumps(schema)
    assert set(schema["required"]) == set(schema["properties"])
    assert "action_items" in schema["required"]
    for word in ("maxLength", "minLength", "maxItems", '"default"', '"minimum"'):
        assert word not in text
    assert (
        "at most 200 characters"
        in schema["$defs"]["TicketFields"]["properties"]["title"]["description"]
    )
    assert schema["$defs"]["TicketFields"]["additionalProperties"] is False


def test_prompt_keeps_the_start_and_end_of_a_long_call() -> None:
    """A transcript over the budget keeps its opening and its end."""
    lines = tuple(("user", f"line {i} " + "x" * 100) for i in range(400))
    prompt = call_prompt(sample_record("r4", lines=lines), budget_chars=4000)
    assert "line 0 " in prompt
    assert "line 399 " in prompt
    assert "middle of the call omitted" in prompt
    assert len(prompt) < 6000


async def test_other_bad_requests_do_not_switch_the_output_mode() -> None:
    """A 400 about something else is raised as it is; the writer keeps asking for json_schema."""
    async with _serving(ErrorReply(400, "max_tokens is too large")) as (server, writer):
        with pytest.raises(ProviderResponseError) as caught:
            await writer.write(sample_record("r5"))
    assert caught.value.status == 400
    assert not caught.value.retryable
    assert writer.mode is OutputMode.JSON_SCHEMA
    assert len(server.requests_to(CHAT_PATH)) == 1
