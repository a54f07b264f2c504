"""`@tool`: names, descriptions, argument schemas, validation messages and definition errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from voice_agent.exceptions import ToolArgumentsError, ToolDefinitionError
from voice_agent.tooling import ToolContext, ToolSpec, tool
from voice_agent.tooling.testing import tool_context


@tool(destructive=True, timeout=3.0, secret_args=["pin"], fallback="call the desk")
async def book_room(
    ctx: ToolContext,
    *,
    room: Annotated[str, Field(min_length=2, max_length=30)],
    people: Annotated[int, Field(ge=1, le=12)] = 2,
    kind: Literal["meeting", "quiet"] = "meeting",
    pin: str = "",
) -> dict[str, Any]:
    """Book a room for today.

    Rooms can only be booked for the current day.

    Args:
        room: The room's name, as written on its door.
        people: How many people will attend.
    """
    return {"room": room, "people": people, "kind": kind, "user": ctx.user_id}


class Search(BaseModel):
    """Arguments of a search (extra fields allowed here on purpose)."""

    model_config = ConfigDict(extra="allow")

    query: Annotated[str, Field(min_length=1, description="What to look for.")]
    limit: int = 3


@tool(name="find")
async def search_tool(ctx: ToolContext, args: Search) -> list[str]:
    """Find documents."""
    return [args.query] * args.limit


def test_name_and_description_come_from_the_function() -> None:
    """The name is the function's; the description is the docstring's first paragraph."""
    assert book_room.name == "book_room"
    assert book_room.description == "Book a room for today."
    assert search_tool.name == "find"


def test_schema_carries_types_ranges_literals_and_descriptions() -> None:
    """The JSON schema states what validation enforces, with argument descriptions."""
    schema = book_room.parameters
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["room"]
    props = schema["properties"]
    assert props["room"] == {
        "type": "string",
        "minLength": 2,
        "maxLength": 30,
        "description": "The room's name, as written on its door.",
    }
    assert props["people"]["minimum"] == 1
    assert props["people"]["maximum"] == 12
    assert props["people"]["description"] == "How many people will attend."
    assert props["kind"]["enum"] == ["meeting", "quiet"]
    assert "title" not in schema
    assert "title" not in props["room"]


def test_openai_schema_wraps_name_description_and_parameters() -> None:
    """`openai_schema()` is the chat completions `tools` entry."""
    assert book_room.openai_schema() == {
        "type": "function",
        "function": {
            "name": "book_room",
            "description": "Book a room for today.",
            "parameters": book_room.parameters,
        },
    }


def test_policy_fields_are_kept_on_the_spec() -> None:
    """Decorator arguments become the spec's policy."""
    assert book_room.destructive
    assert book_room.needs_confirmation
    assert book_room.timeout_s == 3.0
    assert book_room.fallback == "call the desk"
    assert book_room.secret_args == frozenset({"pin"})
    assert book_room.on_interrupt == "finish"
    assert search_tool.timeout_s is None
    assert not search_tool.needs_confirmation


def test_a_model_parameter_becomes_the_schema_and_forbids_extras() -> None:
    """A single pydantic model parameter is the argument model, with extra fields forbidden."""
    assert search_tool.takes_model
    assert search_tool.parameters["properties"]["query"]["description"] == "What to look for."
    assert search_tool.parameters["additionalProperties"] is False
    with pytest.raises(ToolArgumentsError, match="'page' is not an argument"):
        search_tool.validate({"query": "vpn", "page": 2})


def test_validation_names_the_problems_without_echoing_values() -> None:
    """Each invalid argument is named with the rule it broke; input values are left out."""
    with pytest.raises(ToolArgumentsError) as caught:
        book_room.validate({"room": "x", "people": 40, "kind": "party", "colour": "red"})
    message = str(caught.value)
    assert message.startswith("invalid arguments for book_room:")
    assert "'room': String should have at least 2 characters" in message
    assert "'people': Input should be less than or equal to 12" in message
    assert "'kind': Input should be 'meeting' or 'quiet'" in message
    assert "'colour' is not an argument of this tool" in message
    assert "party" not in message
    assert "red" not in message


def test_missing_argument_is_reported() -> None:
    """A required argument that is absent is named."""
    with pytest.raises(ToolArgumentsError, match="'room': Field required"):
        book_room.validate("{}")


@pytest.mark.parametrize("raw", ["[1, 2]", '"room"', "{not json"])
def test_arguments_must_be_a_json_object(raw: str) -> None:
    """Anything but a JSON object of named arguments is refused."""
    with pytest.raises(ToolArgumentsError):
        book_room.validate(raw)


def test_empty_arguments_mean_no_arguments() -> None:
    """Some models send "" for a tool without arguments; it validates as {}."""

    @tool
    async def ping(ctx: ToolContext) -> str:
        """Ping."""
        return "pong"

    assert ping.validate("").model_dump() == {}


def test_confirm_template_is_formatted_with_the_arguments() -> None:
    """A confirm template reads the validated arguments."""

    @tool(confirm="Book {room} for {people} people?")
    async def reserve(ctx: ToolContext, *, room: str, people: int = 2) -> str:
        """Reserve."""
        return room

    assert reserve.needs_confirmation
    assert not reserve.destructive
    assert reserve.confirm_prompt(reserve.validate({"room": "Oak"})) == "Book Oak for 2 people?"


