"""Argument models for tools described by a JSON Schema rather than by Python annotations.

An MCP server describes each tool's arguments as a JSON Schema. `json_schema_arguments` turns
that schema into a pydantic model class the runtime treats like any `@tool`'s: validating it runs
the schema (the `jsonschema` library, no remote `$ref`s) and reports each problem as a pydantic
error with its location, so `ToolSpec.validate` words it for the model the same way. Messages
name the rule broken, never the value sent. The validated model holds the arguments exactly as
sent (`model_dump()` returns them), and `idempotency_key`, when present, reads as an attribute.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from jsonschema import SchemaError
from jsonschema.exceptions import ValidationError as SchemaViolation
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from referencing import Registry

_MAX_ERRORS = 8
_MAX_SHOWN = 120


class JsonSchemaArguments(BaseModel):
    """Arguments checked against `schema` (one subclass per tool, made by
    `json_schema_arguments`)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    validator: ClassVar[Validator]

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: Any) -> Any:
        errors = sorted(cls.validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            # jsonschema reports "required" once per missing field, each naming all of them.
            problems = dict.fromkeys(p for e in errors for p in _problems(e))
            details = [
                InitErrorDetails(
                    type=PydanticCustomError(kind, "{detail}", {"detail": message}),
                    loc=loc,
                    input=None,
                )
                for kind, loc, message in list(problems)[:_MAX_ERRORS]
            ]
            raise ValidationError.from_exception_data(cls.__name__, details)
        return data


def json_schema_arguments(name: str, schema: dict[str, Any]) -> type[JsonSchemaArguments]:
    """A model class validating against `schema`; `ValueError` if the schema is not valid."""
    if schema.get("type") != "object":
        raise ValueError('the input schema must describe an object ("type": "object")')
    validator_cls = validator_for(schema)
    try:
        validator_cls.check_schema(schema)
    except SchemaError as e:
        raise ValueError(f"the input schema is not valid JSON Schema: {e.message}") from None
    # An empty registry: `$ref`s resolve inside the schema only, nothing is fetched.
    validator = validator_cls(schema, registry=Registry())
    return type(
        f"{name}Arguments",
        (JsonSchemaArguments,),
        {"validator": validator, "__module__": __name__},
    )


_Problem = tuple[str, tuple[str | int, ...], str]  # pydantic error type, location, message


def _problems(error: SchemaViolation) -> Iterable[_Problem]:
    loc = tuple(error.absolute_path)
    instance, required = error.instance, error.validator_value
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "required" and isinstance(instance, dict) and isinstance(required, list):
        for field in required:
            if field not in instance:
                yield ("missing", (*loc, field), "Field required")
        return
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(schema.get("properties", {}))
        extras = [k for k in instance if k not in known]
        if extras and not schema.get("patternProperties"):
            for key in extras:
                yield ("extra_forbidden", (*loc, key), "Extra inputs are not permitted")
            return
    yield ("json_schema", loc, _rule(error))


def _rule(error: SchemaViolation) -> str:
    """What the value must be, from the failed keyword (without echoing the value)."""
    keyword, value = str(error.validator), error.validator_value
    shown = _shown(value)
    match keyword:
        case "type":
            return f"must be of type {shown}"
        case "enum":
            return f"must be one of {shown}"
        case "const":
            return f"must be {shown}"
        case "pattern":
            return f"must match the pattern {value}"
        case "minLength":
            return f"must have at least {value} characters"
        case "maxLength":
            return f"must have at most {value} characters"
        case "minItems":
            return f"must have at least {value} items"
        case "maxItems":
            return f"must have at most {value} items"
        case "minimum":
            return f"must be at least {value}"
        case "maximum":
            return f"must be at most {value}"
        case "exclusiveMinimum":
            return f"must be greater than {value}"
        case "exclusiveMaximum":
            return f"must be less than {value}"
        case "multipleOf":
            return f"must be a multiple of {value}"
        case "uniqueItems":
            return "must not repeat items"
        case "additionalProperties":
            return "has properties this tool does not take"
        case _:
            return f"does not satisfy the schema's {keyword!r} rule"


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
