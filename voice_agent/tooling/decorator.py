"""`@tool`: turn a plain async function into a `ToolSpec`.

The name comes from the function, the description from the first paragraph of its docstring,
and the arguments from its annotations: either keyword parameters after the context
(`async def f(ctx: ToolContext, *, n: Annotated[int, Field(ge=1, le=5)])`) or one pydantic
model (`async def f(ctx: ToolContext, args: MyArgs)`). Pydantic builds the argument model
(`extra="forbid"`) and its JSON schema, so ranges, lengths and literals are checked by the same
code that documents them to the model. Argument descriptions come from `Field(description=...)`
or from an `Args:` section of the docstring.
"""

from __future__ import annotations

import inspect
import re
import string
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, create_model

from voice_agent.exceptions import ToolDefinitionError
from voice_agent.tooling.spec import OnInterrupt, ToolSpec

ToolFunction = Callable[..., Awaitable[Any]]

# A Python identifier of at most 64 characters: fits the OpenAI tools API and agent profiles.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_TIMEOUT_S = 300.0
_ARG_SECTIONS = {"args:", "arguments:", "parameters:"}


@overload
def tool(fn: ToolFunction, /) -> ToolSpec: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    destructive: bool = False,
    timeout: float | None = None,
    confirm: str | None = None,
    on_interrupt: Literal["finish", "cancel"] = "finish",
    background: bool = False,
    secret_args: Sequence[str] = (),
    fallback: str | None = None,
) -> Callable[[ToolFunction], ToolSpec]: ...


def tool(
    fn: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    destructive: bool = False,
    timeout: float | None = None,
    confirm: str | None = None,
    on_interrupt: Literal["finish", "cancel"] = "finish",
    background: bool = False,
    secret_args: Sequence[str] = (),
    fallback: str | None = None,
) -> ToolSpec | Callable[[ToolFunction], ToolSpec]:
    """Register an async function as a tool; usable as `@tool` or `@tool(...)`.

    `destructive`: the user must confirm each run. `timeout`: seconds per run (default: the
    runtime's). `confirm`: the confirmation question, formatted with the arguments, e.g.
    "Create a ticket titled '{title}'?". `on_interrupt`: whether a run the user talks over
    finishes or is cancelled. `background`: the run does not hold the conversation: the
    model is told at once that it started, and its result joins the conversation (and the
    agent tells the caller) when it completes. `secret_args`: arguments never written to logs
    or audit.
    `fallback`: what the agent offers while the tool's system is unavailable.
    """

    def build(function: ToolFunction) -> ToolSpec:
        return _build_spec(
            function,
            name=name,
            destructive=destructive,
            timeout=timeout,
            confirm=confirm,
            on_interrupt=on_interrupt,
            background=background,
            secret_args=secret_args,
            fallback=fallback,
        )

    return build if fn is None else build(fn)


def _build_spec(
    fn: ToolFunction,
    *,
    name: str | None,
    destructive: bool,
    timeout: float | None,
    confirm: str | None,
    on_interrupt: OnInterrupt,
    background: bool,
    secret_args: Sequence[str],
    fallback: str | None,
) -> ToolSpec:
    where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    if not inspect.iscoroutinefunction(fn):
        raise ToolDefinitionError(
            f"{where}: a tool must be an `async def` function (run blocking work with "
            "asyncio.to_thread inside it)"
        )
    tool_name = name or fn.__name__
    if not _NAME.match(tool_name):
        raise ToolDefinitionError(
            f"{where}: tool name {tool_name!r} must be 1-64 letters, digits or '_', "
            "not starting with a digit"
        )
    description = _summary(fn.__doc__)
    if not description:
        raise ToolDefinitionError(
            f"{where}: write a docstring; its first paragraph tells the model what the tool does"
        )
    if timeout is not None and not 0 < timeout <= _MAX_TIMEOUT_S:
        raise ToolDefinitionError(f"{where}: timeout must be in (0, {_MAX_TIMEOUT_S:g}] seconds")
    if on_interrupt not in ("finish", "cancel"):
        raise ToolDefinitionError(f"{where}: on_interrupt must be 'finish' or 'cancel'")
    if isinstance(secret_args, str):
        raise ToolDefinitionError(f"{where}: secret_args takes a list of argument names")

    params_model, takes_model = _params_model(fn, tool_name, where)
    fields = set(params_model.model_fields)
    if unknown := sorted(set(secret_args) - fields):
        raise ToolDefinitionError(f"{where}: secret_args names unknown arguments {unknown}")
    if confirm is not None:
        _check_template(confirm, fields, where)
    return ToolSpec(
        name=tool_name,
        description=description,
        params_model=params_model,
        parameters=clean_schema(params_model.model_json_schema()),
        destructive=destructive,
        timeout_s=timeout,
        confirm=confirm,
        on_interrupt=on_interrupt,
        background=background,
        secret_args=frozenset(secret_args),
        fallback=fallback,
        fn=fn,
        takes_model=takes_model,
    )


