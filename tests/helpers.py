"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from voice_agent.settings import Settings

TEST_API_KEY = "testkey"
TEST_API_SECRET = "test-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def make_settings(**overrides: Any) -> Settings:
    """Settings that ignore any `.env` file, with test credentials unless overridden."""
    values: dict[str, Any] = {
        "livekit_url": "ws://127.0.0.1:9",
        "livekit_api_key": TEST_API_KEY,
        "livekit_api_secret": TEST_API_SECRET,
        "redis_url": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def strip_project_env(env: dict[str, str]) -> dict[str, str]:
    """A copy of `env` without this project's settings, so a child starts from defaults."""
    prefixes = ("VOICE_AGENT_", "LIVEKIT_", "REDIS_URL", "OPENAI_")
    return {k: v for k, v in env.items() if not k.startswith(prefixes)}
