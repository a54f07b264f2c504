"""Redaction and truncation of what goes into audit records, logs and confirmation prompts.

Arguments named by a tool's `secret_args`, and any key that looks like a secret (password, token,
api_key, ...), are replaced by "[redacted]" at any depth. Long results are cut to a bounded size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from pydantic_core import to_jsonable_python

REDACTED = "[redacted]"
MAX_AUDIT_RESULT_CHARS = 2000
MAX_AUDIT_ERROR_CHARS = 500
MAX_AUDIT_ARGUMENTS_CHARS = 4000

# Matched against a key lower-cased with everything but letters and digits removed,
# so "API-Key", "apiKey" and "api_key" all read "apikey".
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase|code)|secret|token|apikey|accesskey|privatekey|signingkey"
    r"|authorization|credential|cookie|sessionid|bearer|cvv|cardnumber|iban|ssn|otp"
)


def looks_secret(key: str) -> bool:
    """Whether a mapping key names something that must not be recorded."""
    return _SECRET_KEY.search(re.sub(r"[^a-z0-9]", "", key.lower())) is not None


def redact(value: Any, *, secret_keys: Collection[str] = ()) -> Any:
    """A JSON-ready copy of `value` with secret-looking and listed keys redacted at any depth."""
    return _redact(to_jsonable_python(value, fallback=repr), frozenset(secret_keys))


def _redact(value: Any, secret_keys: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED
            if str(k) in secret_keys or looks_secret(str(k))
            else _redact(v, secret_keys)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, secret_keys) for v in value]
    return value


def truncate_json(value: Any, *, limit: int = MAX_AUDIT_RESULT_CHARS) -> Any:
    """`value` itself when its JSON fits in `limit` characters, else its JSON cut short."""
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) <= limit:
        return value
    return f"{text[:limit]}... [truncated, {len(text)} characters]"


def truncate_text(text: str, *, limit: int = MAX_AUDIT_ERROR_CHARS) -> str:
    """`text` cut to `limit` characters, saying so."""
    return text if len(text) <= limit else f"{text[:limit]}... [truncated]"


def bounded(arguments: dict[str, Any], *, limit: int = MAX_AUDIT_ARGUMENTS_CHARS) -> dict[str, Any]:
    """`arguments` itself when its JSON fits in `limit` characters, else that JSON cut short."""
    text = json.dumps(arguments, ensure_ascii=False, default=repr)
    if len(text) <= limit:
        return arguments
    return {"_truncated": f"{text[:limit]}... [{len(text)} characters]"}