def _params_model(fn: ToolFunction, tool_name: str, where: str) -> tuple[type[BaseModel], bool]:
    params = list(inspect.signature(fn).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise ToolDefinitionError(f"{where}: the first parameter must take the ToolContext")
    rest = params[1:]
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as e:  # an annotation naming something that does not exist
        raise ToolDefinitionError(f"{where}: cannot resolve annotations ({e})") from e

    if len(rest) == 1 and rest[0].kind in positional:
        model = hints.get(rest[0].name)
        if inspect.isclass(model) and issubclass(model, BaseModel):
            return _forbid_extra(model), True

    docs = _arg_docs(fn.__doc__)
    fields: dict[str, Any] = {}
    for p in rest:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ToolDefinitionError(f"{where}: *args and **kwargs cannot be tool arguments")
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ToolDefinitionError(f"{where}: argument {p.name!r} must accept a keyword")
        if p.name not in hints:
            raise ToolDefinitionError(f"{where}: annotate argument {p.name!r} with its type")
        annotation = hints[p.name]
        if p.name in docs:  # a Field(description=...) in the annotation still wins
            annotation = Annotated[annotation, Field(description=docs[p.name])]
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, default)
    try:
        model = create_model(
            _model_name(tool_name), __config__=ConfigDict(extra="forbid"), **fields
        )
        model.model_json_schema()  # fail here, not when the model first asks
    except Exception as e:  # pydantic raises many kinds for an annotation it cannot describe
        raise ToolDefinitionError(f"{where}: arguments cannot be described ({e})") from e
    return model, False


def _forbid_extra(model: type[BaseModel]) -> type[BaseModel]:
    if model.model_config.get("extra") == "forbid":
        return model
    config = ConfigDict(**{**model.model_config, "extra": "forbid"})
    return type(model.__name__, (model,), {"model_config": config, "__module__": model.__module__})


def _model_name(tool_name: str) -> str:
    words = re.split(r"[_-]+", tool_name)
    return "".join(w[:1].upper() + w[1:] for w in words) + "Arguments"


def _summary(doc: str | None) -> str:
    if not doc:
        return ""
    paragraph = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines()).strip()


def _arg_docs(doc: str | None) -> dict[str, str]:
    """Argument descriptions from a Google-style `Args:` section."""
    if not doc:
        return {}
    docs: dict[str, str] = {}
    in_section, indent, current = False, -1, ""
    for line in inspect.cleandoc(doc).splitlines():
        if not in_section:
            in_section = line.strip().lower() in _ARG_SECTIONS
            continue
        if not line.strip() or not line[:1].isspace():
            break
        depth = len(line) - len(line.lstrip())
        match = re.match(r"\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
        if match and indent in (-1, depth):
            indent, current = depth, match.group(1)
            docs[current] = match.group(2).strip()
        elif current:
            docs[current] = f"{docs[current]} {line.strip()}".strip()
    return docs


def _check_template(template: str, fields: set[str], where: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ToolDefinitionError(f"{where}: confirm template is malformed ({e})") from e
    for _, field, _, _ in parsed:
        if field is None:
            continue
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root not in fields:
            raise ToolDefinitionError(
                f"{where}: confirm template uses {{{field}}}, which is not an argument"
            )


def clean_schema(schema: Any, *, in_names: bool = False) -> Any:
    """The schema without generated titles (noise for the model; pydantic and servers built on
    it add one to every property)."""
    if isinstance(schema, dict):
        if in_names:  # keys are property or definition names, values are schemas
            return {k: clean_schema(v) for k, v in schema.items()}
        return {
            k: clean_schema(v, in_names=k in ("properties", "$defs", "patternProperties"))
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [clean_schema(v) for v in schema]
    return schema
