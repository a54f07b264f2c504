"""A registered tool: its name, description, argument model and policy, and how to call it.

`ToolSpec` is what the `@tool` decorator produces. It validates the model's arguments, renders
the confirmation prompt, derives the idempotency key and runs the function under a time limit.
Confirmation, circuit breakers, the idempotency ledger and audit are the runtime's job
(`voice_agent.tooling.runtime`), so `invoke` can serve tests and the post-call worker directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from voice_agent.exceptions import ToolArgumentsError
from voice_agent.tooling.context import ToolContext
from voice_agent.tooling.redact import REDACTED, redact

OnInterrupt = Literal["finish", "cancel"]

IDEMPOTENCY_FIELD = "idempotency_key"
_MAX_REPORTED_ERRORS = 8
_MAX_SPOKEN_VALUE = 80


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ToolSpec:
    """One tool as the runtime sees it (built by `@tool`; compared by identity)."""

    name: str
    description: str
    params_model: type[BaseModel]
    parameters: dict[str, Any]  # JSON schema of params_model, as shown to the model
    destructive: bool = False
    timeout_s: float | None = None  # None: the runtime's default
    confirm: str | None = None  # confirmation prompt template, formatted with the arguments
    on_interrupt: OnInterrupt = "finish"
    # Runs in the background: the model hears at once that it started, the result later.
    background: bool = False
    secret_args: frozenset[str] = frozenset()
    fallback: str | None = None  # what the agent offers when the tool's system is unavailable
    fn: Callable[..., Awaitable[Any]]
    takes_model: bool = False  # fn(ctx, model) rather than fn(ctx, **arguments)
    # The name the model calls it by, when `name` is not a valid function name for the model
    # API (an MCP tool's "<server>.<tool>"); allowlists, audit and metrics use `name`.
    alias: str | None = None

    @property
    def function_name(self) -> str:
        """The name in the model's tool list and in its tool calls."""
        return self.alias or self.name

    @property
    def needs_confirmation(self) -> bool:
        """Whether the user must confirm each run (destructive, or a prompt was given)."""
        return self.destructive or self.confirm is not None

    def openai_schema(self) -> dict[str, Any]:
        """The tool in the OpenAI chat `tools` format."""
        return {
            "type": "function",
            "function": {
                "name": self.function_name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def validate(self, arguments: Mapping[str, Any] | str) -> BaseModel:
        """The validated arguments, or a `ToolArgumentsError` whose message suits the model."""
        data: Any = arguments
        if isinstance(arguments, str):
            text = arguments.strip() or "{}"  # some models send "" for a tool without arguments
            try:
                data = json.loads(text)
            except ValueError as e:
                raise ToolArgumentsError(
                    f"invalid arguments for {self.name}: not valid JSON ({e}); send one JSON object"
                ) from None
        if not isinstance(data, Mapping):
            raise ToolArgumentsError(
                f"invalid arguments for {self.name}: expected a JSON object of named arguments"
            )
        try:
            return self.params_model.model_validate(dict(data))
        except ValidationError as e:
            raise ToolArgumentsError(describe_validation_error(self.name, e)) from None

    def redacted(self, args: BaseModel) -> dict[str, Any]:
        """The arguments as JSON with secrets replaced by "[redacted]"."""
        value = redact(args.model_dump(mode="json"), secret_keys=self.secret_args)
        assert isinstance(value, dict)
        return value

    def confirm_prompt(self, args: BaseModel) -> str:
        """The plain-language question the user is asked before this run."""
        values = self.redacted(args)
        if self.confirm is not None:
            try:
                return self.confirm.format_map(values)
            except (KeyError, IndexError, ValueError, AttributeError):
                pass  # a template that does not fit these values: say it plainly instead
        return default_confirm_prompt(self.name, values)

    def idempotency_key(self, call_id: str, args: BaseModel) -> str:
        """The key that identifies this request: repeats share it, so they never run twice.

        A tool whose arguments include `idempotency_key` supplies its own (scoped by tool name);
        otherwise it is derived from the call id, the tool name and the canonical arguments.
        """
        supplied = getattr(args, IDEMPOTENCY_FIELD, None)
        if supplied not in (None, ""):
            material = f"tool\x1f{self.name}\x1f{supplied}"
        else:
            canonical = json.dumps(
                args.model_dump(mode="json"),
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            )
            material = f"call\x1f{call_id}\x1f{self.name}\x1f{canonical}"
        return hashlib.sha256(material.encode()).hexdigest()

    async def run_validated(self, args: BaseModel, ctx: ToolContext, *, timeout_s: float) -> Any:
        """Run the function with validated arguments; `TimeoutError` after `timeout_s`.

        On timeout the function is cancelled (it sees `CancelledError` at its next await).
        """
        async with asyncio.timeout(timeout_s):
            if self.takes_model:
                return await self.fn(ctx, args)
            kwargs = {name: getattr(args, name) for name in type(args).model_fields}
            return await self.fn(ctx, **kwargs)

    async def invoke(
        self, arguments: Mapping[str, Any] | str, ctx: ToolContext, *, timeout_s: float
    ) -> Any:
        """Validate and run, without confirmation, breaker or ledger (tests, post-call work)."""
        return await self.run_validated(self.validate(arguments), ctx, timeout_s=timeout_s)


def describe_validation_error(tool: str, error: ValidationError) -> str:
    """A validation failure in words the model can act on (input values are left out)."""
    problems = []
    for e in error.errors(include_url=False, include_input=False)[:_MAX_REPORTED_ERRORS]:
        where = ".".join(str(p) for p in e["loc"]) or "arguments"
        if e["type"] == "extra_forbidden":
            problems.append(f"'{where}' is not an argument of this tool")
        else:
            problems.append(f"'{where}': {e['msg']}")
    more = error.error_count() - len(problems)
    if more > 0:
        problems.append(f"and {more} more")
    return f"invalid arguments for {tool}: " + "; ".join(problems)


def default_confirm_prompt(name: str, values: Mapping[str, Any]) -> str:
    """ "Create ticket: title 'VPN drops', priority 'high'?" from the tool name and arguments
    (an MCP tool's "<server>." prefix left out)."""
    words = name.rpartition(".")[2].replace("_", " ").replace("-", " ").strip()
    phrase = words[:1].upper() + words[1:]
    details = ", ".join(
        f"{key.replace('_', ' ')} {_spoken(value)}"
        for key, value in values.items()
        if key != IDEMPOTENCY_FIELD and value not in (None, "", [], {})
    )
    return f"{phrase}: {details}?" if details else f"{phrase}?"


def _spoken(value: Any) -> str:
    if value == REDACTED:
        return "(hidden)"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > _MAX_SPOKEN_VALUE:
        text = text[: _MAX_SPOKEN_VALUE - 3] + "..."
    return f"'{text}'" if isinstance(value, str) else text
