"""Redaction of secrets and truncation for audit records."""

from __future__ import annotations

import pytest

from voice_agent.tooling.redact import REDACTED, bounded, looks_secret, redact, truncate_json


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "new_password",
        "apiKey",
        "API-KEY",
        "api_key",
        "access_token",
        "clientSecret",
        "Authorization",
        "refresh-token",
        "credentials",
        "card_number",
        "cvv",
        "passphrase",
    ],
)
def test_secret_looking_keys_are_recognised(key: str) -> None:
    """Common spellings of secret fields are caught."""
    assert looks_secret(key)


@pytest.mark.parametrize("key", ["title", "priority", "idempotency_key", "user_id", "query"])
def test_ordinary_keys_are_kept(key: str) -> None:
    """Ordinary argument names are not redacted."""
    assert not looks_secret(key)


def test_redaction_reaches_nested_values_and_named_arguments() -> None:
    """Nested mappings and lists are redacted; `secret_keys` names more fields."""
    value = {"pin": "1234", "user": {"token": "t", "name": "ann"}, "items": [{"password": "p"}]}
    assert redact(value, secret_keys={"pin"}) == {
        "pin": REDACTED,
        "user": {"token": REDACTED, "name": "ann"},
        "items": [{"password": REDACTED}],
    }


def test_small_values_are_kept_and_large_ones_cut() -> None:
    """Truncation keeps small values whole and cuts large ones, saying so."""
    assert truncate_json({"a": 1}) == {"a": 1}
    cut = truncate_json("x" * 10_000, limit=100)
    assert isinstance(cut, str)
    assert len(cut) < 200
    assert "truncated" in cut
    assert bounded({"text": "y" * 10_000}, limit=50)["_truncated"].endswith("characters]")