def test_destructive_tool_without_template_gets_a_clear_prompt() -> None:
    """Without a template the prompt is built from the name and arguments, secrets hidden."""
    args = book_room.validate({"room": "Oak", "pin": "9876"})
    prompt = book_room.confirm_prompt(args)
    assert prompt == "Book room: room 'Oak', people 2, kind 'meeting', pin (hidden)?"


def test_idempotency_key_is_canonical_and_scoped_by_call() -> None:
    """Same arguments in any order share a key within a call; another call gets another key."""
    one = book_room.validate({"room": "Oak", "people": 3})
    same = book_room.validate('{"people": 3, "room": "Oak"}')
    other = book_room.validate({"room": "Elm", "people": 3})
    key = book_room.idempotency_key("call-1", one)
    assert key == book_room.idempotency_key("call-1", same)
    assert key != book_room.idempotency_key("call-2", one)
    assert key != book_room.idempotency_key("call-1", other)


def test_a_supplied_idempotency_key_wins_over_the_call() -> None:
    """A tool taking `idempotency_key` is deduplicated on it, across calls."""

    @tool
    async def refund(ctx: ToolContext, *, invoice: str, idempotency_key: str) -> str:
        """Refund an invoice."""
        return invoice

    args = refund.validate({"invoice": "A1", "idempotency_key": "r-1"})
    assert refund.idempotency_key("call-1", args) == refund.idempotency_key("call-2", args)


async def test_invoke_validates_and_runs(tmp_path: Path) -> None:
    """`invoke` runs the function with validated, defaulted arguments."""
    result = await book_room.invoke({"room": "Oak"}, tool_context(tmp_path), timeout_s=1)
    assert result == {"room": "Oak", "people": 2, "kind": "meeting", "user": "user-test"}
    assert await search_tool.invoke(
        '{"query": "a", "limit": 2}', tool_context(tmp_path), timeout_s=1
    ) == ["a", "a"]


async def test_invoke_refuses_invalid_arguments(tmp_path: Path) -> None:
    """`invoke` never runs the function with invalid arguments."""
    with pytest.raises(ToolArgumentsError):
        await book_room.invoke({"room": "Oak", "people": 0}, tool_context(tmp_path), timeout_s=1)


async def test_invoke_times_out(tmp_path: Path) -> None:
    """`invoke` raises TimeoutError when the function runs past the limit."""

    @tool
    async def stall(ctx: ToolContext) -> None:
        """Stall."""
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        await stall.invoke({}, tool_context(tmp_path), timeout_s=0.05)


def _define(**options: Any) -> Any:
    return tool(**options)


def test_a_sync_function_is_rejected() -> None:
    """Tools are async; a plain function is a definition error."""

    def lookup(ctx: ToolContext) -> str:
        """Look up."""
        return ""

    with pytest.raises(ToolDefinitionError, match="async def"):
        tool(lookup)  # type: ignore[arg-type]  # the mistake under test


def test_a_tool_needs_a_docstring() -> None:
    """Without a description the model cannot know when to use the tool."""

    async def nameless(ctx: ToolContext) -> str:
        return ""

    with pytest.raises(ToolDefinitionError, match="docstring"):
        tool(nameless)


def test_unannotated_arguments_are_rejected() -> None:
    """Every argument needs a type."""

    async def lookup(ctx: ToolContext, *, order):  # type: ignore[no-untyped-def]  # under test
        """Look up."""

    with pytest.raises(ToolDefinitionError, match="annotate argument 'order'"):
        tool(lookup)


def test_confirm_template_must_use_real_arguments() -> None:
    """A placeholder that is not an argument is caught at definition time."""

    async def delete(ctx: ToolContext, *, path: str) -> None:
        """Delete."""

    with pytest.raises(ToolDefinitionError, match="file"):
        tool(confirm="Delete {file}?")(delete)


def test_secret_args_must_name_arguments() -> None:
    """A misspelt secret argument would leak the real one; it is an error."""

    async def login(ctx: ToolContext, *, password: str) -> None:
        """Log in."""

    with pytest.raises(ToolDefinitionError, match="passwd"):
        tool(secret_args=["passwd"])(login)


@pytest.mark.parametrize(
    "options",
    [
        {"name": "has space"},
        {"name": "with-dash"},
        {"timeout": 0},
        {"timeout": 1000},
        {"on_interrupt": "stop"},
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any]) -> None:
    """Names, timeouts and interrupt policies are checked."""

    async def lookup(ctx: ToolContext) -> None:
        """Look up."""

    with pytest.raises(ToolDefinitionError):
        _define(**options)(lookup)


def test_var_arguments_are_rejected() -> None:
    """**kwargs cannot be described to the model."""

    async def anything(ctx: ToolContext, **kwargs: str) -> None:
        """Anything."""

    with pytest.raises(ToolDefinitionError, match="kwargs"):
        tool(anything)


def test_spec_is_a_tool_spec() -> None:
    """The decorator returns the spec the registry collects."""
    assert isinstance(book_room, ToolSpec)
